"""Tests for the local executor, with small Python scripts as children."""

from __future__ import annotations

import json
import os
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from automodel.executors import (
    ExecutionRequest,
    ExecutionResult,
    Executor,
    ExecutorError,
    LocalExecutor,
    create_executor,
    list_executors,
)

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="LocalExecutor reads /proc")


def _alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def _run(
    tmp_path: Path, body: str, *, timeout_s: float = 20.0, memory_limit_mb: int | None = None, **kw: Any
) -> ExecutionResult:
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(body))
    request = ExecutionRequest(
        argv=[sys.executable, str(script), str(tmp_path / "work")],
        workdir=tmp_path / "work",
        timeout_s=timeout_s,
        memory_limit_mb=memory_limit_mb,
        env={"AM_TEST_SECRET": "s3cret"},
    )
    return LocalExecutor(kill_grace_s=1.0).run(request, **kw)


def test_registry_lists_and_creates_local() -> None:
    assert "local" in list_executors()
    executor = create_executor("local", kill_grace_s=0.5)
    assert isinstance(executor, LocalExecutor) and isinstance(executor, Executor)
    with pytest.raises(ValueError, match="Valid choices: .*local"):
        create_executor("nope")


def test_ok_run_parses_events_live_and_reads_result(tmp_path: Path) -> None:
    seen: list[tuple[float, dict[str, Any]]] = []
    lines: list[str] = []
    result = _run(
        tmp_path,
        """
        import json, os, sys, time
        workdir = sys.argv[1]
        print("starting", flush=True)
        for epoch in (1, 2):
            print("@@AM " + json.dumps({"event": "epoch", "epoch": epoch, "val_accuracy": 0.4 * epoch}))
            time.sleep(0.3)
        print("@@AM not json")
        assert os.environ["PYTHONUNBUFFERED"] == "1" and os.environ["AM_TEST_SECRET"] == "s3cret"
        with open(os.path.join(workdir, "result.json.tmp"), "w") as f:
            json.dump({"val_accuracy": 0.8}, f)
        os.replace(os.path.join(workdir, "result.json.tmp"), os.path.join(workdir, "result.json"))
        """,
        on_event=lambda e: seen.append((time.monotonic(), e)),
        on_line=lines.append,
    )
    finished = time.monotonic()
    assert result.status == "ok" and result.ok, result
    assert result.returncode == 0 and result.error is None
    assert result.result == {"val_accuracy": 0.8}
    assert [e["epoch"] for e in result.events] == [1, 2]
    assert [e for _, e in seen] == result.events
    assert finished - seen[0][0] > 0.25, "on_event must be called while the child runs"
    assert lines[0] == "starting" and "@@AM not json" in lines
    assert result.log_tail[-1] == "@@AM not json"
    log_text = (tmp_path / "work" / "log.txt").read_text()
    assert "starting" in log_text and "s3cret" not in log_text
    assert result.peak_rss_mb > 1


def test_crash_with_error_json_is_attributed(tmp_path: Path) -> None:
    result = _run(
        tmp_path,
        """
        import json, os, sys
        err = {"component": "model", "error_type": "RuntimeError", "message": "shape mismatch",
               "traceback": "Traceback ...", "lines": [12]}
        with open(os.path.join(sys.argv[1], "error.json"), "w") as f:
            json.dump(err, f)
        sys.exit(3)
        """,
    )
    assert result.status == "crashed" and result.returncode == 3
    assert result.error is not None
    assert (result.error.component, result.error.error_type, result.error.message) == (
        "model",
        "RuntimeError",
        "shape mismatch",
    )
    assert result.error.lines == [12]


def test_memory_error_in_error_json_is_oom(tmp_path: Path) -> None:
    result = _run(
        tmp_path,
        """
        import json, os, sys
        with open(os.path.join(sys.argv[1], "error.json"), "w") as f:
            json.dump({"component": "training", "error_type": "MemoryError", "message": ""}, f)
        sys.exit(3)
        """,
    )
    assert result.status == "oom" and result.error is not None and result.error.component == "training"


def test_crash_without_error_json_uses_output_tail(tmp_path: Path) -> None:
    result = _run(
        tmp_path,
        """
        print("loading")
        raise ValueError("bad thing happened")
        """,
    )
    assert result.status == "crashed" and result.returncode == 1
    assert result.error is not None
    assert result.error.component == "harness"
    assert result.error.error_type == "ValueError"
    assert "bad thing happened" in result.error.message
    assert "Traceback" in result.error.traceback
    assert result.result is None


def test_stale_result_from_previous_run_is_ignored(tmp_path: Path) -> None:
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "result.json").write_text(json.dumps({"val_accuracy": 1.0}))
    result = _run(tmp_path, "pass\n")
    assert result.status == "crashed" and result.result is None
    assert result.error is not None and "wrote no valid result.json" in result.error.message


def test_timeout_ends_child_and_grandchild(tmp_path: Path) -> None:
    pid_file = tmp_path / "pids.txt"
    started = time.monotonic()
    result = _run(
        tmp_path,
        f"""
        import os, signal, subprocess, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # forces the SIGKILL path
        grandchild = subprocess.Popen(["sleep", "1000"])
        moved = subprocess.Popen(["sleep", "1000"], preexec_fn=os.setpgrp)  # own group, same session
        with open({str(pid_file)!r}, "w") as f:
            f.write(f"{{os.getpid()}} {{grandchild.pid}} {{moved.pid}}")
        print("hanging", flush=True)
        time.sleep(1000)
        """,
        timeout_s=1.0,
    )
    elapsed = time.monotonic() - started
    assert result.status == "timeout"
    assert elapsed < 1.0 + 1.0 + 3.0, elapsed
    assert result.error is not None and result.error.error_type == "Timeout"
    assert "hanging" in result.log_tail
    pids = [int(p) for p in pid_file.read_text().split()]
    assert len(pids) == 3
    assert not any(_alive(pid) for pid in pids), pids


def test_memory_limit_kills_session_as_oom(tmp_path: Path) -> None:
    pid_file = tmp_path / "pids.txt"
    result = _run(
        tmp_path,
        f"""
        import os, subprocess, time
        helper = subprocess.Popen(["sleep", "1000"])
        with open({str(pid_file)!r}, "w") as f:
            f.write(f"{{os.getpid()}} {{helper.pid}}")
        chunks = []
        for _ in range(200):  # up to 10 GB if nothing stops it
            chunk = bytearray(50 * 1024 * 1024)
            for i in range(0, len(chunk), 4096):
                chunk[i] = 1
            chunks.append(chunk)
            time.sleep(0.02)
        """,
        memory_limit_mb=300,
        timeout_s=25.0,
    )
    assert result.status == "oom", result
    assert result.peak_rss_mb > 300
    assert result.error is not None and result.error.error_type == "MemoryLimitExceeded"
    assert not any(_alive(int(pid)) for pid in pid_file.read_text().split())


def test_leftover_background_process_is_ended_after_normal_exit(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid.txt"
    result = _run(
        tmp_path,
        f"""
        import subprocess
        p = subprocess.Popen(["sleep", "1000"])
        open({str(pid_file)!r}, "w").write(str(p.pid))
        raise SystemExit(5)
        """,
    )
    assert result.status == "crashed" and result.returncode == 5
    assert not _alive(int(pid_file.read_text()))


def test_missing_program_raises_executor_error(tmp_path: Path) -> None:
    request = ExecutionRequest(argv=["/nonexistent/program"], workdir=tmp_path / "w", timeout_s=5)
    with pytest.raises(ExecutorError, match="Cannot start '/nonexistent/program'"):
        LocalExecutor().run(request)


def test_unwritable_workdir_raises_executor_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    request = ExecutionRequest(argv=[sys.executable, "-c", "pass"], workdir=blocker / "sub", timeout_s=5)
    with pytest.raises(ExecutorError, match="Cannot use workdir"):
        LocalExecutor().run(request)
