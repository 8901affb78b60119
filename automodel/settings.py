"""A run's settings: one typed model, every default defined here and nowhere else.

The CLI and the Python API build a :class:`RunSettings` (only the values a user set;
everything else takes the default below), ``run.json`` stores it under ``"settings"``,
and every layer reads it back validated (:meth:`RunSettings.from_run_record`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

__all__ = ["SETTINGS_VERSION", "RunSettings", "SettingsError", "Strategy"]

SETTINGS_VERSION = 2
"""Bumped when a field changes meaning; run directories of another version are refused with a message."""

Strategy = Literal["budgeted", "paper"]


class SettingsError(ValueError):
    """Settings that cannot be used; the message says which and what to do."""


class RunSettings(BaseModel):
    """Everything ``automodel run`` accepts, with its default.

    Budget: the run uses its whole ``time_budget_s``. ``iterations`` is an optional extra
    cap on attempts after the first pipeline; ``candidate_budget_s`` caps exploration
    candidates only (the final training phase uses what remains).
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    # The data.
    data: str
    out: Path
    description: str = ""
    seed: int = 0
    val_fraction: float = Field(default=0.2, gt=0.0, lt=0.9)
    id_col: str | None = None
    label_col: str | None = None
    weights_dir: str | None = None
    max_train: int | None = Field(default=None, ge=2)
    max_test: int | None = Field(default=None, ge=1)

    # The budget.
    time_budget_s: float = Field(default=900.0, gt=0)
    iterations: int | None = Field(default=None, ge=0)
    """Attempts after the first pipeline; None: as many as the time budget allows."""
    candidate_budget_s: float | None = Field(default=None, gt=0)
    """Training seconds of one exploration candidate; None: planned from the budget."""
    strategy: Strategy = "budgeted"
    """``budgeted``: explore cheap, then train the best long; ``paper``: equal shares, every attempt from scratch."""
    final_share: float = Field(default=0.4, ge=0.0, le=0.9)
    """Share of the time budget kept for the final training of the best configuration (budgeted strategy)."""
    target: float | None = Field(default=None, gt=0, le=1)
    token_budget: int | None = Field(default=None, ge=1)
    """Total LLM tokens (prompt + completion) before the team stops."""
    max_cost_usd: float | None = Field(default=None, ge=0)
    """Spend cap for priced backends; once spent, the offline expert plays their turns."""
    max_repairs: int = Field(default=2, ge=0)
    candidate_overhead_s: float = Field(default=20.0, ge=0)
    """Seconds an attempt costs besides training (process start, smoke test, scoring), until measured."""
    min_candidate_s: float = Field(default=8.0, gt=0)
    """The least training time worth starting a candidate for."""

    # The team.
    config: Path | None = None
    """Model backends per role (YAML/JSON); None: the offline expert plays every role."""
    zero_shot: bool = True
    flip_check: bool = True
    """Let the roles use the data-driven mirrored-image check (off only for ablations)."""
    try_out: bool = True
    """Roles backed by a model try the code they write before handing it over: the harness's smoke test
    alone, as an executor job (:mod:`automodel.roles._tryout`); a crash there is a ``failed_tryout`` fault
    fed back to the model, not an attempt. False: their code goes to the Executor untried, and a crash
    costs an attempt and a repair (``--no-try-out``). Code from the offline expert is never tried.
    ``automodel run`` passes it to :func:`automodel.team.build_team` (``try_out=``)."""

    # Where candidates run.
    device: str = "auto"
    threads: int = Field(default=0, ge=0)
    """CPU threads per candidate (0: all this process may use)."""
    memory_limit_mb: int | None = Field(default=None, ge=256)
    max_epochs: int | None = Field(default=None, ge=1)
    executor: str = "auto"
    """Where candidate code runs: auto (bubblewrap sandbox where it starts, else local), sandbox, docker,
    local (no isolation), ray; see automodel.executors and the README's "Security model"."""
    parallel_candidates: int = Field(default=1, ge=1, le=16)
    """Candidates the team explores at once (K): the Analyst proposes K different changes, they train
    together (threads per candidate: the cores divided by K), and the best that beats the incumbent is
    kept. 1: the paper's loop, one candidate per step."""
    gpus: str | None = None
    """GPUs the candidates of the local and sandbox executors spread over, one
    ``CUDA_VISIBLE_DEVICES`` each: ``all``, a count (``2``) or ids (``0,1``; one id: ``1,``).
    None: ``device`` decides (``cuda:N`` pins every candidate to GPU N). Not with ``ray``
    (``ray_num_gpus`` there)."""
    ray_address: str | None = None
    """``--executor ray``: the cluster (``auto``, ``ray://HEAD:10001``); None: the backend config's
    ``ray.address``, else ``RAY_ADDRESS`` or a local runtime (docs/ray.md)."""
    ray_num_cpus: float | None = Field(default=None, ge=0)
    """``--executor ray``: CPUs each candidate asks for; None: the backend config's, else 1."""
    ray_num_gpus: float | None = Field(default=None, ge=0)
    """``--executor ray``: GPUs each candidate asks for (fractions share one); None: the backend config's, else 0."""

    # Not stored as a setting of the run, only of this invocation.
    resume: bool = Field(default=False, exclude=True)

    @model_validator(mode="after")
    def _gpus_not_with_ray(self) -> RunSettings:
        if self.gpus is not None and self.executor == "ray":
            raise ValueError("gpus does not apply to the ray executor, which gives each candidate its GPUs itself: "
                             "set ray_num_gpus (or num_gpus in the backend config's ray: section) instead")
        return self

    @classmethod
    def build(cls, **given: Any) -> RunSettings:
        """Settings from the values a caller set; ``None`` means "not set" and takes the default."""
        return cls(**{k: v for k, v in given.items() if v is not None})

    @property
    def max_attempts(self) -> int | None:
        """Attempts in all (first pipeline included), or None when only time limits them."""
        return None if self.iterations is None else self.iterations + 1

    def record(self) -> dict[str, Any]:
        """The JSON that ``run.json`` stores."""
        return {"version": SETTINGS_VERSION, **self.model_dump(mode="json")}

    @classmethod
    def from_run_record(cls, run: dict[str, Any], where: str = "run.json") -> RunSettings:
        """Validate the settings stored in a ``run.json``.

        Raises:
            SettingsError: when the run directory was written by another version, or the
                file was edited into something invalid.
        """
        stored = run.get("settings")
        if not isinstance(stored, dict):
            raise SettingsError(
                f"{where} has no 'settings': it was written by an older AutoModel. Start a new run "
                "(another --out), or re-run that version to finish it."
            )
        stored = dict(stored)
        version = stored.pop("version", None)
        if version != SETTINGS_VERSION:
            raise SettingsError(
                f"{where} holds settings version {version}; this AutoModel reads version {SETTINGS_VERSION}. "
                "Start a new run (another --out)."
            )
        try:
            return cls.model_validate(stored)
        except ValidationError as exc:
            raise SettingsError(f"{where}: invalid settings: {exc}") from exc
