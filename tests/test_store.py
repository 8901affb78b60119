"""The run store: torn history lines, and promotion of best/ as one recoverable step."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from automodel.interfaces import COMPONENT_FILES
from automodel.store import Attempt, RunStore


def _candidate(store: RunStore, iteration: int, val: float) -> None:
    """What the executor leaves in iterations/N before promoting it."""
    src = store.iteration_dir(iteration)
    src.mkdir(parents=True)
    for name in COMPONENT_FILES.values():
        (src / name).write_text(f"# {name} of iteration {iteration}\n")
    (src / "metrics.json").write_text(json.dumps({"val_accuracy": val, "total_seconds": 3.5}))
    (src / "checkpoint.pt").write_bytes(f"weights {iteration}".encode())
    (src / "candidate.json").write_text(json.dumps({"iteration": iteration, "target": "model_engineer",
                                                    "change": f"change {iteration}", "knobs": {"LR": 0.1}}))  # fmt: skip


def _improved(iteration: int, val: float) -> Attempt:
    return Attempt(iteration=iteration, target="model_engineer", change=f"change {iteration}", status="improved",
                   val_accuracy=val, best_val_accuracy=val)  # fmt: skip


def _assert_consistent(root: Path, best: int | None) -> RunStore:
    store = RunStore(root)
    history = {a.iteration: a for a in store.history()}
    assert len(history) == len(store.history()), "an iteration is recorded twice"
    assert not store.promotion_path.exists()
    assert not (root / "best.new").exists() and not (root / "best.old").exists()
    if best is None:
        assert not store.best_dir.exists()
        return store
    assert (store.best_dir / "ITERATION").read_text() == str(best)
    assert history[best].status == "improved" and store.iteration_dir(best).is_dir()
    assert (store.best_dir / "checkpoint.pt").read_bytes() == f"weights {best}".encode()
    assert store.best_val_accuracy() == history[best].val_accuracy
    assert store.next_iteration() == max(history) + 1
    return store


def test_promote_then_record_is_complete(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    _candidate(store, 1, 0.5)
    store.promote(1)
    assert store.promotion_path.exists()
    store.record(_improved(1, 0.5))
    assert not store.promotion_path.exists()
    _assert_consistent(tmp_path, 1)


def test_kill_between_promotion_and_history_line_is_rolled_forward(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    _candidate(store, 1, 0.5)
    store.promote(1)
    store.record(_improved(1, 0.5))
    _candidate(store, 2, 0.7)
    store.promote(2)  # killed here: no history line 2
    reopened = _assert_consistent(tmp_path, 2)
    line = reopened.history()[-1]
    assert (line.iteration, line.change, line.knobs, line.val_accuracy) == (2, "change 2", {"LR": 0.1}, 0.7)


def test_kill_while_best_new_is_half_built_keeps_the_checkpoint(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    _candidate(store, 1, 0.5)
    store.promote(1)
    store.record(_improved(1, 0.5))
    _candidate(store, 2, 0.7)
    store.promote(2)
    # rewind to the moment the checkpoint had moved into best.new but nothing else was done
    shutil.copytree(store.best_dir, tmp_path / "best.new")
    (tmp_path / "best.new" / "ITERATION").unlink()
    (tmp_path / "best.new" / "metrics.json").unlink()
    shutil.rmtree(store.best_dir)
    _candidate_best_1(tmp_path)
    _assert_consistent(tmp_path, 2)


def _candidate_best_1(root: Path) -> None:
    best = root / "best"
    best.mkdir()
    for name in COMPONENT_FILES.values():
        (best / name).write_text("old best")
    (best / "metrics.json").write_text(json.dumps({"val_accuracy": 0.5}))
    (best / "checkpoint.pt").write_bytes(b"weights 1")
    (best / "ITERATION").write_text("1")


def test_kill_in_the_middle_of_the_swap(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    _candidate(store, 1, 0.5)
    store.promote(1)
    store.record(_improved(1, 0.5))
    _candidate(store, 2, 0.7)
    store.promote(2)
    os.replace(store.best_dir, tmp_path / "best.new")  # best.new complete, best moved aside
    _candidate_best_1(tmp_path)
    os.replace(tmp_path / "best", tmp_path / "best.old")
    _assert_consistent(tmp_path, 2)


def test_kill_after_the_history_line_does_not_write_it_twice(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    _candidate(store, 1, 0.5)
    store.promote(1)
    store.record(_improved(1, 0.5))
    store.promotion_path.write_text(json.dumps({"iteration": 1}))  # the record's removal was lost
    _assert_consistent(tmp_path, 1)


def test_promotion_of_a_vanished_iteration_is_abandoned(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    store.promotion_path.write_text(json.dumps({"iteration": 4}))
    _assert_consistent(tmp_path, None)


def test_torn_history_line_does_not_swallow_the_next(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    store.record(Attempt(iteration=1, target="architect", change="a", status="crashed"))
    with store.history_path.open("ab") as fh:
        fh.write(b'{"iteration": 2, "target": "arch')
    store.record(Attempt(iteration=2, target="architect", change="b", status="timeout"))
    assert [a.iteration for a in store.history()] == [1, 2] and store.torn_history_lines == 1
    assert store.next_iteration() == 3


def test_jsonl_side_files_and_run_json_are_durable_writes(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    store.update_run(status="running", profile={"x": 1})
    store.add_fault({"kind": "timeout"})
    store.add_summary({"iteration": 1})
    assert store.read_run() == {"status": "running", "profile": {"x": 1}}
    assert json.loads((tmp_path / "model_faults.jsonl").read_text()) == {"kind": "timeout"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model_faults.jsonl", "run.json", "summaries.jsonl"]
