"""How a run spends its clock: explore cheap, exploit long, leave no idle tail.

The plan is computed, not configured twice: from the settings (:class:`RunSettings`),
the time already spent and the attempts recorded so far (their measured overhead), it
answers three questions the team asks at every step: how many training seconds the
next candidate gets, whether the final (long) training of the best configuration is due,
and whether the run must stop now (a typed :class:`StopReason`).

``budgeted`` (the default): exploration candidates get a short share each (a low
fidelity: fewer epochs), ``final_share`` of the budget is kept for training the best
configuration long, and the last candidate gets whatever is left. ``paper``: the loop of
the paper, equal shares, every attempt from scratch.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel

from automodel.settings import RunSettings

__all__ = ["EXHAUSTED_REPEATS", "FINALIZE_RESERVE_S", "PAPER_ATTEMPTS", "BudgetPlan", "Fidelity", "StopReason", "budget_use", "describe_settings"]

Fidelity = Literal["explore", "final"]

PAPER_ATTEMPTS = 7
"""Attempts the ``paper`` strategy divides the budget into when ``--iterations`` is not given."""

FINALIZE_RESERVE_S = 10.0
"""Seconds kept at the end for predicting and scoring the test split of the best candidate."""
EXHAUSTED_REPEATS = 2
"""Unchanged final-phase retrains in a row without gain after which the run stops (kind "exhausted")."""


class StopReason(BaseModel):
    """Why the team stopped (typed, so nobody matches strings)."""

    kind: Literal["time", "attempts", "target", "tokens", "interrupted", "messages", "paused", "exhausted"]
    message: str

    @property
    def pauses_only(self) -> bool:
        """True for the pause after each attempt (the run continues)."""
        return self.kind == "paused"


@dataclass
class BudgetPlan:
    """The budget arithmetic of one run at one moment.

    Args:
        settings: the run's settings.
        elapsed_s: seconds spent so far over all sessions.
        history: the attempts recorded so far (``history.jsonl`` lines as dicts).
    """

    settings: RunSettings
    elapsed_s: float
    history: Sequence[dict[str, Any]]

    @property
    def remaining_s(self) -> float:
        return self.settings.time_budget_s - self.elapsed_s

    def overhead_s(self) -> float:
        """Seconds an attempt costs besides training: measured from the attempts so far.

        The median of (attempt wall clock - training - feature extraction seconds) over the
        last five attempts that recorded them (extraction is paid once per feature set, so it
        is not an overhead of the next attempt); the configured estimate until there are any.
        """
        measured = [float(a["wall_s"]) - float(a.get("train_s") or 0.0) - float(a.get("extract_s") or 0.0)
                    for a in self.history[-5:] if a.get("wall_s") is not None]
        measured = [m for m in measured if m >= 0]
        return statistics.median(measured) if measured else self.settings.candidate_overhead_s

    def train_floor_s(self) -> float:
        """The fewest training seconds worth one more attempt.

        ``min_candidate_s``, except after a head on cached features (the features are paid
        for; a head converges in seconds): then what that head's training took, if less.
        """
        floor = self.settings.min_candidate_s
        last = self.history[-1] if self.history else None
        if last and last.get("features") and last.get("train_s") and last.get("status") in ("improved", "discarded"):
            floor = min(floor, max(1.0, float(last["train_s"])))
        return floor

    def attempts_made(self) -> int:
        return len(self.history)

    def explore_budget_s(self) -> float:
        """Training seconds of one exploration candidate (before the end-of-budget clamp)."""
        s = self.settings
        if s.candidate_budget_s is not None:
            return s.candidate_budget_s
        if s.strategy == "paper":
            attempts = s.max_attempts or PAPER_ATTEMPTS
            return max(s.min_candidate_s, 0.8 * s.time_budget_s / attempts - s.candidate_overhead_s)
        # A handful of cheap looks before the final phase: an eighth of the budget each,
        # at least enough for a few epochs of a small model, at most two minutes.
        return max(2 * s.min_candidate_s, min(120.0, s.time_budget_s / 8))

    def final_reserve_s(self) -> float:
        """Seconds kept for the final training phase (0 for the paper strategy)."""
        s = self.settings
        return 0.0 if s.strategy == "paper" else s.final_share * s.time_budget_s

    def usable_s(self) -> float:
        """Seconds left for attempts: the remaining budget less the final scoring."""
        return self.remaining_s - FINALIZE_RESERVE_S

    def final_due(self) -> bool:
        """True when exploration has used its share: the next attempt should be the final one."""
        if self.settings.strategy == "paper":
            return False
        return self.usable_s() <= self.final_reserve_s() + self.overhead_s()

    def candidate_budget_s(self, fidelity: Fidelity = "explore") -> float:
        """Training seconds for the next candidate; the last one gets all that is left."""
        left = self.usable_s() - self.overhead_s()
        if fidelity == "final":
            return max(self.train_floor_s(), left)
        share = self.explore_budget_s()
        if self.settings.strategy == "budgeted" and not self.final_due():
            # Never eat into the final reserve with exploration.
            share = min(share, max(self.settings.min_candidate_s, left - self.final_reserve_s()))
        # The last candidate gets what is left: no idle tail smaller than one more candidate
        # (unless the user capped exploration candidates explicitly: the cap holds).
        if self.settings.candidate_budget_s is None and left - share < self.train_floor_s() + self.overhead_s():
            share = left
        floor = self.train_floor_s()
        if self.settings.candidate_budget_s is not None:
            floor = min(floor, self.settings.candidate_budget_s)  # an explicit cap holds, even below the default floor
        return max(floor, min(share, left))

    def stop_reason(self, *, at_boundary: bool, best: float | None, tokens_used: int) -> StopReason | None:
        """Why the run must stop now, or None to go on."""
        s = self.settings
        if self.usable_s() < self.train_floor_s() + self.overhead_s():
            return StopReason(kind="time", message=f"time budget of {s.time_budget_s:.0f}s spent "
                              f"({max(self.remaining_s, 0):.0f}s left, less than one more candidate)")
        if s.token_budget is not None and tokens_used >= s.token_budget:
            return StopReason(kind="tokens", message=f"token budget of {s.token_budget} spent ({tokens_used} used)")
        if at_boundary:
            if s.max_attempts is not None and self.attempts_made() >= s.max_attempts:
                return StopReason(kind="attempts", message=f"{self.attempts_made()} attempts made "
                                  f"(--iterations {s.iterations} after the first)")
            if s.target is not None and best is not None and best >= s.target:
                return StopReason(kind="target", message=f"target validation accuracy {s.target} reached ({best:.4f})")
            repeats = self.futile_repeats()
            if repeats >= EXHAUSTED_REPEATS:
                return StopReason(kind="exhausted", message=(
                    f"the last {repeats} attempts retrained the unchanged best without gain: nothing left to try "
                    f"at this budget ({max(self.remaining_s, 0):.0f}s left unused)"))
        return None

    def futile_repeats(self) -> int:
        """Trailing attempts that retrained the unchanged best (no knob, final phase) and did not improve.

        A head on cached features converges in seconds and a warm-started retrain of the same
        files lands on the same score: once that has happened twice in a row the rest of the
        budget cannot buy anything, and the run ends early instead of repeating it.
        """
        n = 0
        for a in reversed(self.history):
            if a.get("fidelity") == "final" and not a.get("knobs") and a.get("status") != "improved":
                n += 1
            else:
                break
        return n

    def describe(self) -> dict[str, Any]:
        """The plan as the roles' prompts and the report show it."""
        return {
            "strategy": self.settings.strategy,
            "time_budget_s": round(self.settings.time_budget_s, 1),
            "elapsed_s": round(self.elapsed_s, 1),
            "remaining_s": round(self.remaining_s, 1),
            "explore_candidate_s": round(self.explore_budget_s(), 1),
            "final_reserve_s": round(self.final_reserve_s(), 1),
            "overhead_per_attempt_s": round(self.overhead_s(), 1),
            "final_due": self.final_due(),
            "next_candidate_s": round(self.candidate_budget_s("final" if self.final_due() else "explore"), 1),
        }


def budget_use(record: dict[str, Any], history: Sequence[dict[str, Any]], elapsed_s: float, *,
               finalize_s: float | None = None) -> dict[str, Any]:
    """How a run spent its clock, per phase, from ``run.json`` and its history (for final.json and the report).

    ``elapsed_s`` is the run's clock when accounting closes (after the test split is scored, which
    took ``finalize_s`` of it); the idle tail is the budget minus that clock.
    """
    settings = record.get("settings") or {}
    total = float(settings.get("time_budget_s") or 0.0)
    spans: dict[str, list[tuple[float, float]]] = {"explore": [], "final": []}
    untimed: dict[str, float] = {"explore": 0.0, "final": 0.0}
    count: dict[str, int] = {"explore": 0, "final": 0}
    for a in history:
        phase = "final" if a.get("fidelity") == "final" else "explore"
        wall = float(a.get("wall_s") or a.get("seconds") or 0.0)
        if a.get("time") is None:
            untimed[phase] += wall
        else:  # attempts end at "time": parallel candidates' walls overlap and count once
            spans[phase].append((float(a["time"]) - wall, float(a["time"])))
        count[phase] += 1
    by_phase = {phase: untimed[phase] + _covered_s(found) for phase, found in spans.items()}
    return {
        "strategy": settings.get("strategy", "budgeted"),
        "time_budget_s": total,
        "explore_s": round(by_phase["explore"], 1),
        "explore_attempts": count["explore"],
        "final_s": round(by_phase["final"], 1),
        "final_attempts": count["final"],
        "elapsed_s": round(elapsed_s, 1),
        "finalize_s": None if finalize_s is None else round(finalize_s, 1),
        "idle_tail_s": round(max(0.0, total - elapsed_s), 1),
        "idle_tail_share": round(max(0.0, total - elapsed_s) / total, 3) if total else None,
        "stop_kind": record.get("stop_kind"),  # "exhausted": the tail was left because nothing could gain
    }


def _covered_s(spans: list[tuple[float, float]]) -> float:
    """Seconds covered by the (start, end) spans: parallel candidates' overlapping walls count once."""
    total, reach = 0.0, float("-inf")
    for start, end in sorted(spans):
        if end > reach:
            total += end - max(start, reach)
            reach = end
    return total


def describe_settings(record: dict[str, Any]) -> str:
    """One line on the budget settings of a run (``run.json``), for reports."""
    s = record.get("settings") or {}
    if not s:
        return "budget: unknown (run.json has no settings)"
    caps = f", at most {int(s['iterations']) + 1} attempts" if s.get("iterations") is not None else ""
    explore = f"{s['candidate_budget_s']:.0f}s" if s.get("candidate_budget_s") else "planned"
    final = f", final phase {float(s.get('final_share', 0)):.0%}" if s.get("strategy", "budgeted") == "budgeted" else ""
    return f"{float(s.get('time_budget_s', 0)):.0f}s ({s.get('strategy', 'budgeted')}{caps}): exploration candidates {explore}{final}"
