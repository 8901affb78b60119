"""Several candidates at once: one thread per running request, results in request order.

:func:`run_threaded` is what :meth:`Executor.run_many` does by default. Each thread calls
the executor's own ``run`` (one child process each, supervised as usual), so every
executor gets parallelism without its own scheduler. An interrupt (Ctrl-C) in the waiting
thread ends every child still running before it propagates: nothing outlives the call.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any, Protocol

import structlog

from ._gpus import GpuSlots
from ._models import ExecutionRequest, ExecutionResult, ExecutorError
from ._procs import end_session

__all__ = ["IndexedEventCallback", "IndexedLineCallback", "end_child_sessions", "run_threaded"]

IndexedEventCallback = Callable[[int, dict[str, Any]], None]
"""Called with (index of the request, event) as each ``@@AM`` event arrives."""
IndexedLineCallback = Callable[[int, str], None]
"""Called with (index of the request, output line) as each line arrives."""

log = structlog.get_logger(__name__)


class _Runs(Protocol):
    """What :func:`run_threaded` needs of an executor (``Executor`` itself, without importing it)."""

    name: str

    def run(
        self,
        request: ExecutionRequest,
        on_event: Callable[[dict[str, Any]], None] | None = None,
        on_line: Callable[[str], None] | None = None,
    ) -> ExecutionResult: ...


def _child_session_leaders() -> set[int]:
    """Pids of this process's children that lead their own session (how executors start them)."""
    me = str(os.getpid())
    found: set[int] = set()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            raw = Path("/proc", entry.name, "stat").read_bytes()
        except OSError:
            continue
        # After the command name: state(0) ppid(1) pgrp(2) session(3).
        fields = raw[raw.rfind(b")") + 2 :].decode("ascii", "replace").split()
        if len(fields) > 3 and fields[1] == me and fields[3] == entry.name and fields[0] not in ("Z", "X"):
            found.add(int(entry.name))
    return found


def end_child_sessions(keep: set[int] | None = None, *, grace_s: float = 3.0) -> list[int]:
    """End the session of every child of this process that leads one, except the pids in ``keep``.

    Returns the session ids that were ended. Linux only (reads ``/proc``); elsewhere a no-op.
    """
    if not os.path.isdir("/proc"):
        return []
    ended = sorted(_child_session_leaders() - (keep or set()))
    for sid in ended:
        end_session(sid, grace_s=grace_s)
    return ended


def run_threaded(
    executor: _Runs,
    requests: Sequence[ExecutionRequest],
    *,
    max_parallel: int | None = None,
    on_event: IndexedEventCallback | None = None,
    on_line: IndexedLineCallback | None = None,
    gpus: Sequence[str] | None = None,
    on_interrupt: Callable[[], None] | None = None,
) -> list[ExecutionResult]:
    """Run ``requests`` through ``executor.run``, up to ``max_parallel`` at a time.

    Args:
        max_parallel: how many run at once; default all of them.
        on_event, on_line: live callbacks, told which request (its index) spoke.
        gpus: ``CUDA_VISIBLE_DEVICES`` values of the GPU slots (:func:`resolve_gpus`);
            each running request holds one, so at most ``len(gpus)`` run at once.
            ``None`` leaves the environment alone.
        on_interrupt: called when the waiting thread is interrupted, to stop what runs;
            default: end the sessions of the children started by this call.

    Raises:
        ExecutorError: an executor failure in any request, raised after every other
            request has ended (their files are in their workdirs).
    """
    if max_parallel is not None and max_parallel < 1:
        raise ValueError(f"max_parallel must be >= 1 (or None for all at once), got {max_parallel}.")
    if not requests:
        return []
    slots = GpuSlots(gpus) if gpus else None
    if gpus is not None and not gpus:
        requests = [r.model_copy(update={"env": {**r.env, "CUDA_VISIBLE_DEVICES": ""}}) for r in requests]
    before = _child_session_leaders() if os.path.isdir("/proc") else set()

    def one(index: int, request: ExecutionRequest) -> ExecutionResult:
        event_cb = (lambda e: on_event(index, e)) if on_event else None
        line_cb = (lambda line: on_line(index, line)) if on_line else None
        threading.current_thread().name = f"automodel-candidate-{index}"
        if slots is None:
            return executor.run(request, on_event=event_cb, on_line=line_cb)
        with slots.hold() as env:
            pinned = request.model_copy(update={"env": {**request.env, **env}})
            log.info("executor_gpu_slot", index=index, cuda_visible_devices=env["CUDA_VISIBLE_DEVICES"])
            return executor.run(pinned, on_event=event_cb, on_line=line_cb)

    workers = min(len(requests), max_parallel or len(requests))
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="automodel-candidate")
    futures: list[Future[ExecutionResult]] = [pool.submit(one, i, r) for i, r in enumerate(requests)]
    try:
        wait(futures)
    except BaseException:
        # Ctrl-C lands here, not in the worker threads: stop their children, then let them finish.
        for future in futures:
            future.cancel()
        if on_interrupt is not None:
            on_interrupt()
        else:
            ended = end_child_sessions(before)
            log.warning("executor_run_many_interrupted", ended_sessions=ended)
        with contextlib.suppress(BaseException):
            wait(futures)
        raise
    finally:
        pool.shutdown(wait=True)
    errors = [f.exception() for f in futures if f.exception() is not None]
    if errors:
        first = errors[0]
        assert first is not None
        if len(errors) == 1:
            raise first
        raise ExecutorError(
            f"{len(errors)} of {len(requests)} requests failed in the executor ({executor.name}): "
            + "; ".join(f"{type(e).__name__}: {e}" for e in errors)
        ) from first
    return [f.result() for f in futures]
