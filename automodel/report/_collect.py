"""Everything the report shows, read from the run directory alone, tolerant of a run cut short.

A run killed at any moment leaves some files missing or a torn last line in a ``.jsonl``;
each reader here returns what is there (``None`` or empty) and notes what is missing, so
the report of an unfinished or crashed run still builds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from automodel.data import DataError, PreparedData
from automodel.experts import EXPERT_NAME
from automodel.interfaces import COMPONENT_FILES
from automodel.store import Attempt

__all__ = ["RunView", "YieldCount", "authorship", "load_run_view", "yield_count"]

NOT_LLM = {EXPERT_NAME: "expert", "reference": "reference", "incumbent": "incumbent", "unchanged": "incumbent",
           "": "unknown"}
"""Authors that are not a model backend, and the kind each counts as."""


def authorship(attempt: Attempt) -> str:
    """Who wrote what an attempt changed or repaired: ``llm`` (every changed component by a model backend),
    ``expert`` (the offline expert wrote any of it), ``reference``, ``incumbent`` (nothing changed) or ``unknown``
    (a history line without authors)."""
    changed = {c: a for c, a in attempt.authors.items() if a != "incumbent"}
    if not attempt.authors:
        return "unknown"
    if not changed:
        return "incumbent"
    kinds = {NOT_LLM.get(a, "llm") for a in changed.values()}
    for kind in ("expert", "reference", "unknown", "incumbent"):
        if kind in kinds:
            return kind
    return "llm"


@dataclass(frozen=True)
class YieldCount:
    """The honest yield: valid attempts whose changed code a model backend wrote, and the takeovers apart."""

    attempts: int
    valid: int
    llm_attempts: int
    llm_valid: int
    expert_attempts: int
    expert_valid: int
    other_attempts: int
    """Reference, incumbent re-trains, lines without authors."""

    @property
    def llm_yield(self) -> float:
        """Valid LLM-authored attempts over all attempts (takeovers count as misses)."""
        return self.llm_valid / max(self.attempts, 1)

    def describe(self) -> str:
        return (f"attempts: {self.attempts}; valid with LLM-authored code: {self.llm_valid} "
                f"(yield {self.llm_yield:.0%}); expert takeovers: {self.expert_attempts} ({self.expert_valid} valid); "
                f"reference, incumbent or unattributed: {self.other_attempts}; valid in all: {self.valid}")


def yield_count(history: list[Attempt]) -> YieldCount:
    """Count ``history`` by :func:`authorship`."""
    kinds = [(authorship(a), a.val_accuracy is not None) for a in history]
    return YieldCount(
        attempts=len(kinds), valid=sum(v for _, v in kinds),
        llm_attempts=sum(k == "llm" for k, _ in kinds), llm_valid=sum(k == "llm" and v for k, v in kinds),
        expert_attempts=sum(k == "expert" for k, _ in kinds), expert_valid=sum(k == "expert" and v for k, v in kinds),
        other_attempts=sum(k not in ("llm", "expert") for k, _ in kinds),
    )

SAMPLES_PER_CLASS = 8
MAX_SAMPLE_CLASSES = 24


@dataclass
class RunView:
    """A read-only picture of one run directory."""

    root: Path
    run: dict[str, Any]
    history: list[Attempt]
    final: dict[str, Any]
    usage: dict[str, Any]
    faults: list[dict[str, Any]]
    summaries: dict[int, str]
    best_metrics: dict[str, Any] | None
    best_iteration: int | None
    best_code: dict[str, str]
    meta: dict[str, Any] | None
    """``data/meta.json`` of the prepared cache (classes, counts, profile)."""
    samples: dict[str, np.ndarray] = field(default_factory=dict)
    """Class name -> up to ``SAMPLES_PER_CLASS`` training images ``(n, S, S, C)`` uint8."""
    confusion: list[list[int]] | None = None
    """Test confusion matrix (rows: true class, columns: predicted), when the final scoring allows."""
    notes: list[str] = field(default_factory=list)
    """What could not be read, for the report to say so."""
    skip_examples: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    """Reason -> (path, detail) of the first skipped files, from the ``data.skip`` events of ``run.log``."""

    @property
    def classes(self) -> list[str]:
        if self.meta:
            return list(self.meta.get("classes", []))
        return list(self.run.get("profile", {}).get("class_names", []))

    @property
    def profile(self) -> dict[str, Any]:
        if self.meta and self.meta.get("profile"):
            return dict(self.meta["profile"])
        return dict(self.run.get("profile", {}))

    @property
    def status(self) -> str:
        """``done`` / ``stopped`` as recorded, else ``unfinished`` (a run that never recorded its end)."""
        status = str(self.run.get("status", ""))
        if status == "running" and not self.final:
            return "unfinished (no final.json: still running, killed or crashed)"
        return status or "unknown"


def _read_json(path: Path, notes: list[str]) -> Any:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        notes.append(f"{path.name} could not be read ({exc}); left out.")
        return None


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            item = json.loads(line)
        except ValueError:
            continue  # a torn last line of a killed run
        if isinstance(item, dict):
            out.append(item)
    return out


def _skip_examples(run_log: Path, per_reason: int = 5) -> dict[str, list[tuple[str, str]]]:
    out: dict[str, list[tuple[str, str]]] = {}
    for item in _read_jsonl(run_log):
        if item.get("event") == "data.skip":
            examples = out.setdefault(str(item.get("reason", "?")), [])
            entry = (str(item.get("path", "")), str(item.get("detail", "")))
            if len(examples) < per_reason and entry not in examples:
                examples.append(entry)
    return out


def _history(path: Path) -> list[Attempt]:
    out = []
    for item in _read_jsonl(path):
        try:
            out.append(Attempt.model_validate(item))
        except ValueError:
            continue
    return out


def _samples(data_dir: Path, classes: list[str], notes: list[str]) -> dict[str, np.ndarray]:
    """A few training images per class from the prepared cache (train split only)."""
    try:
        data = PreparedData.load(data_dir)
        x, y = data.arrays("train")
    except (DataError, OSError, ValueError, KeyError) as exc:
        notes.append(f"sample images not available: the prepared data in {data_dir} cannot be read ({exc}).")
        return {}
    if y is None:
        return {}
    out: dict[str, np.ndarray] = {}
    y_arr = np.asarray(y)
    for k, name in enumerate(classes[:MAX_SAMPLE_CLASSES]):
        idx = np.flatnonzero(y_arr == k)[:SAMPLES_PER_CLASS]
        if len(idx):
            out[name] = np.asarray(x[idx])
    if len(classes) > MAX_SAMPLE_CLASSES:
        notes.append(f"sample images shown for the first {MAX_SAMPLE_CLASSES} of {len(classes)} classes.")
    return out


def _confusion(root: Path, num_classes: int) -> list[list[int]] | None:
    """Test confusion matrix from the final predictions and the labels scored once at the end."""
    preds = _read_json(root / "final" / "predictions.json", [])
    labels = _read_json(root / "private" / "test_labels.json", [])
    if not isinstance(preds, dict) or not isinstance(labels, dict) or num_classes < 2:
        return None
    pred, target = preds.get("pred"), labels.get("targets")
    if not isinstance(pred, list) or not isinstance(target, list) or len(pred) != len(target) or not pred:
        return None
    matrix = [[0] * num_classes for _ in range(num_classes)]
    for p, t in zip(pred, target, strict=True):
        if 0 <= int(t) < num_classes and 0 <= int(p) < num_classes:
            matrix[int(t)][int(p)] += 1
    return matrix


def load_run_view(root: str | Path, *, with_samples: bool = True) -> RunView:
    """Read a run directory for the report.

    Raises:
        FileNotFoundError: ``root`` holds neither ``run.json`` nor ``history.jsonl``.
    """
    root = Path(root).expanduser().resolve()
    if not (root / "run.json").is_file() and not (root / "history.jsonl").is_file():
        raise FileNotFoundError(
            f"{root} is not a run directory (no run.json or history.jsonl); pass the --out folder of `automodel run`."
        )
    notes: list[str] = []
    run = _read_json(root / "run.json", notes) or {}
    final = _read_json(root / "final.json", notes) or {}
    usage = _read_json(root / "usage.json", notes) or {}
    meta = _read_json(root / "data" / "meta.json", notes)
    best_dir = root / "best"  # read only: a running run may be swapping it, never "recover" it from here
    best_metrics = _read_json(best_dir / "metrics.json", notes)
    best_iteration = None
    best_code: dict[str, str] = {}
    try:
        best_iteration = int((best_dir / "ITERATION").read_text().strip() or 0) or None
        for name in COMPONENT_FILES.values():
            best_code[name] = (best_dir / name).read_text(encoding="utf-8")
    except (OSError, ValueError):
        if best_metrics is not None:
            notes.append("best/ changed while it was read (the run is promoting a candidate); rebuild the report.")
    summaries = {int(s["iteration"]): str(s.get("summary", "")) for s in _read_jsonl(root / "summaries.jsonl")
                 if isinstance(s.get("iteration"), int)}
    view = RunView(
        root=root,
        run=run,
        history=_history(root / "history.jsonl"),
        final=final,
        usage=usage,
        faults=_read_jsonl(root / "model_faults.jsonl"),
        summaries=summaries,
        best_metrics=best_metrics,
        best_iteration=best_iteration,
        best_code=best_code,
        meta=meta,
        notes=notes,
        skip_examples=_skip_examples(root / "run.log"),
    )
    if with_samples and meta is not None:
        view.samples = _samples(root / "data", view.classes, notes)
    elif meta is None:
        notes.append("the prepared data (data/meta.json) is missing: no sample images or class counts from it.")
    if "test_accuracy" in final:  # the test labels were scored once already; nothing is learned from them here
        view.confusion = _confusion(root, len(view.classes))
    return view
