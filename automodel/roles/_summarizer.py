"""The Summarizer: each candidate becomes a short, faithful history entry."""

from __future__ import annotations

from collections.abc import Sequence

from autogen_agentchat.messages import BaseChatMessage
from autogen_core import CancellationToken

from automodel.experts import get_knobs, summarize
from automodel.interfaces import COMPONENT_FILES
from automodel.messages import HistoryEntry, RunReport
from automodel.roles._base import ReplyError, RoleAgent, last_of

__all__ = ["SummarizerAgent"]

MAX_SUMMARY_CHARS = 900


def _parse(text: str) -> str:
    text = text.strip()
    if "```" in text:
        raise ReplyError("reply with plain sentences, no code blocks")
    return text[:MAX_SUMMARY_CHARS]


class SummarizerAgent(RoleAgent):
    """Compresses each candidate (settings + run report) into a few sentences."""

    component_provider_override = "automodel.roles.SummarizerAgent"
    role = "summarizer"
    summary = "Summarizer: compresses each candidate and its outcome into a short history entry."
    output_types = (HistoryEntry,)

    async def act(self, messages: Sequence[BaseChatMessage], cancellation_token: CancellationToken) -> HistoryEntry:
        report = last_of(messages, RunReport)
        assert isinstance(report, RunReport), "the Summarizer speaks after a run report"
        workdir = self.ctx.store.iteration_dir(report.iteration)
        knobs = {c: get_knobs((workdir / f).read_text()) if (workdir / f).is_file() else {}
                 for c, f in COMPONENT_FILES.items()}
        context = {"report": report.model_dump(exclude={"log_tail"}), "knobs": knobs}
        text, _author = await self.ask(context, _parse, cancellation_token)
        if text is None:  # the rules never fail; an account of the attempt is never lost
            text = summarize(context)
        entry = HistoryEntry(iteration=report.iteration, target=report.target, change=report.change,
                             status=report.status, val_accuracy=report.val_accuracy,
                             best_val_accuracy=report.best_val_accuracy, summary=text)
        self.ctx.store.add_summary(entry.model_dump())
        return entry
