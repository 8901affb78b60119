"""The run directory: the source of truth of a run, written atomically and append-only.

```
OUT/
  run.json        config (secrets excluded), dataset profile, status, timings
  history.jsonl   one line per attempt
  promotion.json  only between promoting best/ and writing that attempt's history line (write-ahead record)
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

Durability: every file goes through :mod:`automodel._io` (fsync of the file and its folder).
Promoting a new best is one recoverable step: ``promotion.json`` records the intent first,
then ``best/`` is rebuilt and swapped, then the attempt's history line is appended and the
record removed. Opening the store finishes a step that a kill interrupted, so ``best/``
never names an iteration without a history line or without its folder.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import structlog
from pydantic import BaseModel, Field

from automodel._io import (
    append_line,
    atomic_write_json,
    atomic_write_text,
    durable_replace,
    fsync_path,
    read_jsonl,
)
from automodel.interfaces import COMPONENT_FILES

__all__ = ["Attempt", "AttemptStatus", "RunStore", "write_text_atomic"]

log = structlog.get_logger(__name__)

PROMOTION_FILE = "promotion.json"

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
    confused_pairs: list[dict[str, float | int]] = Field(default_factory=list)
    """The class pairs with the most validation errors between them (trusted scorer; see ``RunReport``)."""
    authors: dict[str, str] = Field(default_factory=dict)
    """Component -> who wrote its code in this attempt (backend and model, offline expert, reference)."""
    started: float | None = None
    """When its training job started (epoch seconds; ``time`` is when it was recorded). The
    candidates of a round of parallel candidates overlap."""


class RunStore:
    """Reads and writes one run directory. Safe to kill at any moment."""

    def __init__(self, root: str | Path):
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.torn_history_lines = 0
        """History lines skipped on the last read (a writer killed mid-line)."""
        self._recover()

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
        atomic_write_json(self.root / "run.json", run)
        return run

    # history
    def history(self) -> list[Attempt]:
        """Every completed attempt; torn lines (a writer killed mid-line) are skipped and counted."""
        attempts, torn = read_jsonl(self.history_path, Attempt.model_validate_json)
        if torn and torn != self.torn_history_lines:
            log.warning("store.history.torn_lines", path=str(self.history_path), skipped=torn)
        self.torn_history_lines = torn
        return attempts

    def next_iteration(self) -> int:
        done = self.history()
        return max(a.iteration for a in done) + 1 if done else 1

    def record(self, attempt: Attempt) -> None:
        """Append one attempt to ``history.jsonl`` (fsynced).

        Either order of the executor's two steps is one recoverable step: an ``improved``
        attempt recorded before its :meth:`promote` writes the promotion record first; one
        recorded after it completes (clears) the record. An iteration already in the history
        (written by a store repair) is not written twice.
        """
        pending = self._pending_promotion()
        done = self._best_iteration() == attempt.iteration
        if attempt.status == "improved" and not done and pending is None:
            self._write_promotion(attempt.iteration)
        if any(a.iteration == attempt.iteration for a in self.history()):
            log.warning("store.record.duplicate", iteration=attempt.iteration)
        else:
            append_line(self.history_path, attempt.model_dump_json())
        if done and pending is not None and pending.get("iteration") == attempt.iteration:
            self._clear_promotion()

    # best
    def best_metrics(self) -> dict[str, Any] | None:
        path = self.best_dir / "metrics.json"
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None

    def best_val_accuracy(self) -> float | None:
        m = self.best_metrics()
        return float(m["val_accuracy"]) if m else None

    @property
    def promotion_path(self) -> Path:
        return self.root / PROMOTION_FILE

    def promote(self, iteration: int) -> None:
        """Make iteration ``iteration`` the best: components, checkpoint and metrics.

        Write-ahead: ``promotion.json`` names the iteration before ``best/`` changes and is
        removed once both ``best/`` and the history line exist (by whichever of this and
        :meth:`record` comes second); a kill in between is repaired when the store is next opened.
        """
        pending = self._pending_promotion()
        if pending is None or pending.get("iteration") != iteration:
            self._write_promotion(iteration)
        self._promote(iteration)
        if any(a.iteration == iteration for a in self.history()):
            self._clear_promotion()

    def _write_promotion(self, iteration: int) -> None:
        atomic_write_json(self.promotion_path, {"iteration": iteration, "time": time.time()})

    def _best_iteration(self) -> int | None:
        try:
            return int((self.best_dir / "ITERATION").read_text().strip())
        except (OSError, ValueError):
            return None

    def _promote(self, iteration: int) -> None:
        """Rebuild ``best.new`` from the iteration folder and swap it in; safe to repeat after a kill."""
        if self._best_iteration() == iteration:
            return
        src = self.iteration_dir(iteration)
        new = self.root / "best.new"
        if new.exists():  # a half-built copy: keep the checkpoint it may have taken from src
            if (new / "checkpoint.pt").is_file() and not (src / "checkpoint.pt").exists():
                durable_replace(new / "checkpoint.pt", src / "checkpoint.pt")
            shutil.rmtree(new)
        new.mkdir()
        for name in [*COMPONENT_FILES.values(), "metrics.json"]:
            shutil.copyfile(src / name, new / name)
            fsync_path(new / name)
        if (src / "checkpoint.pt").is_file():
            durable_replace(src / "checkpoint.pt", new / "checkpoint.pt")
        atomic_write_text(new / "ITERATION", str(iteration))  # last: marks best.new complete
        self._swap_best(new)

    def _swap_best(self, new: Path) -> None:
        old = self.root / "best.old"
        if self.best_dir.exists():
            if old.exists():
                shutil.rmtree(old)
            durable_replace(self.best_dir, old)
        durable_replace(new, self.best_dir)
        if old.exists():
            shutil.rmtree(old)

    def _recover(self) -> None:
        """Finish what a kill interrupted: a best/ swap, then a promotion without its history line."""
        new, old = self.root / "best.new", self.root / "best.old"
        if not self.best_dir.exists() and old.exists():
            if new.exists() and (new / "ITERATION").exists():
                durable_replace(new, self.best_dir)
            else:
                durable_replace(old, self.best_dir)
        if old.exists():
            shutil.rmtree(old)
        pending = self._pending_promotion()
        if pending is not None:
            self._repair_promotion(int(pending["iteration"]))
        elif new.exists():
            shutil.rmtree(new)
        self._check_best_is_last_improved()

    def _check_best_is_last_improved(self) -> None:
        """Safety net without a record: the last ``improved`` line whose folder still has weights is best/."""
        improved = [a.iteration for a in self.history() if a.status == "improved"]
        if not improved or self._best_iteration() == improved[-1]:
            return
        src = self.iteration_dir(improved[-1])
        if (src / "checkpoint.pt").is_file() and (src / "metrics.json").is_file():
            log.warning("store.best.behind_history", best=self._best_iteration(), promoted=improved[-1])
            self._promote(improved[-1])

    def _pending_promotion(self) -> dict[str, Any] | None:
        try:
            record = json.loads(self.promotion_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except ValueError:  # a torn record cannot happen (atomic write); treat it as no promotion
            log.warning("store.promotion.unreadable", path=str(self.promotion_path))
            self._clear_promotion()
            return None
        return record if isinstance(record, dict) and "iteration" in record else None

    def _clear_promotion(self) -> None:
        self.promotion_path.unlink(missing_ok=True)
        fsync_path(self.root)

    def _repair_promotion(self, iteration: int) -> None:
        """Roll a recorded promotion forward: best/ from the iteration, then its history line."""
        src = self.iteration_dir(iteration)
        recorded = any(a.iteration == iteration for a in self.history())
        complete = (src / "metrics.json").is_file() and all(
            (src / n).is_file() for n in COMPONENT_FILES.values()
        )
        if not complete and self._best_iteration() != iteration:
            log.warning(
                "store.promotion.abandoned", iteration=iteration, reason="iteration folder incomplete"
            )
            shutil.rmtree(self.root / "best.new", ignore_errors=True)
            self._clear_promotion()
            return
        self._promote(iteration)
        if not recorded:
            self.record(self._attempt_from_files(iteration))
            log.warning(
                "store.promotion.repaired", iteration=iteration, action="history line written from files"
            )
        self._clear_promotion()

    def _attempt_from_files(self, iteration: int) -> Attempt:
        """The history line of a promoted iteration, rebuilt from its candidate.json and metrics.json."""
        src = self.iteration_dir(iteration)
        metrics = json.loads((self.best_dir / "metrics.json").read_text(encoding="utf-8"))
        try:
            cand = json.loads((src / "candidate.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            cand = {}
        val = float(metrics["val_accuracy"])
        return Attempt(
            iteration=iteration,
            target=str(cand.get("target", "unknown")),
            change=str(cand.get("change", "")),
            status="improved",
            val_accuracy=val,
            seconds=float(metrics.get("total_seconds", 0.0)),
            best_val_accuracy=val,
            knobs=dict(cand.get("knobs", {})),
        )

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
        entry = usage.setdefault(
            role, {"backend": backend, "calls": 0, "prompt_tokens": 0, "completion_tokens": 0}
        )
        update(entry)
        atomic_write_json(self.root / "usage.json", usage)

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
        append_line(self.root / "model_faults.jsonl", json.dumps(record, default=str))

    def usage(self) -> dict[str, Any]:
        path = self.root / "usage.json"
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}

    def add_summary(self, entry: dict[str, Any]) -> None:
        """Append the Summarizer's account of one attempt to ``summaries.jsonl``."""
        append_line(self.root / "summaries.jsonl", json.dumps(entry, default=str))

    # team state
    def save_team_state(self, state: dict[str, Any]) -> None:
        atomic_write_json(self.root / "team_state.json", state)

    def load_team_state(self) -> dict[str, Any] | None:
        path = self.root / "team_state.json"
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def write_text_atomic(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` durably (kept for callers; see :func:`automodel._io.atomic_write_text`)."""
    atomic_write_text(path, text)
