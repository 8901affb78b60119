"""Run a candidate as a local child process with a time and memory budget."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from typing import IO

import structlog

from ._base import EventCallback, Executor, LineCallback, register_executor
from ._models import ComponentError, ExecutionRequest, ExecutionResult, ExecutionStatus, ExecutorError
from ._output import OutputReader, crash_error, read_component_error, read_json_dict
from ._procs import cgroup_oom_kills, end_session, session_pids, session_rss_mb
from ._protocol import ERROR_FILE, INFEASIBLE_ERROR_TYPE, PARENT_ENV, RESULT_FILE

__all__ = ["OOM_ERROR_TYPES", "LocalExecutor"]

OOM_ERROR_TYPES = frozenset({"MemoryError", "OutOfMemoryError", "torch.cuda.OutOfMemoryError"})
"""``error_type`` values in ``error.json`` that mean the run ran out of (host or GPU) memory."""

log = structlog.get_logger(__name__)


@register_executor("local")
class LocalExecutor(Executor):
    """Runs the child in its own session on this machine (Linux: it reads ``/proc``).

    The whole session is supervised: its summed RSS against ``memory_limit_mb``, the
    wall clock against ``timeout_s``, and on any ending every process left in the
    session is terminated. A descendant that calls ``setsid`` leaves the session and
    is not tracked. This is not a security boundary: the child sees the whole filesystem
    and the network; use the ``sandbox`` or ``docker`` executor for code that must be contained.

    Args:
        poll_interval_s: how often memory and time are checked.
        kill_grace_s: time between SIGTERM and SIGKILL when ending the session.
        tail_lines: how many output lines the result keeps.
    """

    def __init__(
        self, *, poll_interval_s: float = 0.1, kill_grace_s: float = 3.0, tail_lines: int = 80
    ) -> None:
        if poll_interval_s <= 0 or kill_grace_s < 0 or tail_lines < 1:
            raise ValueError(
                "LocalExecutor needs poll_interval_s > 0, kill_grace_s >= 0 and tail_lines >= 1; got "
                f"{poll_interval_s}, {kill_grace_s}, {tail_lines}."
            )
        self.poll_interval_s = poll_interval_s
        self.kill_grace_s = kill_grace_s
        self.tail_lines = tail_lines

    def run(
        self,
        request: ExecutionRequest,
        on_event: EventCallback | None = None,
        on_line: LineCallback | None = None,
    ) -> ExecutionResult:
        """Run ``request.argv`` and return how it ended; see :class:`Executor`.

        Raises:
            ExecutorError: the workdir is not writable or the program cannot be started.
        """
        log_file = self._prepare_workdir(request)
        with log_file:
            oom_kills_before = cgroup_oom_kills()
            started = time.monotonic()
            proc = self._start(request, log_file)
            log.info(
                "executor_started",
                executor=self.name,
                pid=proc.pid,
                argv=request.argv,
                workdir=str(request.workdir),
            )
            assert proc.stdout is not None  # stdout=PIPE
            reader = OutputReader(
                proc.stdout.fileno(), log_file, tail_lines=self.tail_lines, on_event=on_event, on_line=on_line
            )
            reader.start()
            forced: ExecutionStatus | None = None
            peak_mb = 0.0
            try:
                forced, peak_mb = self._supervise(proc, request, started)
            finally:
                # Whatever happened (even KeyboardInterrupt), nothing of this run outlives it.
                self._end(proc)
                reader.join(timeout=2.0)
                if reader.is_alive():  # an escaped (setsid) descendant still holds the pipe
                    log.warning("executor_pipe_held_open", pid=proc.pid)
                    reader.stop()
                    reader.join()
                proc.stdout.close()
            duration = time.monotonic() - started
        result = self._collect(request, proc, forced, peak_mb, duration, reader, oom_kills_before)
        log.info(
            "executor_finished",
            executor=self.name,
            pid=proc.pid,
            status=result.status,
            returncode=result.returncode,
            duration_s=round(duration, 2),
            peak_rss_mb=round(peak_mb, 1),
        )
        return result

    def _prepare_workdir(self, request: ExecutionRequest) -> IO[bytes]:
        try:
            request.workdir.mkdir(parents=True, exist_ok=True)
            for stale in (RESULT_FILE, ERROR_FILE):
                (request.output_dir / stale).unlink(missing_ok=True)
            return request.log_path.open("wb")
        except OSError as exc:
            raise ExecutorError(
                f"Cannot use workdir {request.workdir} ({exc}). It must be a writable directory (or creatable); "
                "pass another ExecutionRequest.workdir or fix its permissions."
            ) from exc

    def _command(self, request: ExecutionRequest) -> tuple[list[str], dict[str, str]]:
        """The argv and environment that start the child (sandboxes wrap them)."""
        return list(request.argv), {**os.environ, **request.env, "PYTHONUNBUFFERED": "1", PARENT_ENV: str(os.getpid())}

    def _members(self, proc: subprocess.Popen[bytes]) -> list[int]:
        """Pids of every live process of this run (for memory and the final clean-up)."""
        return session_pids(proc.pid)

    def _rss_mb(self, proc: subprocess.Popen[bytes]) -> float:
        return session_rss_mb(proc.pid)

    def _kill_all(self, proc: subprocess.Popen[bytes]) -> list[int]:
        """End every process of the run; returns the pids that were alive."""
        return end_session(proc.pid, grace_s=self.kill_grace_s)

    def _start(self, request: ExecutionRequest, log_file: IO[bytes]) -> subprocess.Popen[bytes]:
        argv, env = self._command(request)
        try:
            return subprocess.Popen(
                argv,
                cwd=request.cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:
            log_file.write(f"executor: could not start {request.argv[0]!r}: {exc}\n".encode())
            raise ExecutorError(
                f"Cannot start {request.argv[0]!r} ({exc.strerror or exc}). ExecutionRequest.argv[0] must be an "
                "executable path or a program on PATH (for Python use sys.executable)"
                + (f", and cwd {request.cwd} must exist." if request.cwd else ".")
            ) from exc

    def _supervise(
        self, proc: subprocess.Popen[bytes], request: ExecutionRequest, started: float
    ) -> tuple[ExecutionStatus | None, float]:
        """Wait for the child, enforcing the budget; returns (status forced by us, peak RSS in MiB)."""
        peak_mb = 0.0
        limit = request.memory_limit_mb
        while True:
            peak_mb = max(peak_mb, self._reap(proc))
            if proc.returncode is not None:
                return None, peak_mb
            rss_mb = self._rss_mb(proc)
            peak_mb = max(peak_mb, rss_mb)
            if limit is not None and rss_mb > limit:
                log.warning("executor_memory_limit", pid=proc.pid, rss_mb=round(rss_mb, 1), limit_mb=limit)
                return "oom", peak_mb
            if time.monotonic() - started > request.timeout_s:
                log.warning("executor_timeout", pid=proc.pid, timeout_s=request.timeout_s)
                return "timeout", peak_mb
            time.sleep(self.poll_interval_s)

    @staticmethod
    def _reap(proc: subprocess.Popen[bytes]) -> float:
        """Reap the child if it exited (setting ``returncode``); returns its own peak RSS in MiB."""
        if proc.returncode is not None:
            return 0.0
        try:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        except ChildProcessError:
            proc.poll()
            return 0.0
        if pid == 0:
            return 0.0
        proc.returncode = os.waitstatus_to_exitcode(status)
        return usage.ru_maxrss / 1024  # KiB on Linux

    def _end(self, proc: subprocess.Popen[bytes]) -> None:
        """Terminate every process of the child's session and reap the child."""
        ended = self._kill_all(proc)
        if ended:
            log.info("executor_ended_session", pid=proc.pid, pids=ended)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=self.kill_grace_s + 5)
        if proc.returncode is None:
            log.error("executor_child_unreaped", pid=proc.pid)
        left = self._members(proc)
        if left:
            log.error("executor_processes_left", pid=proc.pid, pids=left)

    def _collect(
        self,
        request: ExecutionRequest,
        proc: subprocess.Popen[bytes],
        forced: ExecutionStatus | None,
        peak_mb: float,
        duration: float,
        reader: OutputReader,
        oom_kills_before: int | None,
    ) -> ExecutionResult:
        tail = list(reader.tail)
        rc = proc.returncode
        result = read_json_dict(request.output_dir / RESULT_FILE)
        error = read_component_error(request.output_dir / ERROR_FILE)
        status: ExecutionStatus
        if forced is not None:
            status = forced
            error = error or _budget_error(forced, request, peak_mb)
        elif rc == 0 and result is not None and error is None:
            status = "ok"
        else:
            if error is None:
                error = crash_error(rc, tail)
                if rc == 0:
                    error.message = (
                        f"The process exited with code 0 but wrote no valid {RESULT_FILE}. " + error.message
                    )
            if error.error_type == INFEASIBLE_ERROR_TYPE:
                status = "infeasible"
            else:
                status = "oom" if self._is_oom(rc, error, oom_kills_before) else "crashed"
        return ExecutionResult(
            status=status,
            returncode=rc,
            duration_s=duration,
            peak_rss_mb=peak_mb,
            log_tail=tail,
            events=reader.events,
            error=error,
            result=result,
            log_path=request.log_path,
        )

    @staticmethod
    def _is_oom(rc: int | None, error: ComponentError, oom_kills_before: int | None) -> bool:
        if error.error_type in OOM_ERROR_TYPES or error.error_type.endswith(".OutOfMemoryError"):
            return True
        if rc != -signal.SIGKILL:
            return False
        # We did not send this SIGKILL; the kernel OOM killer is by far the usual sender.
        after = cgroup_oom_kills()
        return oom_kills_before is None or after is None or after > oom_kills_before


def _budget_error(status: ExecutionStatus, request: ExecutionRequest, peak_mb: float) -> ComponentError:
    if status == "timeout":
        return ComponentError(
            component="harness",
            error_type="Timeout",
            message=f"The run exceeded its time budget of {request.timeout_s:g} s and was stopped. "
            "Train for fewer epochs or steps, use a smaller model or input size, or raise timeout_s.",
        )
    return ComponentError(
        component="harness",
        error_type="MemoryLimitExceeded",
        message=f"The run used {peak_mb:.0f} MiB of host memory, over its limit of {request.memory_limit_mb} MiB, "
        "and was stopped. Lower the batch size, input size, DataLoader workers or model size.",
    )
