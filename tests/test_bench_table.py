"""The benchmark table from hand-made job records, and the search's fixed pieces against the reference recipe."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from automodel.experts import get_knobs, reference_source
from benchmarks.search import MIN_EPOCHS, cost_ms, fits, reference_params
from benchmarks.table import aggregate, write_table


def _rec(contender: str, seed: int, correct: str, *, dataset: str = "digits", attempts: int = 1,
         test_hash: str = "h1", **extra: Any) -> dict[str, Any]:
    return {
        "job": {"dataset": dataset, "contender": contender, "seed": seed, "budget_s": 60.0},
        "prepared": {"test_ids_hash": test_hash},
        "test_correct": correct,
        "test_accuracy": correct.count("1") / len(correct),
        "attempts": attempts,
        "clock": {"wall_s": 58.0, "cpu_s": 100.0, "over_budget_s": 0.0},
        **extra,
    }


def test_strongest_baseline_and_paired_verdicts() -> None:
    n = 40
    ref = "1" * 30 + "0" * 10          # 75%
    probe = "1" * 38 + "0" * 2         # 95%: the strongest baseline
    am_win = "1" * 40                  # +2 images over probe: a tie on 2 discordant pairs
    records = [_rec("reference", s, ref) for s in (0, 1)] + [_rec("probe", s, probe) for s in (0, 1)]
    records += [_rec("automodel", s, am_win) for s in (0, 1)]
    rows = {r["contender"]: r for r in aggregate(records)}
    assert rows["probe"]["strongest"] and not rows["reference"]["strongest"]
    am = rows["automodel"]["vs"]
    assert (am["a_only"], am["b_only"], am["seeds"]) == (4, 0, 2)  # pooled over both seeds
    assert am["p"] == pytest.approx(2 / 16)
    ref_vs = rows["reference"]["vs"]
    assert (ref_vs["a_only"], ref_vs["b_only"]) == (0, 16) and ref_vs["p"] < 0.001
    assert rows["automodel"]["k"] == 2 * n and rows["automodel"]["n"] == 2 * n
    assert rows["reference"]["std"] == 0.0


def test_unpaired_records_are_not_compared() -> None:
    records = [_rec("reference", 0, "1100"), _rec("automodel", 0, "1111", test_hash="other")]
    rows = {r["contender"]: r for r in aggregate(records)}
    assert rows["automodel"]["vs"] is None  # different test images: no paired test


def test_tpe_row_dropped_below_twenty_trials(tmp_path: Path) -> None:
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    recs = [_rec("optuna", 0, "1101", attempts=6), _rec("optuna-tpe", 0, "1101", attempts=6),
            _rec("automodel", 0, "1111", dataset="sports", error="skipped: demo")]
    for i, r in enumerate(recs):
        (jobs / f"{i}.json").write_text(json.dumps(r))
    rows = write_table(jobs, tmp_path / "table.md")
    text = (tmp_path / "table.md").read_text()
    assert "| digits | 60 | optuna | 1 |" in text
    assert "| digits | 60 | optuna-tpe |" not in text and "optuna-tpe dropped" in text
    assert "## Evaluation datasets" in text and "| sports | 60 | automodel |" in text
    assert "sports / automodel / 60 s: s0: skipped: demo" in text
    assert {r["group"] for r in rows} == {"development", "evaluation"}


def test_trial_one_is_the_reference_recipe() -> None:
    """The enqueued first trial sets every searched knob to the reference recipe's own value."""
    params = reference_params(pretrained=False)
    for component, names in (("data", ("AUGMENT", "HFLIP", "MIXUP", "ERASING", "INPUT_SIZE")),
                             ("model", ("WIDTH", "DROPOUT")),
                             ("training", ("WEIGHT_DECAY", "LABEL_SMOOTHING", "SCHEDULE", "EMA_DECAY"))):
        knobs = get_knobs(reference_source(component))
        for name in names:
            assert knobs[name] == params[name], (component, name)
    # LR 0 in the reference means "3e-3 from scratch, 1e-3 fine-tuning": the trial states it explicitly.
    assert get_knobs(reference_source("training"))["LR"] == 0.0
    assert reference_params(pretrained=False)["LR"] == 3e-3 and reference_params(pretrained=True)["LR"] == 1e-3


def test_cost_model_filters_what_cannot_train_three_epochs() -> None:
    small = {"data": {"INPUT_SIZE": 32}, "model": {"WIDTH": 32}}
    wide = {"data": {"INPUT_SIZE": 64}, "model": {"WIDTH": 64}}
    c_small = cost_ms(small, 32, 1, cuda=False, weights=True)
    c_wide = cost_ms(wide, 32, 1, cuda=False, weights=True)
    assert c_small == pytest.approx(1.6 + 0.0022 * 32 * 32)
    assert c_wide == pytest.approx((1.6 + 0.0022 * 64 * 64) * 4)  # 42 ms: the old search's 0-epoch trials
    assert fits(c_small, 1151, 20.0, 1.0) and not fits(c_wide, 1151, 20.0, 1.0)
    assert fits(c_wide, 1151, MIN_EPOCHS * 1151 * c_wide / 1000 / 0.9 + 1, 1.0)
    # Photos with local weights: the reference's auto choice is EfficientNet-Lite0.
    assert cost_ms({"data": {"INPUT_SIZE": 128}, "model": {"WIDTH": 0}}, 250, 3, cuda=False, weights=True) == 40.0
