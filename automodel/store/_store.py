"""The run directory: the source of truth of a run, written atomically and append-only.

```
OUT/
  run.json        config (secrets excluded), dataset profile, status, timings
  history.jsonl   one line per attempt
  iterations/NNN/ the three component files, log.txt, metrics.json
  best/           the best candidate's components, checkpoint.pt, metrics.json
  draft/          the candidate being assembled (components only)
  final.json      test accuracy of the best, scored once
  submission.csv  when the test set is unlabeled
  team_state.json the AutoGen team's saved state
  summaries.jsonl the Summarizer's history entries
  usage.json      per role: backend, calls, tokens, cost, faults, fallbacks
  model_faults.jsonl one line per model fault (timeout, 429, unusable reply, ...) and the action taken
  data/           the prepared dataset (train/val arrays, unlabeled test images)
  private/        held-out test labels: never given to component code
```
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from automodel.harness import write_json_atomic
from automodel.interfaces import COMPONENT_FILES

__all__ = ["Attempt", "AttemptStatus", "RunStore"]

AttemptStatus = Literal["improved", "discarded", "crashed", "timeout", "invalid"]


class Attempt(BaseModel):
    """One line of ``history.jsonl``."""

    iteration: int
    target: str
    change: str
    status: AttemptStatus
    val_accuracy: float | None = None
    seconds: float = 0.0
    component: str | None = None
    """For failures: the component the error was attributed to."""
    error: str = ""
    best_val_accuracy: float | None = None
    knobs: dict[str, Any] = Field(default_factory=dict)
    """The settings the change applied (for the Analyst's record of what was tried)."""
    time: float = Field(default_factory=time.time)
    fidelity: str = "explore"
    """``explore`` (a short look) or ``final`` (the best configuration trained long)."""
    budget_s: float | None = None
    """Training seconds the candidate was given."""
    train_s: float | None = None
    """Training seconds it used (from its metrics)."""
    wall_s: float | None = None
    """Seconds of the run clock the whole attempt took (agents, extraction, harness)."""
    warm_start: bool = False
    extract_s: float = 0.0
    """Seconds spent extracting pretrained features for this attempt (a one-time cost per feature set)."""
    features: str | None = None
    authors: dict[str, str] = Field(default_factory=dict)
    """Component -> who wrote its code in this attempt (backend and model, offline expert, reference)."""


def _fsync_append(path: Path, line: str) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())


class RunStore:
    """Reads and writes one run directory. Safe to kill at any moment."""

    def __init__(self, root: str | Path):
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self._recover_best()

    # paths
    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def private_dir(self) -> Path:
        return self.root / "private"

    @property
    def best_dir(self) -> Path:
        return self.root / "best"

    @property
    def draft_dir(self) -> Path:
        return self.root / "draft"

    @property
    def history_path(self) -> Path:
        return self.root / "history.jsonl"

    def iteration_dir(self, iteration: int) -> Path:
        return self.root / "iterations" / f"{iteration:03d}"

    # run.json
    def read_run(self) -> dict[str, Any]:
        path = self.root / "run.json"
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}

    def update_run(self, **fields: Any) -> dict[str, Any]:
        """Merge ``fields`` into ``run.json`` (atomically)."""
        run = self.read_run()
        run.update(fields)
        write_json_atomic(self.root / "run.json", run)
        return run

    # history
    def history(self) -> list[Attempt]:
        """Every completed attempt; a torn last line (killed mid-write) is ignored."""
        if not self.history_path.is_file():
            return []
        out = []
        for line in self.history_path.read_text(encoding="utf-8").splitlines():
            try:
                out.append(Attempt.model_validate_json(line))
            except ValueError:
                continue
        return out

    def next_iteration(self) -> int:
        done = self.history()
        return (done[-1].iteration + 1) if done else 1

    def record(self, attempt: Attempt) -> None:
        """Append one attempt to ``history.jsonl`` (fsynced)."""
        _fsync_append(self.history_path, attempt.model_dump_json())

    # best
    def best_metrics(self) -> dict[str, Any] | None:
        path = self.best_dir / "metrics.json"
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None

    def best_val_accuracy(self) -> float | None:
        m = self.best_metrics()
        return float(m["val_accuracy"]) if m else None

    def promote(self, iteration: int) -> None:
        """Make iteration ``iteration`` the best: components, checkpoint and metrics."""
        src = self.iteration_dir(iteration)
        new = self.root / "best.new"
        if new.exists():
            shutil.rmtree(new)
        new.mkdir()
        for name in [*COMPONENT_FILES.values(), "metrics.json"]:
            shutil.copyfile(src / name, new / name)
        if (src / "checkpoint.pt").is_file():
            os.replace(src / "checkpoint.pt", new / "checkpoint.pt")
        (new / "ITERATION").write_text(str(iteration))
        self._swap_best(new)

    def _swap_best(self, new: Path) -> None:
        old = self.root / "best.old"
        if self.best_dir.exists():
            if old.exists():
                shutil.rmtree(old)
            os.replace(self.best_dir, old)
        os.replace(new, self.best_dir)
        if old.exists():
            shutil.rmtree(old)

    def _recover_best(self) -> None:
        """Finish a promotion that a kill interrupted."""
        new, old = self.root / "best.new", self.root / "best.old"
        if not self.best_dir.exists() and old.exists():
            if new.exists() and (new / "ITERATION").exists():
                os.replace(new, self.best_dir)
            else:
                os.replace(old, self.best_dir)
        for leftover in (new, old):
            if leftover.exists():
                shutil.rmtree(leftover)

    def drop_checkpoint(self, iteration: int) -> None:
        """A discarded candidate keeps its code and log, not its weights."""
        (self.iteration_dir(iteration) / "checkpoint.pt").unlink(missing_ok=True)

    # draft
    def reset_draft(self, source: Path | None = None) -> None:
        """Start the next candidate from ``source`` (default: the best)."""
        source = source or self.best_dir
        self.draft_dir.mkdir(parents=True, exist_ok=True)
        for name in COMPONENT_FILES.values():
            if (source / name).is_file():
                write_text_atomic(self.draft_dir / name, (source / name).read_text(encoding="utf-8"))

    def write_component(self, component: str, code: str) -> None:
        self.draft_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(self.draft_dir / COMPONENT_FILES[component], code)

    def read_component(self, component: str, *, best: bool = False) -> str:
        path = (self.best_dir if best else self.draft_dir) / COMPONENT_FILES[component]
        return path.read_text(encoding="utf-8") if path.is_file() else ""

    # usage
    def update_usage(self, role: str, backend: str, update: Callable[[dict[str, Any]], None]) -> None:
        """Apply ``update`` to ``role``'s entry of ``usage.json`` (created on first use), atomically."""
        usage = self.usage()
        entry = usage.setdefault(role, {"backend": backend, "calls": 0, "prompt_tokens": 0, "completion_tokens": 0})
        update(entry)
        write_json_atomic(self.root / "usage.json", usage)

    def add_usage(self, role: str, backend: str, prompt_tokens: int, completion_tokens: int) -> None:
        """Count one model call of ``role`` in ``usage.json``."""

        def count(entry: dict[str, Any]) -> None:
            entry["backend"] = backend
            entry["calls"] += 1
            entry["prompt_tokens"] += int(prompt_tokens)
            entry["completion_tokens"] += int(completion_tokens)

        self.update_usage(role, backend, count)

    def add_fault(self, record: dict[str, Any]) -> None:
        """Append one model fault to ``model_faults.jsonl`` (fsynced)."""
        _fsync_append(self.root / "model_faults.jsonl", json.dumps(record, default=str))

    def usage(self) -> dict[str, Any]:
        path = self.root / "usage.json"
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}

    def add_summary(self, entry: dict[str, Any]) -> None:
        """Append the Summarizer's account of one attempt to ``summaries.jsonl``."""
        _fsync_append(self.root / "summaries.jsonl", json.dumps(entry, default=str))

    # team state
    def save_team_state(self, state: dict[str, Any]) -> None:
        write_json_atomic(self.root / "team_state.json", state)

    def load_team_state(self) -> dict[str, Any] | None:
        path = self.root / "team_state.json"
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
