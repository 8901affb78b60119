"""Errors and skip accounting for the data layer."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import structlog

__all__ = ["DataError", "SkipReport"]

log = structlog.get_logger(__name__)

_LOG_FIRST = 5
"""How many skips of each reason are logged one by one before only counting."""


class DataError(ValueError):
    """A dataset problem the user must fix: the message says what, where and what to do."""


class SkipReport:
    """Counts files left out of a dataset, by reason, and logs the first few of each."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.examples: dict[str, list[str]] = {}

    def add(self, reason: str, where: Path | str, detail: str = "") -> None:
        """Record one skipped item; logs a structlog warning for the first few per reason."""
        self.counts[reason] += 1
        examples = self.examples.setdefault(reason, [])
        if len(examples) < _LOG_FIRST:
            examples.append(str(where))
            log.warning("data.skip", reason=reason, path=str(where), detail=detail)

    def merge(self, other: SkipReport) -> None:
        """Add another report's counts and examples to this one."""
        self.counts.update(other.counts)
        for reason, paths in other.examples.items():
            mine = self.examples.setdefault(reason, [])
            mine.extend(paths[: max(0, _LOG_FIRST - len(mine))])

    def as_dict(self) -> dict[str, int]:
        """Counts by reason, sorted by reason name."""
        return {k: self.counts[k] for k in sorted(self.counts)}

    @property
    def total(self) -> int:
        return sum(self.counts.values())
