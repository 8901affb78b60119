"""The Ray executor on a local Ray runtime (two CPUs): concurrency, failures, live events, files."""

from __future__ import annotations

import json
import os
import signal
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from automodel.executors import ExecutionRequest, ExecutorError, RayExecutor, create_executor, list_executors
from automodel.harness import CandidateRunner
from tests.conftest import edit

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the executor reads /proc")

# A child that writes result.json the way the harness does.
_WRITE_RESULT = """
def write_result(workdir, **values):
    import json, os
    tmp = os.path.join(workdir, "result.json.tmp")
    with open(tmp, "w") as f:
        json.dump(values, f)
    os.replace(tmp, os.path.join(workdir, "result.json"))
"""


@pytest.fixture(scope="module")
def ray_runtime() -> Iterator[None]:
    """One local Ray runtime for the module: two CPUs, no GPU, quiet."""
    if ray.is_initialized():
        ray.shutdown()
    # Workers import automodel from this tree, as the driver does.
    root = str(Path(__file__).resolve().parents[1])
    env = {"PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)}
    ray.init(num_cpus=2, num_gpus=0, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": env})
    yield
    ray.shutdown()


def _request(tmp_path: Path, name: str, body: str, *, timeout_s: float = 60.0) -> ExecutionRequest:
    script = tmp_path / f"{name}.py"
    script.write_text(_WRITE_RESULT + textwrap.dedent(body))
    work = tmp_path / name
    return ExecutionRequest(argv=[sys.executable, str(script), str(work)], workdir=work, timeout_s=timeout_s)


def test_registered_and_lazy() -> None:
    assert "ray" in list_executors()
    executor = create_executor("ray", num_cpus=1, num_gpus=0.5)
    assert isinstance(executor, RayExecutor) and executor.num_gpus == 0.5
    assert executor.inner == "auto" and not executor.isolates_filesystem
    assert RayExecutor(inner="sandbox").isolates_filesystem
    with pytest.raises(ValueError, match="Valid choices: auto, docker, local, sandbox"):
        RayExecutor(inner="nope")
    with pytest.raises(ValueError, match="num_gpus"):
        RayExecutor(num_gpus=1.5)
    bad: dict[str, Any] = {"ship_files": "sometimes"}
    with pytest.raises(ValueError, match="ship_files"):
        RayExecutor(**bad)


def test_two_candidates_run_at_once(ray_runtime: None, tmp_path: Path) -> None:
    # Each waits for the other to have started: run one after the other, both would time out.
    body = """
    import os, sys, time
    workdir, me, other = sys.argv[1], sys.argv[2], sys.argv[3]
    barrier = os.path.dirname(workdir)
    started = time.time()
    open(os.path.join(barrier, me + ".started"), "w").close()
    for _ in range(3000):  # up to 150 s: a loaded machine starts workers slowly
        if os.path.exists(os.path.join(barrier, other + ".started")):
            break
        time.sleep(0.05)
    else:
        sys.exit("the other candidate never started")
    write_result(workdir, started=started, ended=time.time(), threads=os.environ.get("OMP_NUM_THREADS"))
    """
    requests = []
    for me, other in (("a", "b"), ("b", "a")):
        r = _request(tmp_path, me, body, timeout_s=240)
        requests.append(r.model_copy(update={"argv": [*r.argv, me, other]}))
    results = RayExecutor(num_cpus=1, inner="local").run_many(requests)
    assert [r.status for r in results] == ["ok", "ok"], [r.log_tail for r in results]
    a, b = (r.result or {} for r in results)
    assert a["started"] < b["ended"] and b["started"] < a["ended"]  # the intervals overlap
    assert a["threads"] == "1"  # Ray gives each one-CPU task one thread


def test_crash_and_timeout_do_not_disturb_the_others(ray_runtime: None, tmp_path: Path) -> None:
    crash = _request(tmp_path, "crash", """
    import sys
    print("about to fail", flush=True)
    raise ValueError("boom in the candidate")
    """)
    hang = _request(tmp_path, "hang", """
    import os, subprocess, sys, time
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    with open(os.path.join(sys.argv[1], "pids.json"), "w") as f:
        f.write("[%d, %d]" % (os.getpid(), child.pid))
    time.sleep(600)
    """, timeout_s=3)
    fine = _request(tmp_path, "fine", """
    import sys
    print("@@AM {\\"event\\": \\"epoch\\", \\"epoch\\": 1}", flush=True)
    write_result(sys.argv[1], val_accuracy=0.9)
    """)
    events: list[tuple[int, dict[str, Any]]] = []
    executor = RayExecutor(num_cpus=1, inner="local", inner_options={"kill_grace_s": 1.0})
    results = executor.run_many([crash, hang, fine], on_event=lambda i, e: events.append((i, e)))
    assert [r.status for r in results] == ["crashed", "timeout", "ok"]
    assert results[0].error is not None and results[0].error.error_type == "ValueError"
    assert "boom in the candidate" in results[0].error.message
    assert results[1].error is not None and results[1].error.error_type == "Timeout"
    assert results[2].result == {"val_accuracy": 0.9}
    assert (2, {"event": "epoch", "epoch": 1}) in events and results[2].events == [{"event": "epoch", "epoch": 1}]
    # The timed-out candidate's whole process group is gone.
    for pid in json.loads((tmp_path / "hang" / "pids.json").read_text()):
        assert not _alive(pid), f"pid {pid} of the timed-out candidate is still running"
    assert (tmp_path / "crash" / "log.txt").read_text().startswith("about to fail")


def test_ctrl_c_cancels_the_tasks_and_their_children(ray_runtime: None, tmp_path: Path) -> None:
    body = """
    import os, signal, sys, time
    t0 = time.monotonic()
    def stopped(signum, frame):
        with open(os.path.join(sys.argv[1], "stopped_after_s"), "w") as f:
            f.write(str(time.monotonic() - t0))
        sys.exit(1)
    signal.signal(signal.SIGTERM, stopped)
    with open(os.path.join(sys.argv[1], "pid"), "w") as f:
        f.write(str(os.getpid()))
    print('@@AM {"event": "started"}', flush=True)
    time.sleep(600)
    """
    timeout_s = 120.0
    requests = [_request(tmp_path, f"s{i}", body, timeout_s=timeout_s) for i in range(2)]
    started: set[int] = set()

    def interrupt_when_both_started(index: int, event: dict[str, Any]) -> None:
        started.add(index)
        if started == {0, 1}:
            os.kill(os.getpid(), signal.SIGINT)  # what Ctrl-C does to the waiting main thread

    executor = RayExecutor(inner="local", inner_options={"kill_grace_s": 1.0})
    with pytest.raises(KeyboardInterrupt):
        executor.run_many(requests, on_event=interrupt_when_both_started)
    for i in range(2):
        # The workers stop their children after the caller has moved on: wait for that, bounded.
        stopped = tmp_path / f"s{i}" / "stopped_after_s"
        for _ in range(600):
            if stopped.exists() and not _alive(int((tmp_path / f"s{i}" / "pid").read_text())):
                break
            time.sleep(0.1)
        assert stopped.exists(), f"candidate {i} was not stopped"
        assert float(stopped.read_text()) < timeout_s  # by the cancellation, not by its timeout
        assert not _alive(int((tmp_path / f"s{i}" / "pid").read_text()))


def test_events_arrive_while_the_candidate_runs(ray_runtime: None, tmp_path: Path) -> None:
    # The child waits for an acknowledgement that only the live callback writes.
    req = _request(tmp_path, "live", """
    import os, sys, time
    ack = os.path.join(sys.argv[1], "ack")
    print('@@AM {"event": "progress", "step": 1}', flush=True)
    for _ in range(3000):  # up to 150 s: a loaded machine starts workers slowly
        if os.path.exists(ack):
            break
        time.sleep(0.05)
    else:
        sys.exit("no acknowledgement: events are not live")
    write_result(sys.argv[1], acknowledged=True)
    """, timeout_s=240)
    lines: list[str] = []

    def acknowledge(event: dict[str, Any]) -> None:
        (req.workdir / "ack").touch()

    result = RayExecutor(inner="local").run(req, on_event=acknowledge, on_line=lines.append)
    assert result.status == "ok", result.log_tail
    assert result.result == {"acknowledged": True}
    assert lines == ['@@AM {"event": "progress", "step": 1}']


def test_files_come_back_in_the_return_value(ray_runtime: None, tmp_path: Path) -> None:
    # ship_files="always": the worker works on its own copy, sends every file back in the
    # task's return value and deletes its copy, so what is here afterwards was shipped.
    req = _request(tmp_path, "ship", """
    import os, sys
    work = sys.argv[1]
    assert open(os.path.join(work, "job.json")).read() == '{"x": 1}'
    os.makedirs(os.path.join(work, "sub"), exist_ok=True)
    with open(os.path.join(work, "sub", "checkpoint.pt"), "wb") as f:
        f.write(bytes(range(256)) * 64)
    with open(os.path.join(work, "big.bin"), "wb") as f:
        f.write(b"x" * 3_000_000)
    print("trained", flush=True)
    write_result(work, val_accuracy=0.5)
    """)
    req.workdir.mkdir(parents=True)
    (req.workdir / "job.json").write_text('{"x": 1}')
    result = RayExecutor(inner="local", ship_files="always", max_ship_mb=1.0).run(req)
    assert result.status == "ok", result.log_tail
    assert (req.workdir / "sub" / "checkpoint.pt").read_bytes() == bytes(range(256)) * 64
    assert json.loads((req.workdir / "result.json").read_text()) == {"val_accuracy": 0.5}
    assert "trained" in (req.workdir / "log.txt").read_text()
    # Over max_ship_mb: not shipped, so kept on the worker (here: the same disk), not lost.
    assert (req.workdir / "big.bin").stat().st_size == 3_000_000
    assert not list(req.workdir.glob(".automodel-ray-*"))


def test_a_worker_that_does_not_see_the_workdir_gets_the_files(
    ray_runtime: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Same host, but the marker is never written: the worker cannot tell this from another
    # node without the caller's filesystem, asks for the inputs, and ships the outputs back.
    monkeypatch.setattr(RayExecutor, "_mark", staticmethod(lambda workdir: workdir / ".automodel-ray-absent"))
    req = _request(tmp_path, "remote", """
    import os, sys
    work = sys.argv[1]
    with open(os.path.join(work, "job.json")) as f:
        job = f.read()
    with open(os.path.join(work, "out.bin"), "wb") as f:
        f.write(b"weights")
    write_result(work, job=job)
    """)
    req.workdir.mkdir(parents=True)
    (req.workdir / "job.json").write_text('{"y": 2}')
    executor = RayExecutor(inner="local")
    result = executor.run(req)
    assert result.status == "ok", result.log_tail
    assert result.result == {"job": '{"y": 2}'}
    assert (req.workdir / "out.bin").read_bytes() == b"weights"
    assert executor._unshared_seen  # later tasks send the files at once


def test_bundles_stay_inside_the_request_dirs(tmp_path: Path) -> None:
    from automodel.executors._shipping import apply_bundle, make_bundle, snapshot

    src = tmp_path / "src"
    (src / "a").mkdir(parents=True)
    (src / "a" / "m.json").write_text("{}")
    (src / "link").symlink_to(tmp_path)
    (src / ".automodel-ray-1").write_text("marker")
    bundle = make_bundle([src], limit_bytes=1 << 20, links=False)
    assert bundle == {"files": {str(src / "a" / "m.json"): b"{}"}, "links": {}, "left": []}
    assert make_bundle([src], limit_bytes=1 << 20, links=True)["links"] == {str(src / "link"): str(tmp_path)}
    # Only what changed since a snapshot travels back.
    before = snapshot([src])
    (src / "new.txt").write_text("new")
    assert make_bundle([src], limit_bytes=1 << 20, links=False, unchanged=before)["files"] == {
        str(src / "new.txt"): b"new"
    }
    dst = tmp_path / "dst"
    hard = tmp_path / "cache.npy"
    hard.write_bytes(b"cached data")
    dst.mkdir()
    os.link(hard, dst / "data.npy")  # the job dir links the data cache in: it must not be written through
    written = apply_bundle([dst], {"files": {
        str(dst / "a" / "m.json"): b"{}",
        str(dst / "data.npy"): b"new",
        str(tmp_path / "escape.txt"): b"no",
        str(dst / ".." / "escape2.txt"): b"no",
    }})
    assert sorted(written) == [str(dst / "a" / "m.json"), str(dst / "data.npy")]
    assert (dst / "a" / "m.json").read_text() == "{}" and (dst / "data.npy").read_bytes() == b"new"
    assert hard.read_bytes() == b"cached data"
    assert not (tmp_path / "escape.txt").exists() and not (tmp_path / "escape2.txt").exists()


def test_a_request_no_node_can_run_fails_at_once(ray_runtime: None, tmp_path: Path) -> None:
    req = _request(tmp_path, "gpu", "print('never runs')")
    with pytest.raises(ExecutorError, match="No node of the Ray cluster.*GPU=1"):
        RayExecutor(num_gpus=1, inner="local").run(req)


def test_the_harness_trains_through_ray_in_the_sandbox(
    ray_runtime: None, digits_workspace, reference_copy, tmp_path: Path
) -> None:
    # The real path: CandidateRunner's job directory, the harness, the inner executor chosen on
    # the worker (the sandbox where bubblewrap starts), the trusted scorer on the caller's side.
    edit(reference_copy / "training.py", "EPOCHS = 0", "EPOCHS = 1")
    executor = RayExecutor(num_cpus=1)
    runner = CandidateRunner(digits_workspace.store.data_dir, executor=executor, device="cpu", max_epochs=1)
    events: list[dict[str, Any]] = []
    result = runner.train(reference_copy, tmp_path / "it", time_budget_s=120, on_event=events.append)
    assert result.status == "ok", result.log_tail
    metrics = json.loads((tmp_path / "it" / "metrics.json").read_text())
    assert metrics["epochs_run"] == 1 and metrics["val_accuracy"] > 0.1  # scored here, from predictions
    assert result.result is not None and result.result["val_accuracy"] == metrics["val_accuracy"]
    assert (tmp_path / "it" / "checkpoint.pt").is_file()
    kinds = [e["event"] for e in events]
    assert "epoch" in kinds and kinds[-1] == "done"
    assert any("val_accuracy" in e for e in events if e["event"] == "epoch")  # live trusted scores


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")
