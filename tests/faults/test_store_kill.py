"""kill -9 at every durable step of the run store: reopening repairs, and no completed attempt is lost.

A forked child plays the executor's part for five attempts (promote and record, in either
order, or drop and record) and SIGKILLs itself just before its K-th fsync or rename, for
every K. The parent
reopens the store (which repairs), finishes the remaining attempts the same way and checks
that the history is exactly what an uninterrupted run writes and that ``best/`` is whole.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from automodel.interfaces import COMPONENT_FILES
from automodel.store import Attempt, RunStore

pytestmark = pytest.mark.faults


@pytest.fixture
def fast_dir(tmp_path: Path) -> Iterator[Path]:
    """A folder in RAM when there is one (/dev/shm): the kill moments are the same, fsync costs nothing."""
    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK)):
        yield tmp_path
        return
    path = Path(tempfile.mkdtemp(dir=shm, prefix="automodel-store-kill-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


VALS = [0.5, 0.4, 0.7, 0.6, 0.8]
CLEAN = [
    (1, "improved", 0.5),
    (2, "discarded", 0.4),
    (3, "improved", 0.7),
    (4, "discarded", 0.6),
    (5, "improved", 0.8),
]


def _attempt(store: RunStore, val: float, record_first: bool) -> None:
    """What automodel/roles/_executor.py does with one finished candidate."""
    iteration = store.next_iteration()
    work = store.iteration_dir(iteration)
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    for name in COMPONENT_FILES.values():
        (work / name).write_text(f"# {name} {iteration}\n")
    (work / "metrics.json").write_text(json.dumps({"val_accuracy": val}))
    (work / "checkpoint.pt").write_bytes(f"weights {iteration}".encode())
    (work / "candidate.json").write_text(
        json.dumps({"target": "analyst", "change": f"c{iteration}", "knobs": {}})
    )
    best = store.best_val_accuracy()
    improved = best is None or val > best
    attempt = Attempt(iteration=iteration, target="analyst", change=f"c{iteration}",
                      status="improved" if improved else "discarded", val_accuracy=val,
                      best_val_accuracy=val if improved else best)  # fmt: skip
    if record_first:  # the order of automodel/roles/_executor.py on main after the sandbox merge
        store.record(attempt)
    if improved:
        store.promote(iteration)
    else:
        store.drop_checkpoint(iteration)
    if not record_first:
        store.record(attempt)


def _finish(root: Path, record_first: bool) -> RunStore:
    store = RunStore(root)
    for val in VALS[len(store.history()) :]:
        _attempt(store, val, record_first)
    return store


def _child(root: Path, kill_at: int, record_first: bool) -> None:
    """Run the attempts, dying just before the ``kill_at``-th fsync or rename."""
    count = {"n": 0}
    real_fsync, real_replace = os.fsync, os.replace

    def step() -> None:
        count["n"] += 1
        if count["n"] == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    def fsync(fd: int) -> None:
        step()
        real_fsync(fd)

    def replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        step()
        real_replace(src, dst)

    os.fsync, os.replace = fsync, replace  # this forked child only
    _finish(root, record_first)
    os._exit(0 if count["n"] < kill_at else 3)


def _run_child(root: Path, kill_at: int, record_first: bool) -> int:
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child never returns
        try:
            _child(root, kill_at, record_first)
        finally:
            os._exit(4)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


@pytest.mark.parametrize("record_first", [False, True], ids=["promote-then-record", "record-then-promote"])
def test_kill_at_every_durable_step_loses_nothing(fast_dir: Path, record_first: bool) -> None:
    killed = 0
    for kill_at in range(1, 400):
        root = fast_dir / f"k{kill_at}"
        code = _run_child(root, kill_at, record_first)
        assert code in (-signal.SIGKILL, 0), f"child failed with {code} at step {kill_at}"
        before = (
            [(a.iteration, a.status, a.val_accuracy) for a in RunStore(root).history()]
            if root.exists()
            else []
        )
        store = _finish(root, record_first)
        history = [(a.iteration, a.status, a.val_accuracy) for a in store.history()]
        assert history == CLEAN, f"step {kill_at}: {history}"
        assert history[: len(before)] == before
        assert (store.best_dir / "ITERATION").read_text() == "5"
        assert (store.best_dir / "checkpoint.pt").read_bytes() == b"weights 5"
        assert not store.promotion_path.exists() and not (root / "best.new").exists()
        assert not (root / "best.old").exists()
        shutil.rmtree(root)
        if code == 0:  # the child got through every step: all kill moments are covered
            break
        killed += 1
    assert killed > 40
