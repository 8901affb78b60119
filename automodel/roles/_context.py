"""What every role of one run shares: the run directory, the data, the budgets, the runner.

Roles hold only the path of the run directory in their config (so a team dumps to JSON
and loads back); the context is opened from ``run.json`` on first use and cached per path.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from automodel.data import PreparedData
from automodel.experts import get_knobs
from automodel.harness import CandidateRunner
from automodel.interfaces import COMPONENTS, PretrainedInfo
from automodel.store import RunStore

__all__ = ["RunContext", "open_context"]

_CONTEXTS: dict[str, RunContext] = {}


@dataclass
class RunContext:
    """One run's shared state, read from ``run.json``."""

    store: RunStore
    run: dict[str, Any]
    on_event: list[Callable[[dict[str, Any]], None]] = field(default_factory=list)
    """Live harness events (epochs, progress) go to these callbacks."""
    session_start: float = field(default_factory=time.time)

    @property
    def budget(self) -> dict[str, Any]:
        return dict(self.run.get("budget", {}))

    @property
    def profile(self) -> dict[str, Any]:
        return dict(self.run.get("profile", {}))

    @property
    def description(self) -> str:
        return str(self.run.get("description", ""))

    def environment(self) -> dict[str, Any]:
        env = dict(self.run.get("environment", {}))
        env["candidate_budget_s"] = self.candidate_budget_s()
        return env

    def elapsed_s(self) -> float:
        """Seconds spent on this run, over all its sessions (a resumed run keeps counting)."""
        return float(self.run.get("elapsed_before_s", 0.0)) + (time.time() - self.session_start)

    def remaining_s(self) -> float:
        return float(self.budget.get("time_budget_s", 1e9)) - self.elapsed_s()

    def candidate_budget_s(self) -> float:
        """Training seconds for the next candidate: the configured share, less near the end."""
        share = float(self.budget.get("candidate_budget_s", 60.0))
        overhead = float(self.budget.get("candidate_overhead_s", 25.0))
        return max(5.0, min(share, self.remaining_s() - overhead))

    def runner(self) -> CandidateRunner:
        env = self.run.get("environment", {})
        pretrained = PretrainedInfo(
            hub_available=bool(env.get("pretrained", {}).get("hub")), local=dict(self.run.get("local_weights", {}))
        )
        return CandidateRunner(
            self.store.data_dir,
            pretrained=pretrained,
            forbidden_paths=[Path(p) for p in self.run.get("held_out", [])],
            device=str(env.get("device", "cpu")),
            description=self.description,
            memory_limit_mb=self.budget.get("memory_limit_mb"),
            max_epochs=self.budget.get("max_epochs"),
            threads=int(self.budget.get("threads") or 0),
            executor=self.budget.get("executor"),
            grace_s=max(45.0, 0.5 * self.candidate_budget_s()),
        )

    def data(self) -> PreparedData:
        return PreparedData.load(self.store.data_dir)

    def knobs(self, *, best: bool = True) -> dict[str, dict[str, Any]]:
        return {c: get_knobs(self.store.read_component(c, best=best)) for c in COMPONENTS}

    def summaries(self) -> list[dict[str, Any]]:
        path = self.store.root / "summaries.jsonl"
        if not path.is_file():
            return []
        out = []
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out

    def emit(self, event: dict[str, Any]) -> None:
        for callback in list(self.on_event):
            callback(event)


def open_context(run_dir: str | Path) -> RunContext:
    """The shared context of the run in ``run_dir`` (opened once per process)."""
    key = str(Path(run_dir).resolve())
    ctx = _CONTEXTS.get(key)
    if ctx is None:
        store = RunStore(key)
        run = store.read_run()
        if not run:
            raise FileNotFoundError(
                f"{key}/run.json does not exist: create the run with automodel.run.prepare_run (or `automodel run`) first"
            )
        ctx = RunContext(store=store, run=run)
        _CONTEXTS[key] = ctx
    return ctx


def forget_context(run_dir: str | Path) -> None:
    """Drop the cached context (after run.json changed on disk)."""
    _CONTEXTS.pop(str(Path(run_dir).resolve()), None)
