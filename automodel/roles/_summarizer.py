"""The Summarizer: each candidate becomes a short, faithful history entry."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from typing import Any

from autogen_agentchat.messages import BaseChatMessage
from autogen_core import CancellationToken

from automodel.experts import get_knobs, summarize
from automodel.interfaces import COMPONENT_FILES
from automodel.messages import HistoryEntry, RunReport
from automodel.roles._base import ReplyError, RoleAgent, last_of

__all__ = ["SummarizerAgent"]

MAX_SUMMARY_CHARS = 900


_NUMBER = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?)(\s*%)?(\s+epochs?\b)?")


def _parse(text: str) -> str:
    text = " ".join(text.split())
    if "```" in text:
        raise ReplyError("reply with plain sentences, no code blocks")
    if len(text) > MAX_SUMMARY_CHARS:  # prose of bounded length: cut at the last full sentence that fits
        cut = text[:MAX_SUMMARY_CHARS]
        end = max(cut.rfind(". "), cut.rfind("; "))
        text = cut[: end + 1] if end > MAX_SUMMARY_CHARS // 3 else cut
    return text


def _numbers(value: Any) -> Iterator[float]:
    if isinstance(value, bool):
        return
    if isinstance(value, int | float):
        yield float(value)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _numbers(v)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _numbers(v)
    elif isinstance(value, str):
        for m in _NUMBER.finditer(value):
            yield float(m.group(1))


def unsupported_numbers(summary: str, record: dict[str, Any]) -> list[str]:
    """Numbers in ``summary`` that the attempt's record does not hold: accuracies, losses, seconds (with
    rounding), percentages (as fractions too), and epoch counts (``12 epochs``: the epochs run, or one of them)."""
    report = record.get("report", {})
    known = list(_numbers(record))
    accs = [float(x) for x in (report.get("val_accuracy"), report.get("best_val_accuracy")) if isinstance(x, float)]
    known += [a - b for a in accs for b in accs]  # "up 0.004 on the best"
    epochs = report.get("epochs", []) or []
    epoch_counts = {float(len(epochs))} | {float(e.get("epoch")) for e in epochs if isinstance(e.get("epoch"), int)}
    epoch_counts |= set(_numbers(record.get("knobs", {})))  # "planned 30 epochs" (MAX_EPOCHS)
    bad = []
    for m in _NUMBER.finditer(summary):
        raw, percent, epoch_word = m.group(1), m.group(2), m.group(3)
        v = float(raw)
        if epoch_word:
            if v not in epoch_counts and not (percent or "." in raw):
                bad.append(m.group(0).strip())
            continue
        if "." not in raw and not percent:
            continue  # plain integers: attempt numbers, counts, knob values in prose
        candidates = [v, v / 100] if percent else [v]

        def close(x: float, r: float, digits: int) -> bool:
            return abs(x - r) <= 0.6 * 10 ** -digits + 1e-9 or (abs(r) > 1 and abs(x - r) <= 0.51)

        digits = len(raw.split(".")[1]) if "." in raw else 0
        digits = digits + 2 if percent else digits
        if not any(close(c, r, digits) or close(c, abs(r), digits) for c in candidates for r in known):
            bad.append(m.group(0).strip())
    return bad


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
        text, author = await self.ask(context, _parse, cancellation_token)
        if text is not None and (bad := unsupported_numbers(text, context)):
            # A summary is checked against the record; one that misstates the numbers is rebuilt from it.
            self._fault(author, 0, "unchecked_summary", f"numbers not in the attempt's record: {', '.join(bad[:6])}",
                        "the summary is rebuilt from the record")
            self.note(f"the summary's numbers {', '.join(bad[:6])} are not in the record; rebuilt from the record")
            text = None
        if text is None:  # the rules never fail; an account of the attempt is never lost
            text = summarize(context)
        entry = HistoryEntry(iteration=report.iteration, target=report.target, change=report.change,
                             status=report.status, val_accuracy=report.val_accuracy,
                             best_val_accuracy=report.best_val_accuracy, summary=text)
        self.ctx.store.add_summary(entry.model_dump())
        return entry
