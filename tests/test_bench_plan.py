"""Which jobs ``benchmarks/run_all.py`` plans and skips."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.contenders import Job
from benchmarks.datasets import BenchDataset, Prepared
from benchmarks.run_all import _tpe_pointless, plan


def _prepared(tmp: Path, name: str, chans: int, size: int) -> Prepared:
    (tmp / name / "data").mkdir(parents=True)
    (tmp / name / "data" / "meta.json").write_text(json.dumps({"in_chans": chans, "stored_size": size}))
    return Prepared(BenchDataset(name, name, name), 0, tmp / name, 0.0, "h", 10)


def test_plan_skips_finetune_off_photos_and_uses_ablations_on_orientation(tmp_path: Path) -> None:
    prepared = {("digits", 0): _prepared(tmp_path, "digits", 1, 32), ("sports", 0): _prepared(tmp_path, "sports", 3, 224),
                ("orientation", 0): _prepared(tmp_path, "orientation", 1, 32)}
    jobs, skipped = plan(["digits", "sports"], ["automodel", "finetune"], [0], 60.0, prepared, device="cpu",
                         threads=0, full=False, out_root=tmp_path)
    assert [j.name for j in jobs] == ["digits__automodel__b60__s0", "sports__automodel__b60__s0",
                                      "sports__finetune__b60__s0"]
    assert len(skipped) == 1 and skipped[0].startswith("digits/finetune")
    jobs, _ = plan(["orientation"], None, [0], 60.0, prepared, device="cpu", threads=0, full=False, out_root=tmp_path)
    assert {j.contender for j in jobs} == {"automodel", "automodel+description", "automodel-no-flip-check",
                                           "automodel+description-no-flip-check"}
    with pytest.raises(SystemExit, match="unknown contender"):
        plan(["digits"], ["random"], [0], 60.0, prepared, device="cpu", threads=0, full=False, out_root=tmp_path)


def test_tpe_is_skipped_where_random_search_ran_under_twenty_trials(tmp_path: Path) -> None:
    tpe = Job("digits", "optuna-tpe", 0, 60.0, str(tmp_path))
    assert _tpe_pointless(tpe, tmp_path) is None  # no evidence yet: run it
    (tmp_path / "digits__optuna__b60__s0.json").write_text(json.dumps({"attempts": 7}))
    reason = _tpe_pointless(tpe, tmp_path)
    assert reason is not None and "7 < 20" in reason
    (tmp_path / "digits__optuna__b60__s0.json").write_text(json.dumps({"attempts": 25}))
    assert _tpe_pointless(tpe, tmp_path) is None
    assert _tpe_pointless(Job("digits", "optuna", 0, 60.0, str(tmp_path)), tmp_path) is None


def test_run_directory_facts_flips_fixed_and_infeasible_attempts(tmp_path: Path) -> None:
    from automodel.experts import reference_source, set_knobs
    from benchmarks.contenders import grade_predictions, run_dir_facts

    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "meta.json").write_text(json.dumps({"counts": {"train": 640}}))
    for i, (hflip, steps) in enumerate(((True, 3), (True, 10), (False, 10)), start=1):
        folder = tmp_path / "iterations" / f"{i:03d}"
        folder.mkdir(parents=True)
        (folder / "data.py").write_text(set_knobs(reference_source("data"), {"HFLIP": hflip})[0])
        (folder / "metrics.json").write_text(json.dumps({"train_seconds": 5.0, "batch_size": 64,
                                                          "history": [{"epoch": 1, "steps": steps}]}))
    facts = run_dir_facts(tmp_path)
    assert facts["hflip_per_attempt"] == [True, True, False]
    assert facts["attempts_until_flips_fixed"] == 3
    assert facts["infeasible_attempts"] == 1  # 3 of 10 steps: not one full epoch
    assert facts["train_s"] == 15.0
    (tmp_path / "private").mkdir()
    (tmp_path / "private" / "test_labels.json").write_text(json.dumps({"targets": [0, 1, 2, 1]}))
    graded = grade_predictions([0, 1, 1, 1], tmp_path / "private")
    assert graded["test_correct"] == "1101" and graded["test_accuracy"] == 0.75 and graded["test_size"] == 4
