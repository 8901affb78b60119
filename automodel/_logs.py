"""Logging for applications (the CLI calls it; the library never configures logging itself).

:func:`configure_logging` sends human-readable structlog lines to stderr; with ``run_dir``
it also appends every event, as one JSON object per line with the run id, to
``run_dir/run.log``. Secrets are redacted from both: the values of environment variables
whose names say key, token, secret or password, and anything shaped like an API key.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import sys
import threading
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

import structlog

__all__ = ["RUN_LOG", "configure_logging", "redact", "run_id_for"]

RUN_LOG = "run.log"
REDACTED = "[redacted]"
_SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSW|CREDENTIAL|AUTH", re.IGNORECASE)
_SECRET_SHAPES = re.compile(
    r"\b(sk-[A-Za-z0-9_\-]{16,}|sk-ant-[A-Za-z0-9_\-]{16,}|hf_[A-Za-z0-9]{20,}|gh[pousr]_[A-Za-z0-9]{20,}"
    r"|AKIA[0-9A-Z]{16}|xox[abpr]-[A-Za-z0-9\-]{10,})\b"
)
_BEARER = re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._\-]{8,}")
_LEVELS = {"debug": 10, "info": 20, "warning": 30, "warn": 30, "error": 40, "exception": 40, "critical": 50}


def _secret_values() -> list[str]:
    values = {v for k, v in os.environ.items() if _SECRET_NAME.search(k) and len(v) >= 8}
    return sorted(values, key=len, reverse=True)


def _redact_text(text: str, secrets: list[str]) -> str:
    for value in secrets:
        if value in text:
            text = text.replace(value, REDACTED)
    text = _SECRET_SHAPES.sub(REDACTED, text)
    return _BEARER.sub(lambda m: m.group(1) + REDACTED, text)


def redact(obj: Any, secrets: list[str] | None = None) -> Any:
    """``obj`` (str, or dicts/lists of them, nested) with secret values replaced by ``[redacted]``."""
    secrets = _secret_values() if secrets is None else secrets
    if isinstance(obj, str):
        return _redact_text(obj, secrets)
    if isinstance(obj, dict):
        return {k: redact(v, secrets) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [redact(v, secrets) for v in obj]
    return obj


def run_id_for(run_dir: str | Path) -> str:
    """A stable id of a run directory: its name and a short hash of its absolute path."""
    path = Path(run_dir).expanduser().resolve()
    return f"{path.name}-{hashlib.sha1(str(path).encode()).hexdigest()[:8]}"


class _RunLog:
    """A structlog processor that appends each event as JSON to ``run.log`` and passes it on."""

    def __init__(self, path: Path, run_id: str, *, file_level: int, console_level: int):
        self.path, self.run_id = path, run_id
        self.file_level, self.console_level = file_level, console_level
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)

    def __call__(self, _logger: Any, method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        level = _LEVELS.get(method, logging.INFO)
        if level >= self.file_level:
            record = {"run_id": self.run_id, **event_dict}
            line = json.dumps(redact(record), default=str)
            with self._lock, open(self.path, "a", encoding="utf-8") as f:
                f.write(line + "\n")
        if level < self.console_level:
            raise structlog.DropEvent
        return event_dict


def _redact_processor(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    secrets = _secret_values()
    return {k: redact(v, secrets) for k, v in event_dict.items()}


def configure_logging(level: str | None = None, *, run_dir: str | Path | None = None,
                      file_level: str = "INFO") -> str | None:
    """Human-readable structlog output on stderr at ``level`` (``AUTOMODEL_LOG_LEVEL``, default WARNING).

    With ``run_dir``, every event at ``file_level`` or above is also appended to ``run_dir/run.log`` as
    JSON with the run id; returns that id (``None`` without ``run_dir``).
    """
    name = (level or os.environ.get("AUTOMODEL_LOG_LEVEL", "WARNING")).upper()
    console_level = getattr(logging, name, logging.WARNING)
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
    ]
    run_id = None
    min_level = console_level
    if run_dir is not None:
        run_id = run_id_for(run_dir)
        file_lvl = getattr(logging, file_level.upper(), logging.INFO)
        min_level = min(console_level, file_lvl)
        processors.append(_RunLog(Path(run_dir).expanduser().resolve() / RUN_LOG, run_id, file_level=file_lvl,
                                  console_level=console_level))
    processors += [_redact_processor, structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(min_level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    return run_id
