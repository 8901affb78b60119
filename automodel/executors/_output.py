"""Reading a child's output live, and turning its files and tail into typed results."""

from __future__ import annotations

import json
import os
import re
import select
import signal
import threading
from collections import deque
from pathlib import Path
from typing import IO, Any

import structlog
from pydantic import ValidationError

from automodel._io import open_regular

from ._base import EventCallback, LineCallback
from ._models import ComponentError
from ._protocol import EVENT_PREFIX, parse_event

__all__ = ["EVENT_PREFIX", "OutputReader", "crash_error", "read_component_error", "read_json_dict"]

_MAX_LINE_BYTES = 1 << 20
_MAX_JSON_BYTES = 8 << 20
_EXCEPTION_LINE = re.compile(
    r"^([A-Za-z_][\w.]*(?:Error|Exception|Interrupt|Exit|Warning)|[A-Z]\w*Error)(?::\s?(.*))?$"
)

log = structlog.get_logger(__name__)


class OutputReader(threading.Thread):
    """Copies a pipe line by line into the log file, keeps a tail, parses events, calls back live.

    Uses ``select`` with a short timeout so :meth:`stop` ends it even when an escaped
    process still holds the pipe open.
    """

    def __init__(
        self,
        fd: int,
        log_file: IO[bytes],
        *,
        tail_lines: int,
        on_event: EventCallback | None,
        on_line: LineCallback | None,
    ) -> None:
        super().__init__(name="automodel-executor-reader", daemon=True)
        self._fd = fd
        self._log_file = log_file
        self._on_event = on_event
        self._on_line = on_line
        self._stop_event = threading.Event()
        self._callback_failed = False
        self.tail: deque[str] = deque(maxlen=tail_lines)
        self.events: list[dict[str, Any]] = []

    def stop(self) -> None:
        """Ask the thread to finish after at most one select timeout."""
        self._stop_event.set()

    def run(self) -> None:
        buffer = b""
        while not self._stop_event.is_set():
            ready, _, _ = select.select([self._fd], [], [], 0.1)
            if not ready:
                continue
            chunk = os.read(self._fd, 65536)
            if not chunk:
                break
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for raw in lines:
                self._handle(raw)
            if len(buffer) > _MAX_LINE_BYTES:
                self._handle(buffer)
                buffer = b""
        if buffer:
            self._handle(buffer)
        self._log_file.flush()

    def _handle(self, raw: bytes) -> None:
        self._log_file.write(raw + b"\n")
        self._log_file.flush()
        # Progress bars redraw with carriage returns; the last frame is what matters.
        line = raw.decode("utf-8", "replace").rstrip("\r").rsplit("\r", 1)[-1]
        self.tail.append(line)
        event = parse_event(line)
        if event is None and line.startswith(EVENT_PREFIX):
            log.debug("executor_bad_event_line", line=line[:200])
        if event is not None:
            self.events.append(event)
            self._call(self._on_event, event)
        self._call(self._on_line, line)

    def _call(self, callback: Any, arg: Any) -> None:
        if callback is None:
            return
        try:
            callback(arg)
        except Exception:
            # A broken observer must not stop the copy of the log or the supervision.
            if not self._callback_failed:
                log.warning("executor_callback_failed", callback=repr(callback), exc_info=True)
            self._callback_failed = True


def read_json_dict(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``, or ``None`` if it is missing, a symlink or not a JSON object."""
    try:
        # The child wrote this file: never follow a link it planted, never read more than a few MiB.
        fd = open_regular(path)
        if fd is None:
            if os.path.lexists(path):  # a link, a FIFO, a folder: planted, not written
                log.warning("executor_unreadable_json", path=str(path), reason="not a regular file")
            return None
        with os.fdopen(fd, "rb") as f:
            value = json.loads(f.read(_MAX_JSON_BYTES).decode("utf-8"))
    except (OSError, ValueError):
        log.warning("executor_unreadable_json", path=str(path), exc_info=True)
        return None
    return value if isinstance(value, dict) else None


def read_component_error(path: Path) -> ComponentError | None:
    """The :class:`ComponentError` the harness wrote to ``path``, or ``None``."""
    data = read_json_dict(path)
    if data is None:
        return None
    try:
        return ComponentError.model_validate(data)
    except ValidationError:
        log.warning("executor_invalid_error_json", path=str(path), exc_info=True)
        return None


def crash_error(returncode: int | None, tail: list[str]) -> ComponentError:
    """Synthesize a ``harness`` error from the output tail of a child that wrote no ``error.json``."""
    starts = [i for i, line in enumerate(tail) if line.startswith("Traceback (most recent call last)")]
    traceback_lines = tail[starts[-1] :] if starts else tail[-20:]
    error_type, message = _exit_type(returncode), ""
    for line in reversed(traceback_lines):
        match = _EXCEPTION_LINE.match(line.strip())
        if match:
            error_type, message = match.group(1), (match.group(2) or "").strip()
            break
    if not message:
        last = next((line.strip() for line in reversed(tail) if line.strip()), "")
        message = f"The process ended ({_describe_exit(returncode)}) without writing error.json." + (
            f" Last output: {last}" if last else " It printed nothing."
        )
    return ComponentError(
        component="harness", error_type=error_type, message=message, traceback="\n".join(traceback_lines)
    )


def _exit_type(returncode: int | None) -> str:
    if returncode is not None and returncode < 0:
        try:
            return signal.Signals(-returncode).name
        except ValueError:
            return f"Signal{-returncode}"
    return f"ExitCode{returncode}"


def _describe_exit(returncode: int | None) -> str:
    if returncode is None:
        return "unknown exit"
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit code {returncode}"
