"""The team: seven roles in one ``SelectorGroupChat`` with a deterministic speaker policy.

Embed it in any AutoGen application::

    team = build_team("runs/mine")          # after automodel.run.prepare_run(...)
    await Console(team.run_stream(task="Build the best classifier."))

or make it a participant of an outer team (agentchat nested teams); pass
``custom_message_types=automodel.messages.message_types()`` to the outer team.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from autogen_agentchat.base import ChatAgent, TerminatedException, TerminationCondition
from autogen_agentchat.conditions import ExternalTermination, MaxMessageTermination
from autogen_agentchat.messages import BaseAgentEvent, BaseChatMessage, StopMessage, StructuredMessage
from autogen_agentchat.teams import SelectorGroupChat
from autogen_core import Component
from autogen_core.models import ChatCompletionClient
from pydantic import BaseModel

from automodel.budget import StopReason
from automodel.experts import OfflineExpertClient
from automodel.messages import (
    ENGINEER_OF,
    AnalystFeedback,
    ComponentCode,
    ExecutionError,
    HistoryEntry,
    PipelineRewrite,
    RunReport,
    TechnicalDesign,
)
from automodel.retry import DEFAULT_RETRY
from automodel.roles import ROLE_CLASSES
from automodel.runtime import open_run

__all__ = [
    "AttemptBoundary",
    "AutoModelTeam",
    "BudgetTermination",
    "ROLE_ORDER",
    "build_team",
    "escalation_speaker",
    "next_in_round",
    "round_results_pending",
    "select_next_speaker",
    "stop_message",
    "stop_reason_of",
]

ROLE_ORDER = list(ROLE_CLASSES)
_INIT_NEXT = {"data": "model_engineer", "model": "training_engineer", "training": "executor"}


def select_next_speaker(thread: Sequence[BaseAgentEvent | BaseChatMessage]) -> str | None:
    """Who speaks next, from the type of the last message alone.

    task -> Architect -> Data -> Model -> Training Engineer -> Executor -> Summarizer -> Analyst
    -> targeted Engineer -> Executor -> ...; an execution error goes to the engineer of the
    component it is attributed to; a skipped change goes back to the Analyst. When the engineers'
    repairs of an attempt all failed, the attempt is escalated once (:func:`escalation_speaker`).
    In a round of parallel candidates (``AnalystFeedback.of`` > 1) the Analyst and the targeted
    engineers alternate slot by slot before the Executor, and the Executor posts one report per
    candidate, each summarized (:func:`next_in_round`, :func:`round_results_pending`).
    """
    escalation = escalation_speaker(thread)
    if escalation is not None:
        return escalation
    last = next((m for m in reversed(thread) if isinstance(m, BaseChatMessage)), None)
    if last is None or not isinstance(last, StructuredMessage):
        # The task (or any plain text): the Architect starts; a resumed run goes to the Analyst.
        text = last.to_text() if last is not None else ""
        return "analyst" if text.startswith("Resume") else "architect"
    content = last.content
    if isinstance(content, TechnicalDesign):
        return "data_engineer"
    if isinstance(content, ComponentCode):
        if content.phase == "init":
            return _INIT_NEXT[content.component]
        in_round = next_in_round(thread, content)
        if in_round is not None:
            return in_round
        return "analyst" if content.phase == "skip" else "executor"
    if isinstance(content, ExecutionError):
        return ENGINEER_OF.get(content.component, "training_engineer")
    if isinstance(content, RunReport):
        return "summarizer"
    if isinstance(content, HistoryEntry):
        return "executor" if round_results_pending(thread) else "analyst"
    if isinstance(content, AnalystFeedback):
        return content.target
    return None


_COMPONENT_ORDER = ("data", "model", "training")
_ATTEMPT_STARTS = (TechnicalDesign, AnalystFeedback, HistoryEntry)
"""Messages that begin a new attempt: what came before them belongs to earlier attempts."""


def escalation_speaker(thread: Sequence[BaseAgentEvent | BaseChatMessage]) -> str | None:
    """Who speaks next while a failed attempt is escalated to the Architect; None when no escalation applies.

    An attempt whose engineers used every repair (its last ``ExecutionError`` had
    ``repair_attempt == max_repairs``) and still crashed goes to the Architect, once per attempt.
    The Architect's :class:`PipelineRewrite` goes to the engineer of each file it changed, in
    data, model, training order (each posts it as a ``repair``), then to the Executor; a rewrite
    with no files (the Architect gave up) goes to the Summarizer, which records the failure.
    """
    chats = [m for m in thread if isinstance(m, BaseChatMessage)]
    if not chats or not isinstance(chats[-1], StructuredMessage):
        return None
    last = chats[-1].content
    if isinstance(last, RunReport):
        if last.status not in ("crashed", "invalid"):
            return None
        attempt = _current_attempt(chats[:-1])
        errors = [c for c in attempt if isinstance(c, ExecutionError)]
        used_every_repair = bool(errors) and errors[-1].repair_attempt >= errors[-1].max_repairs
        escalated = any(isinstance(c, PipelineRewrite) for c in attempt)
        return "architect" if used_every_repair and not escalated else None
    if isinstance(last, PipelineRewrite):
        changed = [c for c in _COMPONENT_ORDER if c in last.components]
        return ENGINEER_OF[changed[0]] if changed else "summarizer"
    if isinstance(last, ComponentCode) and last.phase == "repair":
        rewrite = _rewrite_being_relayed(chats)
        if rewrite is None:
            return None
        after = _COMPONENT_ORDER[_COMPONENT_ORDER.index(last.component) + 1:]
        rest = [c for c in after if c in rewrite.components]
        return ENGINEER_OF[rest[0]] if rest else "executor"
    return None


def _current_attempt(chats: Sequence[BaseChatMessage]) -> list[BaseModel]:
    """The structured contents since the newest message that began an attempt (oldest first)."""
    out: list[BaseModel] = []
    for m in reversed(chats):
        if not isinstance(m, StructuredMessage):
            break
        if isinstance(m.content, _ATTEMPT_STARTS):
            break
        out.append(m.content)
    return out[::-1]


def _rewrite_being_relayed(chats: Sequence[BaseChatMessage]) -> PipelineRewrite | None:
    """The rewrite whose files the trailing ``repair`` messages carry, if they follow one directly."""
    for m in reversed(chats):
        content = m.content if isinstance(m, StructuredMessage) else None
        if isinstance(content, ComponentCode) and content.phase == "repair":
            continue
        return content if isinstance(content, PipelineRewrite) else None
    return None


# --- rounds of parallel candidates (parallel_candidates > 1) ----------------------------------
# The Analyst posts the K changes of a round one at a time (AnalystFeedback slot 0..K-1 of K),
# each followed by its engineer's code; after the last, the Executor trains them all at once and
# posts one RunReport per candidate (``pending`` says how many are still to come), each summarized.


def _structured(thread: Sequence[BaseAgentEvent | BaseChatMessage]) -> list[BaseModel]:
    return [m.content for m in thread if isinstance(m, StructuredMessage) and isinstance(m.content, BaseModel)]


def next_in_round(thread: Sequence[BaseAgentEvent | BaseChatMessage], change: ComponentCode) -> str | None:
    """Who speaks after an engineer's change inside a round of parallel candidates; None outside one.

    A change answering slot ``i`` of ``K`` goes back to the Analyst for slot ``i + 1``; after the
    last slot the Executor trains the round (the Analyst again when every engineer skipped). A
    skipped repair goes to the Executor when it still has results of the round to post.
    """
    if change.phase not in ("revision", "skip"):
        return None
    contents = _structured(thread)
    for index in range(len(contents) - 1, -1, -1):
        content = contents[index]
        if isinstance(content, ExecutionError):
            return "executor" if change.phase == "skip" and content.pending > 0 else None
        if isinstance(content, AnalystFeedback):
            if content.of <= 1:
                return None
            if content.slot + 1 < content.of:
                return "analyst"
            return "executor" if _round_has_code(contents) else "analyst"
    return None


def _round_has_code(contents: Sequence[BaseModel]) -> bool:
    """Whether some engineer wrote code (not a skip) since the last round's first feedback."""
    for content in reversed(contents):
        if isinstance(content, ComponentCode) and content.phase == "revision":
            return True
        if isinstance(content, AnalystFeedback) and content.slot == 0:
            return False
    return False


def round_results_pending(thread: Sequence[BaseAgentEvent | BaseChatMessage]) -> bool:
    """Whether the Executor has more results of the last round to post (the newest report says so)."""
    report = next((c for c in reversed(_structured(thread)) if isinstance(c, RunReport)), None)
    return report is not None and report.pending > 0


STOP_PREFIX = "automodel-stop "


def stop_message(reason: StopReason, source: str) -> StopMessage:
    """A ``StopMessage`` that carries a typed :class:`StopReason` (read back with :func:`stop_reason_of`)."""
    return StopMessage(content=STOP_PREFIX + reason.model_dump_json(), source=source)


def stop_reason_of(text: str | None) -> StopReason | None:
    """The typed reasons in a ``TaskResult.stop_reason`` (AutoGen joins several with "; ").

    Returns the most important one: a real stop wins over the pause after an attempt.
    """
    reasons = []
    decoder = json.JSONDecoder()
    for part in (text or "").split(STOP_PREFIX)[1:]:
        try:  # AutoGen joins several stop messages with a separator of its choosing: decode one object
            body, _ = decoder.raw_decode(part.strip())
            reasons.append(StopReason.model_validate(body))
        except ValueError:
            continue
    if not reasons and text:
        if "External" in text or "externally" in text.lower():
            return StopReason(kind="interrupted", message=text)
        if "Maximum number of messages" in text:
            return StopReason(kind="messages", message=text)
    real = [r for r in reasons if not r.pauses_only]
    return real[0] if real else (reasons[0] if reasons else None)


class _RunDirConfig(BaseModel):
    run_dir: str


class BudgetTermination(TerminationCondition, Component[_RunDirConfig]):
    """Stops the team when the run's budget (``run.json``) is spent or its target reached.

    Checks attempts (iterations), wall-clock seconds and LLM tokens over all sessions
    (``usage.json``), and the target validation accuracy. Iteration and target stops happen at an attempt boundary, after
    the Summarizer has recorded the last attempt; a spent time budget stops at once.
    """

    component_config_schema = _RunDirConfig
    component_provider_override = "automodel.team.BudgetTermination"

    def __init__(self, run_dir: str | Path):
        self.run_dir = str(run_dir)
        self._terminated = False
        self._pending = 0  # results of a round of parallel candidates still to be reported

    @property
    def terminated(self) -> bool:
        return self._terminated

    async def __call__(self, messages: Sequence[BaseAgentEvent | BaseChatMessage]) -> StopMessage | None:
        if self._terminated:
            raise TerminatedException("the budget is already spent")
        run = open_run(self.run_dir)
        boundary = self._at_boundary(messages)
        tokens = 0
        if run.settings.token_budget is not None:
            tokens = sum(u.get("prompt_tokens", 0) + u.get("completion_tokens", 0)
                         for u in run.store.usage().values() if isinstance(u, dict))
        reason = run.plan().stop_reason(at_boundary=boundary, best=run.store.best_val_accuracy(), tokens_used=tokens)
        if reason is None:
            return None
        self._terminated = True
        return stop_message(reason, "BudgetTermination")

    async def reset(self) -> None:
        self._terminated = False

    def _at_boundary(self, messages: Sequence[BaseAgentEvent | BaseChatMessage]) -> bool:
        """An attempt was summarized and no result of its round is still to be reported."""
        boundary = False
        for m in messages:
            content = m.content if isinstance(m, StructuredMessage) else None
            if isinstance(content, RunReport | ExecutionError):
                self._pending = content.pending
            elif isinstance(content, HistoryEntry):
                boundary = self._pending == 0
        return boundary

    def _to_config(self) -> _RunDirConfig:
        return _RunDirConfig(run_dir=self.run_dir)

    @classmethod
    def _from_config(cls, config: _RunDirConfig) -> BudgetTermination:
        return cls(config.run_dir)


class _EmptyConfig(BaseModel):
    """AttemptBoundary has no settings."""


class AttemptBoundary(TerminationCondition, Component[_EmptyConfig]):
    """Pauses the team after each recorded attempt, so its state can be saved consistently."""

    component_config_schema = _EmptyConfig
    component_provider_override = "automodel.team.AttemptBoundary"

    def __init__(self) -> None:
        self._terminated = False

    @property
    def terminated(self) -> bool:
        return self._terminated

    async def __call__(self, messages: Sequence[BaseAgentEvent | BaseChatMessage]) -> StopMessage | None:
        if self._terminated:
            raise TerminatedException("already paused")
        if any(isinstance(m, StructuredMessage) and isinstance(m.content, HistoryEntry) for m in messages):
            self._terminated = True
            return stop_message(StopReason(kind="paused", message="attempt recorded"), "AttemptBoundary")
        return None

    async def reset(self) -> None:
        self._terminated = False

    def _to_config(self) -> _EmptyConfig:
        return _EmptyConfig()

    @classmethod
    def _from_config(cls, config: _EmptyConfig) -> AttemptBoundary:
        return cls()


class AutoModelTeam(SelectorGroupChat):
    """A ``SelectorGroupChat`` whose speaker policy is always :func:`select_next_speaker`.

    AutoGen does not serialize selector functions; this class restores the policy when a
    dumped team is loaded back (``Team.load_component(team.dump_component())``).
    """

    component_provider_override = "automodel.team.AutoModelTeam"

    def __init__(self, participants: list[Any], model_client: ChatCompletionClient, **kwargs: Any):
        kwargs["selector_func"] = select_next_speaker
        kwargs["allow_repeated_speaker"] = True
        super().__init__(participants, model_client, **kwargs)


def build_team(
    run_dir: str | Path,
    clients: Mapping[str, ChatCompletionClient] | None = None,
    *,
    external: ExternalTermination | None = None,
    pause_after_each_attempt: bool = False,
    max_messages: int = 2000,
    fallback_to_expert: bool = True,
    max_retries: int = DEFAULT_RETRY.max_retries,
    request_timeout_s: float = DEFAULT_RETRY.request_timeout_s,
    backoff_s: float | None = None,
    name: str = "automodel_team",
    agents: Mapping[str, ChatAgent] | None = None,
    try_out: bool = True,
) -> AutoModelTeam:
    """The AutoModel team for the run prepared in ``run_dir``.

    Args:
        run_dir: a run directory created by :func:`automodel.run.prepare_run`.
        clients: a model backend per role name (see ``ROLE_ORDER``); roles not named get
            the offline expert.
        external: an ``ExternalTermination`` to stop the team cleanly (Ctrl-C).
        pause_after_each_attempt: stop after each recorded attempt (the CLI saves the team
            state there and continues with ``run()``).
        max_messages: a safety cap on messages.
        fallback_to_expert: let the offline expert play a role for a turn when its backend
            fails ``max_retries + 1`` times.
        request_timeout_s: seconds one model request may take before it counts as a fault.
        backoff_s: base of the exponential backoff between retries (None: the role's default).
        agents: your own agents in place of roles (role name -> agent named the same): the
            speaker policy routes to them, and any valid ``ComponentCode`` they post is run.
        try_out: roles whose backend is a model try the code they write (the harness's smoke test,
            as an executor job) before handing it over; a crash there is a fault fed back at once,
            not an attempt (see :mod:`automodel.roles._tryout`).
    """
    clients = dict(clients or {})
    unknown = set(clients) - set(ROLE_ORDER)
    if unknown:
        raise ValueError(f"unknown role(s) {sorted(unknown)}; the roles are {ROLE_ORDER}")
    custom = dict(agents or {})
    unknown_agents = set(custom) - set(ROLE_ORDER)
    if unknown_agents:
        raise ValueError(f"agents for unknown role(s) {sorted(unknown_agents)}; the roles are {ROLE_ORDER}")
    for role, agent in custom.items():
        if agent.name != role:
            raise ValueError(f"the agent playing {role!r} must be named {role!r} (the speaker policy routes by name), "
                             f"not {agent.name!r}")
    participants: list[ChatAgent] = [
        custom[role] if role in custom else
        ROLE_CLASSES[role](role, clients.get(role), run_dir=run_dir, max_retries=max_retries,
                           fallback_to_expert=fallback_to_expert, request_timeout_s=request_timeout_s,
                           backoff_s=backoff_s, try_out=try_out)
        for role in ROLE_ORDER
    ]
    termination: TerminationCondition = BudgetTermination(run_dir) | MaxMessageTermination(max_messages)
    if external is not None:
        termination = termination | external
    if pause_after_each_attempt:
        termination = termination | AttemptBoundary()
    return AutoModelTeam(
        participants,
        OfflineExpertClient(),  # never asked: the selector function always answers
        name=name,
        description="AutoModel: a team that builds, trains and improves an image classifier.",
        termination_condition=termination,
    )


def task_text(run: Mapping[str, Any], *, resume: bool = False) -> str:
    """The task message that starts (or resumes) the team."""
    if resume:
        return "Resume: continue improving from the best candidate recorded in the run directory."
    desc = run.get("description") or "no description given"
    return f"Build the best image classifier for this dataset within the budget. Description: {desc}"
