"""Logging set-up for applications (the CLI calls it; the library never configures logging itself)."""

from __future__ import annotations

import logging
import os
import sys

import structlog

__all__ = ["configure_logging"]


def configure_logging(level: str | None = None) -> None:
    """Human-readable structlog output on stderr at ``level`` (``AUTOMODEL_LOG_LEVEL``, default WARNING)."""
    name = (level or os.environ.get("AUTOMODEL_LOG_LEVEL", "WARNING")).upper()
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="%H:%M:%S"),
            structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty()),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, name, logging.WARNING)),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
