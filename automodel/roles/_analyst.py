"""The Performance Analyst: one diagnosis, one targeted change, for one engineer."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from autogen_agentchat.messages import BaseChatMessage
from autogen_core import CancellationToken

from automodel.experts import change_key, get_knobs
from automodel.interfaces import knob_problems
from automodel.messages import ENGINEER_OF, AnalystFeedback, ComponentCode, RunReport
from automodel.roles._base import ReplyError, RoleAgent, last_of
from automodel.roles._incumbent import incumbent_files
from automodel.roles._parse import extract_json

__all__ = ["AnalystAgent"]

HISTORY_CHARS = 6000
"""How much summarized history the Analyst reads: the newest entries that fit, plus the best."""


def _parse(text: str, known: Mapping[str, Mapping[str, Any]] | None = None) -> AnalystFeedback:
    """The feedback; with ``known`` (component -> its knobs), knobs the target's file does not define, or set
    outside their allowed values (:data:`automodel.interfaces.KNOB_RANGES`), are refused."""
    data = extract_json(text)
    try:
        feedback = AnalystFeedback.model_validate(data)
    except ValueError as exc:
        raise ReplyError(f"the JSON does not match the schema: {str(exc)[:300]}") from exc
    if known is not None:
        component = next(c for c, role in ENGINEER_OF.items() if role == feedback.target)
        defined = known.get(component, {})
        unknown = sorted(k for k in feedback.knobs if k not in defined)
        if unknown:
            allowed = ", ".join(f"{k}={v!r}" for k, v in defined.items() if k != "INTERFACE_VERSION")
            raise ReplyError(f"knob(s) {', '.join(unknown)} are not defined in {component}.py, so setting them changes "
                             f"nothing; its knobs (current values) are: {allowed}. Use those, or describe a code "
                             f"change in `change` with no knobs")
        absurd = knob_problems(component, feedback.knobs)
        if absurd:
            raise ReplyError(f"knob value(s) outside their allowed values in {component}.py: {'; '.join(absurd)}. "
                             "Choose values inside the ranges of the knob list")
    return feedback


def best_report(metrics: Mapping[str, Any] | None) -> dict[str, Any]:
    """The best candidate's learning curve in the shape of a run report."""
    if not metrics:
        return {}
    return {
        "status": "improved",
        "val_accuracy": metrics.get("val_accuracy"),
        "epochs": metrics.get("history", []),
        "stopped_by_budget": metrics.get("stopped_by_budget", False),
        "per_class_val_accuracy": metrics.get("per_class_val_accuracy") or [],
        "images_per_s": metrics.get("images_per_s"),
    }


class AnalystAgent(RoleAgent):
    """Reads the summarized history and sends one targeted, untried change to one engineer."""

    component_provider_override = "automodel.roles.AnalystAgent"
    role = "analyst"
    summary = "Performance Analyst: diagnoses the learning curves and targets one engineer with one change."
    output_types = (AnalystFeedback,)

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._sent: list[str] = []

    async def save_state(self) -> Mapping[str, Any]:
        return {"sent": self._sent}

    async def load_state(self, state: Mapping[str, Any]) -> None:
        self._sent = list(state.get("sent", []))

    def _history(self) -> list[dict[str, Any]]:
        entries = self.ctx.summaries()
        kept: list[dict[str, Any]] = []
        used = 0
        for entry in reversed(entries):
            size = len(entry.get("summary", "")) + 80
            if used + size > HISTORY_CHARS:
                break
            kept.append(entry)
            used += size
        return list(reversed(kept))

    async def act(self, messages: Sequence[BaseChatMessage], cancellation_token: CancellationToken) -> AnalystFeedback:
        ctx = self.ctx
        store = ctx.store
        last = last_of(messages, RunReport)
        skipped = last_of(messages, ComponentCode)
        tried = {change_key(a.target, a.knobs, a.fidelity) for a in store.history()
                 if a.knobs or a.fidelity == "final"} | set(self._sent)
        known = {c: get_knobs(code) for c, code in incumbent_files(store).items()}
        context = {
            "history": self._history(),
            "attempts": len(store.history()),
            "best_val_accuracy": store.best_val_accuracy(),
            "best_report": best_report(store.best_metrics()),
            "last_report": last.model_dump(exclude={"log_tail"}) if isinstance(last, RunReport) else {},
            "best_knobs": known,
            "tried": sorted(tried),
            "profile": ctx.profile,
            "environment": ctx.environment(),
            "description": ctx.description,
        }
        if isinstance(skipped, ComponentCode) and skipped.phase == "skip":
            context["note"] = f"the last change could not be made ({skipped.change}); choose another"
        feedback, author = await self.ask(context, lambda text: _parse(text, known), cancellation_token)
        if feedback is None:
            feedback = AnalystFeedback(target="training_engineer", diagnosis="no usable analysis from the backend",
                                       change="lower the learning rate by a third", expected_effect="steadier training",
                                       knobs={"LR": 0.002})
        self._sent.append(change_key(feedback.target, dict(feedback.knobs), feedback.fidelity))
        return feedback
