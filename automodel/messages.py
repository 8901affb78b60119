"""The typed messages that pass between roles.

Each is a pydantic model sent as ``StructuredMessage[T]``; the speaker policy
(:mod:`automodel.team`) reads only the type of the last message.
"""

from __future__ import annotations

from typing import Literal

from autogen_agentchat.messages import StructuredMessage
from pydantic import BaseModel, Field, field_validator, model_validator

from automodel.settings import RunSettings

__all__ = [
    "ENGINEER_OF",
    "AnalystFeedback",
    "ComponentCode",
    "ComponentName",
    "EngineerRole",
    "ExecutionError",
    "Fidelity",
    "HistoryEntry",
    "PipelineRewrite",
    "ROLE_NAMES",
    "RunReport",
    "TechnicalDesign",
    "message_types",
]

ComponentName = Literal["data", "model", "training"]
EngineerRole = Literal["data_engineer", "model_engineer", "training_engineer"]
ENGINEER_OF: dict[str, str] = {"data": "data_engineer", "model": "model_engineer", "training": "training_engineer"}
"""Component -> the role that owns it."""
ROLE_NAMES: tuple[str, ...] = (
    "architect", "data_engineer", "model_engineer", "training_engineer", "executor", "summarizer", "analyst",
)
"""Every role of the team, in speaking order (also the agents' names in the group chat)."""
Fidelity = Literal["explore", "final"]


class TechnicalDesign(BaseModel):
    """The Architect's design and its first pipeline (zero-shot initialization)."""

    summary: str
    rationale: list[str] = Field(default_factory=list)
    decisions: dict[str, str] = Field(default_factory=dict)
    """Named choices (backbone, input size, augmentation, schedule, ...) and their values."""
    components: dict[str, str]
    """The source of ``data.py``, ``model.py`` and ``training.py`` (keyed data, model, training)."""

    @field_validator("components")
    @classmethod
    def _three_components(cls, value: dict[str, str]) -> dict[str, str]:
        if set(value) != {"data", "model", "training"}:
            raise ValueError(f"components must be exactly data, model and training; got {sorted(value)}")
        return value
    author: str = ""
    """Which backend wrote it (a model name or ``offline expert``)."""
    tried: bool = False
    """The three files passed a try-out together (the harness's smoke test): the engineers take them as
    they are instead of asking their models to check them again."""


class ComponentCode(BaseModel):
    """One engineer's component file, finalized or revised."""

    component: ComponentName
    code: str
    change: str
    """What changed and why, in one or two sentences."""
    phase: Literal["init", "revision", "repair", "skip"] = "init"
    """``init`` after the design, ``revision`` after feedback, ``repair`` after a crash,
    ``skip`` when the engineer could not produce a valid change (the best is kept)."""
    iteration: int = 0
    author: str = ""
    knobs: dict[str, str | float | int | bool] = Field(default_factory=dict)
    """The settings this change applied (what the Analyst records as tried)."""


class ExecutionError(BaseModel):
    """A candidate failed; the attributed engineer gets it for repair."""

    iteration: int
    component: Literal["data", "model", "training", "harness"]
    status: Literal["crashed", "timeout", "oom", "invalid"]
    error_type: str
    message: str
    lines: list[str] = Field(default_factory=list)
    traceback_tail: str = ""
    repair_attempt: int = 1
    max_repairs: int = Field(default=RunSettings.model_fields["max_repairs"].default, ge=0)
    """Repairs the attempt may have: the run's ``max_repairs``, which the Executor sets (the default is that
    setting's, defined once in :mod:`automodel.settings`). When repair ``max_repairs`` crashes too, the
    speaker policy escalates the attempt to the Architect (:func:`automodel.team.escalation_speaker`)."""
    pending: int = Field(default=0, ge=0)
    """Results of the same round of parallel candidates the Executor has still to post."""
    feedback: AnalystFeedback | None = None
    """The change the failed candidate was making (the Analyst's request), which its repair must keep. With
    parallel candidates the newest feedback in the chat is another candidate's, so it travels here."""


class PipelineRewrite(BaseModel):
    """The Architect's rewrite of a pipeline whose engineers' repairs all failed (an escalation).

    Each engineer whose file changed then posts it as a ``repair`` :class:`ComponentCode`, and the
    Executor runs it as one more try of the same attempt. No component in ``components`` means the
    Architect gave up: the failed attempt is summarized as it is.
    """

    iteration: int
    """The failed try the rewrite repairs."""
    summary: str
    """What was wrong and what the rewrite changes, in a sentence or two."""
    components: dict[str, str] = Field(default_factory=dict)
    """The rewritten files that differ from the failed try's (keyed data, model, training)."""
    author: str = ""
    """Which backend wrote it (a model name or ``offline expert``)."""


class RunReport(BaseModel):
    """What the Executor measured for one candidate."""

    iteration: int
    status: Literal["improved", "discarded", "crashed", "timeout", "invalid"]
    target: str
    """The role whose change this candidate tests (``architect`` for the first)."""
    change: str
    val_accuracy: float | None = None
    best_val_accuracy: float | None = None
    epochs: list[dict[str, float | int | None]] = Field(default_factory=list)
    """Per-epoch train_loss, val_loss, val_accuracy, lr, seconds."""
    per_class_val_accuracy: list[float | None] = Field(default_factory=list)
    confused_pairs: list[dict[str, float | int]] = Field(default_factory=list)
    """The (at most 5) class pairs with the most validation errors between them, scored by the
    orchestrator: ``a``, ``b``, ``errors``, ``share`` of all errors, ``a_as_b``, ``b_as_a``, ``images``."""
    stopped_by_budget: bool = False
    seconds: float = 0.0
    images_per_s: float = 0.0
    error: str = ""
    log_tail: list[str] = Field(default_factory=list)
    fidelity: Fidelity = "explore"
    budget_s: float | None = None
    """Training seconds this candidate was given."""
    warm_start: bool = False
    """Trained on from the incumbent's weights instead of from scratch."""
    features: str | None = None
    """The cached feature set the candidate trained a head on, if any."""
    pending: int = Field(default=0, ge=0)
    """Results of the same round of parallel candidates the Executor has still to post (one message each)."""


class HistoryEntry(BaseModel):
    """The Summarizer's faithful, short account of one attempt."""

    iteration: int
    target: str
    change: str
    status: str
    val_accuracy: float | None = None
    best_val_accuracy: float | None = None
    summary: str
    """Methods, hyperparameters, outcome: a few lines any model's context can hold."""


class AnalystFeedback(BaseModel):
    """The Analyst's one targeted change for one engineer."""

    target: EngineerRole
    diagnosis: str
    change: str
    expected_effect: str
    knobs: dict[str, str | float | int | bool] = Field(default_factory=dict)
    """Optional concrete settings (``{"MIXUP": 0.2}``) an engineer may apply directly."""
    fidelity: Fidelity = "explore"
    """``explore``: a short look; ``final``: train this configuration with the rest of the budget."""
    warm_start: bool = False
    """Continue from the incumbent's weights (only when the model architecture stays the same)."""
    slot: int = Field(default=0, ge=0)
    """This change's place in a round of parallel candidates (set by the Analyst role, not the model)."""
    of: int = Field(default=1, ge=1)
    """How many different changes the round trains at once (1: one at a time, the paper's loop)."""
    rerun: int | None = None
    """The iteration this change runs again: it was still training when the run was killed."""

    @model_validator(mode="after")
    def _slot_in_round(self) -> AnalystFeedback:
        if self.slot >= self.of:
            raise ValueError(f"slot {self.slot} is outside a round of {self.of} changes (slots 0..{self.of - 1})")
        return self


def message_types() -> list[type[StructuredMessage[BaseModel]]]:
    """The structured message types a team built from these roles must know."""
    return [
        StructuredMessage[TechnicalDesign],
        StructuredMessage[ComponentCode],
        StructuredMessage[ExecutionError],
        StructuredMessage[PipelineRewrite],
        StructuredMessage[RunReport],
        StructuredMessage[HistoryEntry],
        StructuredMessage[AnalystFeedback],
    ]
