"""Faults of the machine, not of the code: a full disk stops the run cleanly instead of being "repaired".

A candidate that dies because the disk is full (its checkpoint, its result file, the feature
cache) says nothing about its code. Sending it to an engineer for repair costs attempts that
fail the same way, so the Executor calls :func:`stop_if_disk_full` on every failed candidate:
on a full disk it raises :class:`automodel._io.DiskFullError` with a one-line message that
says where space is short and what to free. The attempt is not recorded; ``--resume`` runs it
again once there is space (the same path as a run killed mid-attempt).

:func:`agent_errors_to_log` keeps AutoGen's own report of such an exception (the runtime logs
every agent's exception with its traceback, then once more for each other agent) off the
console: the records go to the structured log (``run.log``), and the exception itself still
reaches the caller, a full disk as the :class:`DiskFullError` it was, which the CLI prints as
one clear line.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import structlog

from automodel._io import DiskFullError
from automodel.executors import ExecutionResult

__all__ = ["agent_errors_to_log", "disk_full_message", "is_disk_full", "stop_if_disk_full"]

log = structlog.get_logger(__name__)

_DISK_FULL = re.compile(
    r"No space left on (the )?device|\[Errno (28|122)\]|\bENOSPC\b|\bEDQUOT\b|Disk quota exceeded|DiskFullError"
    r"|Not enough free space to write",
    re.IGNORECASE,
)
"""What a full disk looks like in an error message (Python, numpy, the project's own writes)."""

_WRITE_FAILED = re.compile(r"PytorchStreamWriter failed writing file|file write failed|unexpected pos \d+ vs \d+")
"""torch.save's report of a failed write: a full disk when little space is left."""

LOW_SPACE_BYTES = 64 * 2**20
"""Below this much free space, a failed write of a checkpoint is taken for a full disk."""


def _free_bytes(path: Path) -> int | None:
    with contextlib.suppress(OSError):
        return shutil.disk_usage(path).free
    return None


def is_disk_full(text: str, where: Path) -> bool:
    """Whether ``text`` (an error type, message, traceback or log tail) reports a full disk at ``where``."""
    if _DISK_FULL.search(text):
        return True
    free = _free_bytes(where)
    return bool(_WRITE_FAILED.search(text)) and free is not None and free < LOW_SPACE_BYTES


def _size(path: Path, limit: int = 20000) -> int:
    """Bytes under ``path`` (at most ``limit`` files are looked at)."""
    if path.is_file():
        return path.stat().st_size
    total = 0
    for i, (folder, _dirs, files) in enumerate(os.walk(path)):
        if i > limit:
            break
        for name in files:
            with contextlib.suppress(OSError):
                total += (Path(folder) / name).lstat().st_size
    return total


def _mb(n: float) -> str:
    return f"{n / 2**20:.1f} MB"


def disk_full_message(root: Path, what: str) -> str:
    """One line: ``what`` failed for lack of space, where space is short, what this run holds, what to do."""
    parts = [f"No space left on the device while {what}."]
    with contextlib.suppress(OSError):
        usage = shutil.disk_usage(root)
        parts.append(f"The disk of {root} has {_mb(usage.free)} free of {_mb(usage.total)}.")
    with contextlib.suppress(OSError):
        entries = sorted(((_size(p), p.name) for p in root.iterdir()), reverse=True)
        used = sum(size for size, _ in entries)
        largest = ", ".join(f"{name} {_mb(size)}" for size, name in entries[:3] if size)
        parts.append(f"This run holds {_mb(used)} there" + (f" (largest: {largest})" if largest else "") + ".")
    cache = os.environ.get("AUTOMODEL_CACHE") or str(Path.home() / ".cache" / "automodel")
    parts.append("Every completed attempt and best/ are kept; this attempt was not recorded and runs again on "
                 f"--resume. Free space on that disk (other runs, old outputs, the dataset cache {cache}) or "
                 "choose an --out on a larger disk, then continue with --resume.")
    return " ".join(parts)


def stop_if_disk_full(root: Path, iteration: int, error: str, result: ExecutionResult | None = None) -> None:
    """Raise :class:`DiskFullError` when a failed candidate's ``error`` (or its traceback or output) reports a
    full disk.

    Called by the Executor before a failed attempt is recorded: a full disk is the machine's
    fault, so the attempt is neither recorded nor sent to an engineer for repair.
    """
    texts = [error]
    if result is not None:
        texts += [result.error.traceback if result.error else "", *result.log_tail[-20:]]
    text = "\n".join(t for t in texts if t)
    if text and is_disk_full(text, root):
        with contextlib.suppress(OSError):  # run.log lies on the same full disk
            log.warning("disk_full", run_dir=str(root), iteration=iteration, error=error.splitlines()[0][:300])
        raise DiskFullError(errno.ENOSPC, disk_full_message(root, f"running attempt {iteration}"))


class _ToStructlog(logging.Filter):
    """Takes AutoGen's "Error processing ..." records off the console and into the structured log."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.getMessage().startswith("Error processing"):
            return True
        error = ""
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            error = f"{type(exc).__name__}: {str(exc)[:500]}"
        with contextlib.suppress(OSError):  # run.log may lie on a full disk; the exception still reaches the caller
            log.info("agent_error", source=record.name, message=record.getMessage(), error=error)
        return False


def _unwrapped_disk_full(exc: RuntimeError) -> DiskFullError | None:
    """The full disk inside AutoGen's ``RuntimeError("<Type>: <message>\\nTraceback: ...")``, if that is what it is."""
    first = str(exc).splitlines()[0] if str(exc) else ""
    kind, _, message = first.partition(": ")
    if kind not in ("DiskFullError", "OSError") or not _DISK_FULL.search(message):
        return None
    message = re.sub(r"^\[Errno \d+\]\s*", "", message)
    if kind == "OSError":
        message += "; free space on that disk, then continue with --resume"
    return DiskFullError(errno.ENOSPC, message)


@contextlib.contextmanager
def agent_errors_to_log() -> Iterator[None]:
    """While the team runs, AutoGen's tracebacks of an agent's exception go to ``run.log``, not the console.

    The exception still ends the team's run and reaches the caller; a full disk, which AutoGen
    wraps in a ``RuntimeError``, reaches it as the :class:`DiskFullError` it was (the CLI prints
    its one line) and anything else as it came.
    """
    logger = logging.getLogger("autogen_core")
    quiet = _ToStructlog()
    logger.addFilter(quiet)
    try:
        yield
    except RuntimeError as exc:
        disk = _unwrapped_disk_full(exc)
        if disk is None:
            raise
        raise disk from exc
    finally:
        logger.removeFilter(quiet)
