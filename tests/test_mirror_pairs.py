"""Confusion between class pairs: scored by the orchestrator, read by the Analyst to turn flips off.

The offline expert's flip rule used to come only from the description or the precomputed flip
rate (hidden with ``--no-flip-check``); these tests check the rule that comes from results.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from automodel.executors import ValidationScorer, confused_pairs, val_predictions_name
from automodel.experts import _rules, change_key
from automodel.messages import RunReport
from automodel.roles._analyst import best_report
from automodel.store import Attempt

CPU_ENV = {"device": "cpu", "cuda": False, "candidate_budget_s": 60, "pretrained": {"hub": False, "local": []}}
CURVE = [{"train_loss": 1.0 - 0.1 * i, "val_loss": 1.1 - 0.1 * i, "val_accuracy": 0.5 + 0.01 * i} for i in range(6)]


def _predictions(confusion: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Labels and predictions with exactly ``confusion[i, j]`` images of class i predicted as j."""
    labels, predicted = [], []
    for i, row in enumerate(confusion):
        for j, n in enumerate(row):
            labels += [i] * int(n)
            predicted += [j] * int(n)
    return np.array(labels), np.array(predicted)


def _mirror_confusion() -> np.ndarray:
    """8 classes of 20 images; classes (0, 4) and (3, 7) are mixed up both ways, plus 2 stray errors."""
    c = np.diag(np.full(8, 20))
    for a, b, ab, ba in ((0, 4, 8, 6), (3, 7, 5, 7)):
        c[a, a] -= ab
        c[a, b] += ab
        c[b, b] -= ba
        c[b, a] += ba
    c[1, 1] -= 1
    c[1, 2] += 1
    c[5, 5] -= 1
    c[5, 6] += 1
    return c


def test_confused_pairs_counts_unordered_pairs_from_a_hand_built_confusion() -> None:
    labels, predicted = _predictions(_mirror_confusion())
    pairs = confused_pairs(labels, predicted)
    assert pairs[0] == {"a": 0, "b": 4, "errors": 14, "share": round(14 / 28, 4), "a_as_b": 8, "b_as_a": 6,
                        "images": 40}
    assert pairs[1] == {"a": 3, "b": 7, "errors": 12, "share": round(12 / 28, 4), "a_as_b": 5, "b_as_a": 7,
                        "images": 40}
    assert [(p["a"], p["b"], p["errors"]) for p in pairs[2:]] == [(1, 2, 1), (5, 6, 1)]
    assert sum(int(p["errors"]) for p in pairs) == int((labels != predicted).sum())
    # At most `top`, most errors first; no errors at all: no pairs.
    assert [(p["a"], p["b"]) for p in confused_pairs(labels, predicted, top=1)] == [(0, 4)]
    assert confused_pairs(labels, labels) == []


def test_the_scorer_writes_the_best_epochs_confused_pairs_into_the_trusted_metrics(tmp_path: Path) -> None:
    labels, predicted = _predictions(_mirror_confusion())
    scores = np.log(np.eye(8)[predicted] * 0.9 + 0.0125).astype(np.float32)
    np.save(tmp_path / val_predictions_name(1, "raw"), scores)
    scorer = ValidationScorer(tmp_path, labels, 8)
    scorer.update()
    metrics = scorer.metrics({"history": [], "confused_pairs": [{"a": 9, "b": 9}]}, [f"c{i}" for i in range(8)])
    assert metrics is not None
    assert metrics["confused_pairs"] == confused_pairs(labels, predicted)  # ours, not what the candidate reported
    assert best_report(metrics)["confused_pairs"] == metrics["confused_pairs"]


def _analyse(report: dict[str, Any], *, hflip: bool = True, description: str = "", flip_rate: float = 0.0,
             tried: tuple[str, ...] = (), features: str = "") -> dict[str, Any]:
    data: dict[str, Any] = {"HFLIP": hflip, **({"FEATURES": features} if features else {})}
    return _rules.analyst({
        "best_report": report, "last_report": report, "tried": list(tried), "description": description,
        "best_knobs": {"data": data, "model": {"ARCH": "small_cnn", "WIDTH": 32}, "training": {"LR": 3e-3}},
        "profile": {"num_classes": 8, "hflip_change_rate": flip_rate}, "environment": CPU_ENV,
    })


def _report(confusion: np.ndarray) -> dict[str, Any]:
    labels, predicted = _predictions(confusion)
    return {"status": "improved", "epochs": CURVE, "confused_pairs": confused_pairs(labels, predicted)}


def test_analyst_turns_flips_off_from_two_way_pair_confusion_with_the_flip_check_off() -> None:
    fb = _analyse(_report(_mirror_confusion()))
    assert fb["target"] == "data_engineer" and fb["knobs"] == {"HFLIP": False}
    assert "Classes 0 and 4 are confused with each other: 14 errors" in fb["diagnosis"]
    assert "Classes 3 and 7" in fb["diagnosis"] and "Together 26 of the 28 validation errors" in fb["diagnosis"]
    assert "mirror images" in fb["diagnosis"]
    # A head on cached features trains on mirrored features too: the same rule applies there.
    assert _analyse(_report(_mirror_confusion()), features="efficientnet_lite0@224")["knobs"] == {"HFLIP": False}
    # Flips already off, or the change already tried: never proposed (again).
    assert _analyse(_report(_mirror_confusion()), hflip=False)["knobs"] != {"HFLIP": False}
    tried = (change_key("data_engineer", {"HFLIP": False}),)
    assert _analyse(_report(_mirror_confusion()), tried=tried)["knobs"] != {"HFLIP": False}
    features = _analyse(_report(_mirror_confusion()), tried=tried, features="efficientnet_lite0@224")
    assert features["knobs"] != {"HFLIP": False}


def test_analyst_leaves_flips_on_when_confusion_is_spread_out_or_one_class_absorbs_another() -> None:
    spread = np.diag(np.full(8, 20))
    for a in range(8):  # each class loses 3 images, one to each of three neighbours
        for k in (1, 2, 3):
            spread[a, a] -= 1
            spread[a, (a + k) % 8] += 1
    assert _analyse(_report(spread))["knobs"] != {"HFLIP": False}
    one_way = np.diag(np.full(8, 20))
    one_way[0, 0] -= 12
    one_way[0, 4] += 12  # class 4 absorbs class 0: a weak class, not a mirror pair
    assert _analyse(_report(one_way))["knobs"] != {"HFLIP": False}
    ring = np.diag(np.full(8, 20))
    for a in range(8):  # each class mixed up both ways with both neighbours: look-alikes, not mirror pairs
        for b in ((a + 1) % 8, (a - 1) % 8):
            ring[a, a] -= 5
            ring[a, b] += 5
    assert _analyse(_report(ring))["knobs"] != {"HFLIP": False}
    assert _analyse({"status": "improved", "epochs": CURVE})["knobs"] != {"HFLIP": False}  # no pairs (old history)


def test_analyst_turns_flips_off_when_flips_merged_every_mirror_pair_into_one_class() -> None:
    # Measured (orientation benchmark, --no-flip-check, seed 1): with flips on, each of the 4 mirror pairs was
    # merged into one of its classes: 50 of a pair's 100 val images wrong, all one way; flips stayed on for
    # the whole run (val 0.54) because the rule asked for errors both ways.
    merged = np.diag(np.full(8, 50))
    for a, b in ((0, 4), (1, 7), (6, 2), (5, 3)):  # class b predicted as a
        merged[b, b] -= 50 if a != 6 else 49
        merged[b, a] += 50 if a != 6 else 49
    merged[2, 6] += 1  # one stray error the other way
    merged[2, 2] -= 1
    fb = _analyse(_report(merged))
    assert fb["knobs"] == {"HFLIP": False} and "Classes 0 and 4 are confused with each other: 50 errors" in fb["diagnosis"]


def test_the_rate_rule_keeps_precedence_and_the_pair_rule_adds_no_duplicate() -> None:
    fb = _analyse(_report(_mirror_confusion()), flip_rate=0.9)
    assert fb["knobs"] == {"HFLIP": False} and "Mirrored images look like other classes" in fb["diagnosis"]
    assert "confused with each other" not in fb["diagnosis"]


def test_reports_and_history_lines_without_confused_pairs_still_load() -> None:
    assert RunReport(iteration=1, status="improved", target="architect", change="c").confused_pairs == []
    old = Attempt.model_validate_json('{"iteration": 1, "target": "architect", "change": "c", "status": "improved"}')
    assert old.confused_pairs == []


def test_the_analyst_prompt_explains_confused_pairs_to_llm_backends() -> None:
    from automodel.prompts import render_prompt, unfilled_placeholders

    analyst = render_prompt("analyst", description="glyphs", environment="{}")
    assert not unfilled_placeholders(analyst)
    assert '"confused_pairs"' in analyst and "mirror images" in analyst and "HFLIP" in analyst
