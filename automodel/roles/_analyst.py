"""The Performance Analyst: one diagnosis, one targeted change, for one engineer.

With ``parallel_candidates`` K > 1 it proposes a round of K *different* changes (different
targets or knobs, none already tried): it asks its backend K times, each time with the
changes proposed so far counted as tried, then posts them one at a time (``slot`` 0..K-1 of
K), each to its engineer. Candidates of a killed round that never finished come first.
"""

from __future__ import annotations

import functools
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
from automodel.roles._round import unfinished_round

__all__ = ["AnalystAgent"]

HISTORY_CHARS = 6000
"""How much summarized history the Analyst reads: the newest entries that fit, plus the best."""


def _parse(text: str, known: Mapping[str, Mapping[str, Any]] | None = None) -> AnalystFeedback:
    """The feedback; with ``known`` (component -> its knobs), knobs the target's file does not define, or set
    outside their allowed values (:data:`automodel.interfaces.KNOB_RANGES`), are refused."""
    data = extract_json(text)
    if isinstance(data, dict):  # a round's slots are the role's to set, never the model's
        data = {k: v for k, v in data.items() if k not in ("slot", "of", "rerun")}
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
        "confused_pairs": metrics.get("confused_pairs") or [],
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
        self._queued: list[dict[str, Any]] = []
        """The rest of the current round's proposals, posted one per turn."""

    async def save_state(self) -> Mapping[str, Any]:
        return {"sent": self._sent, "queued": self._queued}

    async def load_state(self, state: Mapping[str, Any]) -> None:
        self._sent = list(state.get("sent", []))
        self._queued = [dict(q) for q in state.get("queued", [])]

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

    def _context(self, messages: Sequence[BaseChatMessage], also_tried: set[str] | None = None
                 ) -> tuple[dict[str, Any], dict[str, dict[str, Any]], set[str]]:
        """What the backend reads, the incumbent's knobs per component, and the changes tried."""
        ctx = self.ctx
        store = ctx.store
        last = last_of(messages, RunReport)
        skipped = last_of(messages, ComponentCode)
        tried = {change_key(a.target, a.knobs, a.fidelity) for a in store.history()
                 if a.knobs or a.fidelity == "final"} | set(self._sent) | (also_tried or set())
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
        return context, known, tried

    async def act(self, messages: Sequence[BaseChatMessage], cancellation_token: CancellationToken) -> AnalystFeedback:
        if self._queued:  # the next change of the round already proposed
            return AnalystFeedback.model_validate(self._queued.pop(0))
        size = self._round_size()
        if size > 1:
            return await self._propose_round(messages, cancellation_token, size)
        context, known, _ = self._context(messages)
        feedback, author = await self.ask(context, lambda text: _parse(text, known), cancellation_token)
        if feedback is None:
            feedback = AnalystFeedback(target="training_engineer", diagnosis="no usable analysis from the backend",
                                       change="lower the learning rate by a third", expected_effect="steadier training",
                                       knobs={"LR": 0.002})
        self._sent.append(change_key(feedback.target, dict(feedback.knobs), feedback.fidelity))
        return feedback

    # --- rounds of parallel candidates ------------------------------------------------------
    def _round_size(self) -> int:
        """K, or fewer when the attempt cap (``--iterations``) leaves fewer attempts."""
        settings = self.ctx.settings
        size = settings.parallel_candidates
        if settings.max_attempts is not None:
            size = min(size, max(1, settings.max_attempts - len(self.ctx.store.history())))
        return size

    async def _propose_round(self, messages: Sequence[BaseChatMessage], cancellation_token: CancellationToken,
                             size: int) -> AnalystFeedback:
        """Up to ``size`` different untried changes; posts the first, queues the rest.

        Candidates of a killed round that never finished come first. A final-phase change
        trains alone (every core, the rest of the budget): it is a round of one, and a
        backend that answers one later in the round ends the round there.
        """
        proposals = unfinished_round(self.ctx.store)[:size]
        if proposals:
            self.note(f"re-running {len(proposals)} candidate(s) of a round the run was killed in: "
                      f"iteration(s) {', '.join(str(p.rerun) for p in proposals)}")
        taken = {change_key(p.target, dict(p.knobs), p.fidelity) for p in proposals}
        while len(proposals) < size:
            context, known, tried = self._context(messages, taken)
            if proposals:
                context["note"] = ("propose a change different from those already proposed for this round "
                                   f"(in tried): {'; '.join(p.change for p in proposals)}")
            feedback, _ = await self.ask(context, functools.partial(_parse_new, known=known, tried=tried),
                                         cancellation_token)
            if feedback is None:
                if not proposals:  # as for a single change: never an empty turn
                    proposals.append(AnalystFeedback(
                        target="training_engineer", diagnosis="no usable analysis from the backend",
                        change="lower the learning rate by a third", expected_effect="steadier training",
                        knobs={"LR": 0.002}))
                break
            if feedback.fidelity == "final":
                if not proposals:
                    proposals.append(feedback)
                break
            proposals.append(feedback)
            taken.add(change_key(feedback.target, dict(feedback.knobs), feedback.fidelity))
        n = len(proposals)
        out = [p.model_copy(update={"slot": i, "of": n}) for i, p in enumerate(proposals)]
        self._sent.extend(change_key(p.target, dict(p.knobs), p.fidelity) for p in out if p.rerun is None)
        self._queued = [p.model_dump(mode="json") for p in out[1:]]
        if n > 1:
            self.note(f"round of {n} candidates: " + "; ".join(f"{p.target}: {p.change}" for p in out))
        return out[0]


def _parse_new(text: str, *, known: Mapping[str, Mapping[str, Any]], tried: set[str]) -> AnalystFeedback:
    """:func:`_parse`, refusing an exploration change already tried or proposed for this round."""
    feedback = _parse(text, known)
    key = change_key(feedback.target, dict(feedback.knobs), feedback.fidelity)
    if feedback.fidelity != "final" and key in tried:
        raise ReplyError(f"the change {key} was already tried or proposed for this round; propose a different "
                         "change (another target, or other knobs or values)")
    return feedback
