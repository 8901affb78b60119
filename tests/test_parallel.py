"""Executor.run_many with the local executor: at once, in order, GPU slots, failures kept apart, Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from automodel.executors import ExecutionRequest, ExecutorError, LocalExecutor

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="LocalExecutor reads /proc")

_WRITE_RESULT = """
import json, os, sys, time
work = sys.argv[1]
def write_result(**values):
    tmp = os.path.join(work, "result.json.tmp")
    with open(tmp, "w") as f:
        json.dump(values, f)
    os.replace(tmp, os.path.join(work, "result.json"))
"""


def _request(tmp_path: Path, name: str, body: str, *, timeout_s: float = 240.0, **env: str) -> ExecutionRequest:
    script = tmp_path / f"{name}.py"
    script.write_text(_WRITE_RESULT + textwrap.dedent(body))
    return ExecutionRequest(
        argv=[sys.executable, str(script), str(tmp_path / name)], workdir=tmp_path / name, timeout_s=timeout_s, env=env
    )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    return state not in ("Z", "X")


_BARRIER = """
barrier = os.path.dirname(work)
open(os.path.join(barrier, sys.argv[2] + ".started"), "w").close()
for _ in range(3000):  # up to 150 s on a loaded machine
    if os.path.exists(os.path.join(barrier, sys.argv[3] + ".started")):
        break
    time.sleep(0.05)
else:
    sys.exit("the other candidate never started")
"""


def test_run_many_runs_at_once_and_keeps_order(tmp_path: Path) -> None:
    body = _BARRIER + 'print("@@AM " + json.dumps({"event": "epoch", "me": sys.argv[2]}), flush=True)\nwrite_result(me=sys.argv[2])\n'
    requests = []
    for me, other in (("a", "b"), ("b", "a")):
        r = _request(tmp_path, me, body)
        requests.append(r.model_copy(update={"argv": [*r.argv, me, other]}))
    events: list[tuple[int, dict[str, Any]]] = []
    lines: list[tuple[int, str]] = []
    results = LocalExecutor().run_many(
        requests, on_event=lambda i, e: events.append((i, e)), on_line=lambda i, line: lines.append((i, line))
    )
    assert [r.result for r in results] == [{"me": "a"}, {"me": "b"}]
    assert sorted(events, key=lambda x: x[0]) == [(0, {"event": "epoch", "me": "a"}), (1, {"event": "epoch", "me": "b"})]
    assert sorted(i for i, _ in lines) == [0, 1]


def test_a_crash_does_not_disturb_the_others(tmp_path: Path) -> None:
    crash = _request(tmp_path, "crash", "raise RuntimeError('candidate bug')\n")
    fine = _request(tmp_path, "fine", "time.sleep(0.5)\nwrite_result(ok=True)\n")
    results = LocalExecutor().run_many([crash, fine], max_parallel=2)
    assert [r.status for r in results] == ["crashed", "ok"]
    assert results[0].error is not None and "candidate bug" in results[0].error.message


def test_gpu_slots_pin_each_candidate_and_cap_concurrency(tmp_path: Path) -> None:
    # One slot for three candidates: each sees that GPU, and never two at once
    # (a second one would find the lock file of the first).
    body = """
    lock = os.path.join(os.path.dirname(work), "gpu3.lock")
    fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    time.sleep(0.2)
    os.close(fd)
    os.unlink(lock)
    write_result(cuda=os.environ.get("CUDA_VISIBLE_DEVICES"))
    """
    requests = [_request(tmp_path, f"c{i}", body, CUDA_VISIBLE_DEVICES="9") for i in range(3)]
    results = LocalExecutor().run_many(requests, gpus=["3"])
    assert [r.status for r in results] == ["ok"] * 3, [r.log_tail for r in results]
    assert [r.result for r in results] == [{"cuda": "3"}] * 3

    hidden = LocalExecutor().run_many([_request(tmp_path, "cpu", "write_result(cuda=os.environ['CUDA_VISIBLE_DEVICES'])\n")], gpus=[])
    assert hidden[0].result == {"cuda": ""}


def test_ctrl_c_ends_every_running_candidate(tmp_path: Path) -> None:
    # Each child notes when it was told to stop: before its own timeout means the interrupt did it.
    body = """
    import signal
    t0 = time.monotonic()
    def stopped(signum, frame):
        with open(os.path.join(work, "stopped_after_s"), "w") as f:
            f.write(str(time.monotonic() - t0))
        sys.exit(1)
    signal.signal(signal.SIGTERM, stopped)
    with open(os.path.join(work, "pid"), "w") as f:
        f.write(str(os.getpid()))
    print('@@AM {"event": "started"}', flush=True)
    time.sleep(600)
    """
    timeout_s = 30.0
    requests = [_request(tmp_path, f"s{i}", body, timeout_s=timeout_s) for i in range(2)]
    started: set[int] = set()

    def interrupt_when_both_started(index: int, event: dict[str, Any]) -> None:
        started.add(index)
        if started == {0, 1}:
            os.kill(os.getpid(), signal.SIGINT)  # what Ctrl-C does to the waiting main thread

    with pytest.raises(KeyboardInterrupt):
        LocalExecutor(kill_grace_s=1.0).run_many(requests, on_event=interrupt_when_both_started)
    for i in range(2):
        pid = int((tmp_path / f"s{i}" / "pid").read_text())
        assert not _alive(pid), f"candidate {i} (pid {pid}) outlived the interrupt"
        assert float((tmp_path / f"s{i}" / "stopped_after_s").read_text()) < timeout_s


def test_executor_errors_surface_after_the_others_end(tmp_path: Path) -> None:
    fine = _request(tmp_path, "fine", "write_result(ok=True)\n")
    missing = ExecutionRequest(argv=["/nonexistent/program"], workdir=tmp_path / "missing", timeout_s=5)
    with pytest.raises(ExecutorError, match="Cannot start"):
        LocalExecutor().run_many([missing, fine])
    assert json.loads((tmp_path / "fine" / "result.json").read_text()) == {"ok": True}
    with pytest.raises(ValueError, match="max_parallel"):
        LocalExecutor().run_many([fine], max_parallel=0)
    assert LocalExecutor().run_many([]) == []
