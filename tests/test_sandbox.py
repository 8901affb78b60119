"""Hostile candidates against each executor: contained, recorded with the right status, never scored high.

Real engines, no mocks: ``sandbox`` runs bubblewrap, ``docker`` a Docker engine (started by
``.ci/run``). A test is skipped only where its engine cannot start, and the reason is printed.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from automodel.executors import (
    ExecutorError,
    LocalExecutor,
    ValidationScorer,
    bwrap_problem,
    checkpoint_name,
    docker_problem,
    import_local_image,
    resolve_executor,
    val_predictions_name,
)
from automodel.harness import CandidateRunner
from tests.conftest import edit

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="executors read /proc (Linux)")

ATTACKS = Path(__file__).parent / "attacks"
EXECUTORS = ["local", "sandbox", "docker"]


def _skip_reason(name: str) -> str | None:
    if name == "sandbox":
        problem = bwrap_problem()
        return f"bubblewrap cannot start here: {problem}" if problem else None
    if name == "docker":
        problem = docker_problem()
        return f"no Docker engine: {problem}" if problem else None
    return None


@pytest.fixture(scope="session")
def docker_image() -> str:
    return import_local_image()


def _runner(name: str, workspace, request: pytest.FixtureRequest, **kw) -> CandidateRunner:
    reason = _skip_reason(name)
    if reason:
        print(f"SKIP {name}: {reason}")
        pytest.skip(reason)
    if name == "docker":
        request.getfixturevalue("docker_image")
    return workspace.runner(executor=name, **kw)


def _procs_with(token: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().decode(errors="ignore")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if token in cmdline and state not in ("Z", "X"):
            found.append(int(entry.name))
    return found


@pytest.fixture
def token() -> Iterator[str]:
    """A marker for processes a candidate leaves behind; any still alive are killed afterwards."""
    value = f"am-escape-{uuid.uuid4().hex}"
    yield value
    for pid in _procs_with(value):
        os.kill(pid, signal.SIGKILL)


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    server.setblocking(False)
    yield server
    server.close()


def _poll(condition: Callable[[], bool], bound_s: float) -> bool:
    """Whether ``condition`` became true within ``bound_s`` (a generous bound, not a timing assert)."""
    deadline = time.monotonic() + bound_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def _accepted(server: socket.socket) -> bool:
    try:
        conn, _ = server.accept()
    except BlockingIOError:
        return False
    conn.close()
    return True


def _attack(name: str, values: dict[str, str]) -> str:
    text = (ATTACKS / name).read_text()
    for key, value in values.items():
        text = text.replace(f"@{key}@", value)
    return text


@pytest.mark.parametrize("executor", EXECUTORS)
def test_thief_is_contained_and_its_forged_score_never_recorded(
    executor, digits_workspace, reference_copy, tmp_path, token, listener, request
):
    runner = _runner(executor, digits_workspace, request, max_epochs=1)
    store = digits_workspace.store
    outside = tmp_path / "outside.txt"
    planted = store.root / "outside-run-root.txt"
    planted.unlink(missing_ok=True)  # the shared run directory: a `local` run before may have written it
    snippet = _attack("steal_and_forge.py", {
        "TEST_LABELS": str(store.private_dir / "test_labels.json"),
        "VAL_LABELS": str(store.data_dir / "val_y.npy"),
        "TEST_IMAGES": str(store.data_dir / "test_x.npy"),
        "RUN_ROOT": str(store.root),
        "OUTSIDE": str(outside),
        "PORT": str(listener.getsockname()[1]),
        "TOKEN": token,
    })
    with open(reference_copy / "data.py", "a") as f:
        f.write("\n" + snippet)
    events: list[dict] = []
    result = runner.train(reference_copy, tmp_path / "it", time_budget_s=300, on_event=events.append)
    log = result.log_path.read_text() if result.log_path else ""
    succeeded = [line for line in log.splitlines() if "SUCCEEDED" in line]
    print(f"{executor}: {len(succeeded)} attacks succeeded: {succeeded}")
    reads = [line for line in succeeded if "write_" not in line]  # writes are judged on the host, below

    # The forgeries: whatever the candidate claims, the recorded score is the scorer's.
    assert result.status == "ok", (result.error, result.log_tail[-5:])
    assert result.result is not None and result.result["scored_by"] == "orchestrator"
    labels = np.load(store.data_dir / "val_y.npy")
    assert result.result["val_accuracy"] == pytest.approx(float((labels == 0).mean()))  # all "class 0"
    assert json.loads((tmp_path / "it" / "metrics.json").read_text())["val_accuracy"] < 0.5
    assert all(e.get("val_accuracy") != 1.0 for e in events), events
    assert log.count("ATTACK ") >= 25  # every attempt ran
    if runner.executor.isolates_filesystem:
        assert reads == []
        assert not outside.exists()
        assert not planted.exists()
        assert not _accepted(listener)
        assert _procs_with(token) == []
    planted.unlink(missing_ok=True)


@pytest.mark.parametrize("executor", ["sandbox", "docker"])
def test_crash_is_recorded_and_attributed(executor, digits_workspace, reference_copy, tmp_path, request):
    runner = _runner(executor, digits_workspace, request)
    with open(reference_copy / "model.py", "a") as f:
        f.write("\n" + _attack("crash.py", {}))
    result = runner.train(reference_copy, tmp_path / "it", time_budget_s=30)
    assert result.status == "crashed"
    assert result.error is not None and result.error.component == "model"
    assert "boom from the model component" in result.error.message
    assert result.result is None and not (tmp_path / "it" / "metrics.json").exists()


@pytest.mark.parametrize("executor", ["sandbox", "docker"])
def test_hang_times_out_and_no_child_survives(executor, digits_workspace, reference_copy, tmp_path, token, request):
    runner = _runner(executor, digits_workspace, request, grace_s=8)
    with open(reference_copy / "data.py", "a") as f:
        f.write("\n" + _attack("hang.py", {"TOKEN": token}))
    result = runner.train(reference_copy, tmp_path / "it", time_budget_s=1)
    assert result.status == "timeout"
    assert result.result is None
    assert _procs_with(token) == []  # the setsid child went with the sandbox


def test_plan_that_cannot_fit_one_epoch_is_infeasible(digits_workspace, reference_copy, tmp_path):
    # Building the training recipe alone outlasts the budget: the harness says so, no chance score.
    edit(reference_copy / "training.py", "def build_training(spec: TrainSpec, model: torch.nn.Module) -> TrainRecipe:\n",
         "def build_training(spec: TrainSpec, model: torch.nn.Module) -> TrainRecipe:\n"
         "    import time\n    time.sleep(3)\n")
    result = digits_workspace.runner().train(reference_copy, tmp_path / "it", time_budget_s=1)
    assert result.status == "infeasible", result.log_tail
    assert result.error is not None and result.error.error_type == "Infeasible"
    assert "One epoch needs" in result.error.message
    assert result.result is None


def test_harness_stuck_in_build_data_dies_with_its_parent(digits_workspace, reference_copy, tmp_path, token):
    with open(reference_copy / "data.py", "a") as f:
        f.write(f"\n# {token}\nimport time as _t\n_t.sleep(900)\n")
    # A parent that starts the harness through the local executor, reports the harness pid, then is killed.
    parent = textwrap.dedent(f"""
        import sys, threading
        from pathlib import Path
        from automodel.harness import CandidateRunner
        runner = CandidateRunner(Path({str(digits_workspace.store.data_dir)!r}), executor="local", device="cpu")
        threading.Thread(target=runner.train, args=(Path({str(reference_copy)!r}), Path({str(tmp_path / 'it')!r})),
                         kwargs=dict(time_budget_s=600), daemon=True).start()
        threading.Event().wait()
    """)
    proc = subprocess.Popen([sys.executable, "-c", parent], env={**os.environ, "PYTHONPATH": os.getcwd()})
    job = str(tmp_path / "it" / "job" / "job.json")
    assert _poll(lambda: bool(_procs_with(job)), 120), "the harness never started"
    proc.kill()
    proc.wait()
    # PR_SET_PDEATHSIG kills it at once; the bound only allows for a slow machine.
    assert _poll(lambda: not _procs_with(job), 30), f"the harness outlived its parent: {_procs_with(job)}"


def test_explicit_sandbox_that_cannot_start_is_an_error_and_auto_falls_back(monkeypatch, tmp_path, caplog):
    monkeypatch.setenv("PATH", str(tmp_path))  # no bwrap on this PATH
    bwrap_problem.cache_clear()
    try:
        assert "not installed" in (bwrap_problem() or "")
        with pytest.raises(ExecutorError, match="sandbox executor cannot start"):
            resolve_executor("sandbox")
        assert isinstance(resolve_executor("auto"), LocalExecutor)
        assert isinstance(resolve_executor(None), LocalExecutor)
    finally:
        bwrap_problem.cache_clear()


# -- the scorer, on files a candidate could plant ---------------------------------------------------


def _write(path: Path, array: np.ndarray) -> None:
    np.save(path, array.astype(np.float32))


def test_scorer_picks_the_best_epoch_and_variant_and_prunes_checkpoints(tmp_path):
    labels = np.array([0, 1, 2, 1])
    good = np.log(np.eye(3)[labels] * 0.9 + 0.05)
    bad = np.log(np.full((4, 3), 1 / 3))
    for epoch, variant, scores in ((1, "raw", bad), (2, "ema", good), (2, "raw", bad)):
        _write(tmp_path / val_predictions_name(epoch, variant), scores)
        (tmp_path / checkpoint_name(epoch, variant)).write_bytes(b"weights")
    scorer = ValidationScorer(tmp_path, labels, 3)
    scorer.update()
    best = scorer.best
    assert best is not None and (best.epoch, best.variant, best.accuracy) == (2, "ema", 1.0)
    assert sorted(p.name for p in tmp_path.glob("*.pt")) == [checkpoint_name(2, "ema")]
    assert scorer.take_best_checkpoint(tmp_path / "best.pt")
    metrics = scorer.metrics({"history": [{"epoch": 2, "train_loss": 0.1}], "images_per_s": 1e9}, ["a", "b", "c"])
    assert metrics is not None and metrics["val_accuracy"] == 1.0 and metrics["best_epoch"] == 2
    assert metrics["history"][1]["train_loss"] == 0.1 and metrics["history"][1]["weights"] == "ema"


def test_scorer_rejects_symlinks_wrong_shapes_and_pickles(tmp_path):
    labels = np.array([0, 1])
    secret = tmp_path / "secret.npy"
    _write(secret, np.log(np.eye(2)[labels] + 1e-3))
    out = tmp_path / "out"
    out.mkdir()
    (out / val_predictions_name(1, "raw")).symlink_to(secret)
    _write(out / val_predictions_name(2, "raw"), np.zeros((3, 2)))
    np.save(out / val_predictions_name(3, "raw"), np.array([{"x": 1}], dtype=object), allow_pickle=True)
    _write(out / val_predictions_name(4, "raw"), np.full((2, 2), np.nan))
    scorer = ValidationScorer(out, labels, 2)
    scorer.update()
    assert scorer.best is None and len(scorer.rejected) == 4
    assert scorer.metrics({}, ["a", "b"]) is None
