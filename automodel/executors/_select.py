"""Choosing an executor by name, with the default: the sandbox where it starts, else ``local``."""

from __future__ import annotations

import structlog

from ._base import Executor, create_executor
from ._local import LocalExecutor
from ._sandbox import SandboxExecutor, bwrap_problem

__all__ = ["DEFAULT_EXECUTOR", "resolve_executor"]

DEFAULT_EXECUTOR = "auto"
"""``auto``: ``sandbox`` where bubblewrap can start, otherwise ``local`` (said once, in the log)."""

log = structlog.get_logger(__name__)
_warned = False


def resolve_executor(choice: str | Executor | None = None) -> Executor:
    """An executor instance for ``choice``: an instance, a registered name, or ``None``/``"auto"``.

    Raises:
        ValueError: an unknown name (the message lists the valid ones).
        ExecutorError: an explicitly named executor cannot start here (e.g. ``sandbox`` without bwrap).
    """
    global _warned
    if isinstance(choice, Executor):
        return choice
    if choice is None or choice == DEFAULT_EXECUTOR:
        problem = bwrap_problem()
        if problem is None:
            return SandboxExecutor()
        if not _warned:
            _warned = True
            log.warning(
                "executor_fallback_to_local",
                reason=problem,
                note="candidates run as plain local processes: NOT a security boundary (labels are still "
                "never handed to them, and scores are still computed outside them)",
            )
        return LocalExecutor()
    return create_executor(choice)
