"""Typed requests and results that pass between the team and an executor."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "COMPONENTS",
    "ComponentError",
    "ExecutionRequest",
    "ExecutionResult",
    "ExecutionStatus",
    "ExecutorError",
]

ExecutionStatus = Literal["ok", "crashed", "timeout", "oom", "infeasible"]
"""How a run ended: ``ok`` (exit 0 with ``result.json``), ``crashed``, ``timeout``, ``oom``, or
``infeasible`` (the harness found that the plan cannot train one epoch within its budget)."""

ComponentName = Literal["data", "model", "training", "harness"]
COMPONENTS: tuple[str, ...] = ("data", "model", "training", "harness")
"""The parts a failure can be attributed to; ``harness`` covers everything not in a component."""


class ExecutorError(RuntimeError):
    """The executor itself failed (bad program, unwritable workdir); never raised for user-code failures."""


class ComponentError(BaseModel):
    """A failure attributed to one component, as the harness writes it to ``error.json``."""

    model_config = ConfigDict(extra="ignore")

    component: ComponentName = "harness"
    error_type: str = "Error"
    message: str = ""
    traceback: str = ""
    lines: list[Any] = Field(default_factory=list)
    """What the harness points at in the component file (line numbers or source lines)."""


class ExecutionRequest(BaseModel):
    """One command to run under a time and memory budget.

    ``env`` holds extra variables for the child only; it is never written to disk or logs.
    """

    argv: list[str] = Field(min_length=1)
    workdir: Path
    timeout_s: float = Field(gt=0)
    memory_limit_mb: int | None = Field(default=None, gt=0)
    env: dict[str, str] = Field(default_factory=dict, repr=False)
    log_file: str = "log.txt"
    cwd: Path | None = None
    """Working directory of the child; ``None`` keeps the caller's (so ``-m automodel...`` imports)."""
    job_dir: Path | None = None
    """The one directory a sandboxed child may write, and where ``result.json`` / ``error.json`` are
    read; ``None``: ``workdir``. The log stays in ``workdir``, out of the child's reach when they differ."""
    readonly_paths: list[Path] = Field(default_factory=list)
    """Host files or folders a sandboxed child sees read-only at the same path (e.g. the targets of
    the symlinks in ``job_dir``). Besides these, the system and the Python environment, a sandbox
    shows nothing of the host."""
    gpus: bool = False
    """Whether the child needs the GPUs (sandboxes then expose the device nodes)."""

    @property
    def log_path(self) -> Path:
        """Where the merged stdout and stderr of the child go."""
        return self.workdir / self.log_file

    @property
    def output_dir(self) -> Path:
        """Where the child writes ``result.json`` / ``error.json``: ``job_dir`` or ``workdir``."""
        return self.job_dir or self.workdir


class ExecutionResult(BaseModel):
    """What one run produced. A failing candidate is a result, not an exception."""

    status: ExecutionStatus
    returncode: int | None
    """Exit code; negative for a signal (``-9`` is SIGKILL); ``None`` if it could not be reaped."""
    duration_s: float
    peak_rss_mb: float = 0.0
    """Largest summed resident memory of all processes in the child's session, as polled."""
    log_tail: list[str] = Field(default_factory=list)
    events: list[dict[str, Any]] = Field(default_factory=list)
    error: ComponentError | None = None
    result: dict[str, Any] | None = None
    log_path: Path | None = None

    @property
    def ok(self) -> bool:
        """Whether the run succeeded."""
        return self.status == "ok"
