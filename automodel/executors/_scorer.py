"""The trusted scorer: every accuracy that history, promotion, the report and ``final.json`` use.

It runs in the orchestrator's process, never in a candidate's. A train job writes class
log-probabilities for the validation images per epoch and per weights variant (EMA, raw)
with the matching checkpoint; the scorer compares them with the validation labels, which
never leave this side, picks the best (epoch, variant), and deletes the other checkpoints.
Whatever the candidate reports about itself (its ``result.json``, its events) is never a score.

The candidate controls the files it writes, so they are read defensively: the output folder
and each file are opened without following symlinks, only regular files of the expected size
are read, ``np.load`` never unpickles, and the array must be finite with the expected shape.
"""

from __future__ import annotations

import contextlib
import math
import os
import stat
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import structlog

from automodel._io import open_regular

from ._protocol import checkpoint_name, parse_val_name

__all__ = ["CONFUSED_PAIRS_TOP", "EpochScore", "ValidationScorer", "confused_pairs", "read_predictions", "score_log_probs"]

log = structlog.get_logger(__name__)

_VARIANT_ORDER = {"ema": 0, "raw": 1}
_REPORTED_NUMBERS = ("train_seconds", "total_seconds", "images_per_s", "est_step_s", "params", "input_size",
                     "batch_size", "epochs_planned", "warm_start_tensors")
CONFUSED_PAIRS_TOP = 5
"""How many of the most confused class pairs a score keeps."""


@dataclass(frozen=True)
class EpochScore:
    """The trusted score of one epoch's predictions with one weights variant."""

    epoch: int
    variant: str
    accuracy: float
    loss: float
    per_class: tuple[float | None, ...]
    confused: tuple[dict[str, float | int], ...] = ()
    """The most confused class pairs (see :func:`confused_pairs`)."""


def _open_dir(path: Path) -> int:
    return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)


def read_predictions(path: Path, rows: int, classes: int, *, dir_fd: int | None = None) -> np.ndarray | None:
    """A ``(rows, classes)`` finite float array from the ``.npy`` at ``path``, or ``None`` if it is not one.

    Symlinks are not followed (``dir_fd``: read ``path`` relative to that open folder).
    """
    max_bytes = rows * classes * 8 + 4096
    fd = open_regular(path, dir_fd=dir_fd)  # a FIFO planted by the candidate must not hang the scorer
    if fd is None:
        return None
    with os.fdopen(fd, "rb") as f:
        if os.fstat(f.fileno()).st_size > max_bytes:  # a regular file (open_regular): its size is left
            return None
        try:
            array = np.load(f, allow_pickle=False)
        except (ValueError, OSError, EOFError):
            return None
    if not isinstance(array, np.ndarray) or array.shape != (rows, classes) or array.dtype.kind != "f":
        return None
    array = array.astype(np.float64)
    return array if bool(np.isfinite(array).all()) else None


def _log_softmax(scores: np.ndarray) -> np.ndarray:
    shifted = scores - scores.max(axis=1, keepdims=True)
    return np.asarray(shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True)))


def score_log_probs(scores: np.ndarray, labels: np.ndarray, classes: int) -> tuple[float, float, list[float | None]]:
    """Accuracy, mean cross-entropy and per-class accuracy of ``scores`` (logits or log-probabilities)."""
    log_probs = _log_softmax(scores)
    pred = log_probs.argmax(axis=1)
    correct = pred == labels
    accuracy = float(correct.mean()) if len(labels) else 0.0
    loss = float(-log_probs[np.arange(len(labels)), labels].mean()) if len(labels) else math.nan
    per_class = [float(correct[labels == c].mean()) if (labels == c).any() else None for c in range(classes)]
    return accuracy, loss, per_class


def confused_pairs(labels: np.ndarray, predicted: np.ndarray, *, top: int = CONFUSED_PAIRS_TOP
                   ) -> list[dict[str, float | int]]:
    """The ``top`` unordered class pairs with the most validation errors between them, most first.

    Each pair is ``{"a", "b", "errors", "share", "a_as_b", "b_as_a", "images"}``: classes
    ``a < b``; ``a_as_b`` images of class ``a`` predicted as ``b`` and ``b_as_a`` the other
    way; ``errors`` their sum; ``share`` its fraction of all validation errors; ``images`` the
    validation images of the two classes. Pairs without errors are left out (no errors: ``[]``).
    """
    labels = np.asarray(labels, dtype=np.int64)
    predicted = np.asarray(predicted, dtype=np.int64)
    wrong = labels != predicted
    total = int(wrong.sum())
    if not total or top <= 0:
        return []
    # Only the errors are counted (sparse): the cost grows with the errors, not with classes squared.
    truth, guess = labels[wrong], predicted[wrong]
    low, high = np.minimum(truth, guess), np.maximum(truth, guess)
    pairs, inverse, errors = np.unique(np.stack([low, high], axis=1), axis=0, return_inverse=True, return_counts=True)
    a_as_b = np.bincount(inverse.reshape(-1), weights=(truth == low).astype(np.int64), minlength=len(pairs))
    order = np.lexsort((pairs[:, 1], pairs[:, 0], -errors))[:top]  # most errors first, then by class
    counts = np.bincount(labels, minlength=int(pairs.max()) + 1)
    out: list[dict[str, float | int]] = []
    for k in order:
        a, b, n = int(pairs[k, 0]), int(pairs[k, 1]), int(errors[k])
        out.append({"a": a, "b": b, "errors": n, "share": round(n / total, 4), "a_as_b": int(a_as_b[k]),
                    "b_as_a": n - int(a_as_b[k]), "images": int(counts[a] + counts[b])})
    return out


class ValidationScorer:
    """Scores a train job's validation predictions as they appear in ``out_dir``; thread-safe.

    Args:
        out_dir: the job's ``out/`` folder (written by the candidate).
        labels: the validation labels, ``(N,)`` integers (they stay in this process).
        num_classes: columns expected in each predictions file.
    """

    def __init__(self, out_dir: Path, labels: np.ndarray, num_classes: int) -> None:
        self.out_dir = Path(out_dir)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.num_classes = num_classes
        self.scores: dict[tuple[int, str], EpochScore] = {}
        self.rejected: list[str] = []
        self._lock = threading.Lock()

    @property
    def best(self) -> EpochScore | None:
        """The best score so far: highest accuracy, the earliest epoch (then EMA) on ties."""
        best: EpochScore | None = None
        for key in sorted(self.scores, key=lambda k: (k[0], _VARIANT_ORDER.get(k[1], 9))):
            score = self.scores[key]
            if best is None or score.accuracy > best.accuracy:
                best = score
        return best

    def update(self) -> list[EpochScore]:
        """Score predictions not scored yet, delete the checkpoints that can no longer win; returns the new."""
        with self._lock:
            try:
                dir_fd = _open_dir(self.out_dir)
            except OSError:
                return []
            try:
                new = self._score_new(dir_fd)
                self._prune(dir_fd)
            finally:
                os.close(dir_fd)
            return new

    def _score_new(self, dir_fd: int) -> list[EpochScore]:
        new = []
        for name in sorted(os.listdir(dir_fd)):
            key = parse_val_name(name)
            if key is None or key in self.scores or name in self.rejected:
                continue
            array = read_predictions(Path(name), len(self.labels), self.num_classes, dir_fd=dir_fd)
            if array is None:
                self.rejected.append(name)
                log.warning("scorer_rejected_predictions", file=str(self.out_dir / name))
                continue
            accuracy, loss, per_class = score_log_probs(array, self.labels, self.num_classes)
            confused = confused_pairs(self.labels, _log_softmax(array).argmax(axis=1))
            score = EpochScore(key[0], key[1], accuracy, loss, tuple(per_class), tuple(confused))
            self.scores[key] = score
            new.append(score)
        return new

    def _prune(self, dir_fd: int) -> None:
        best = self.best
        for epoch, variant in self.scores:
            if best is not None and (epoch, variant) == (best.epoch, best.variant):
                continue
            with contextlib.suppress(FileNotFoundError):
                os.unlink(checkpoint_name(epoch, variant), dir_fd=dir_fd)

    def take_best_checkpoint(self, dst: Path) -> bool:
        """Move the best checkpoint (a regular file with one link) to ``dst``; whether there was one."""
        best = self.best
        if best is None:
            return False
        with self._lock:
            dir_fd = _open_dir(self.out_dir)
            try:
                name = checkpoint_name(best.epoch, best.variant)
                try:
                    info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
                except FileNotFoundError:
                    return False
                if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
                    log.warning("scorer_rejected_checkpoint", file=str(self.out_dir / name))
                    return False
                os.replace(name, dst, src_dir_fd=dir_fd)
                return True
            finally:
                os.close(dir_fd)

    def metrics(self, report: dict[str, Any], classes: list[str]) -> dict[str, Any] | None:
        """The trusted ``metrics.json``: scores from here, timings copied from the candidate's ``report``.

        ``None`` when no valid validation predictions were written.
        """
        best = self.best
        if best is None:
            return None
        reported = {str(r.get("epoch")): r for r in report.get("history", []) if isinstance(r, dict)}
        history = []
        for epoch in sorted({e for e, _ in self.scores}):
            variants = [s for (e, _), s in self.scores.items() if e == epoch]
            top = max(sorted(variants, key=lambda s: _VARIANT_ORDER.get(s.variant, 9)), key=lambda s: s.accuracy)
            row = reported.get(str(epoch), {})
            record: dict[str, Any] = {
                "epoch": epoch,
                "train_loss": _number(row.get("train_loss")),
                "val_loss": round(top.loss, 5),
                "val_accuracy": round(top.accuracy, 5),
                "lr": _number(row.get("lr")),
                "seconds": _number(row.get("seconds")),
                "steps": _number(row.get("steps")),
            }
            if len(variants) > 1:
                record["weights"] = top.variant
            history.append(record)
        metrics: dict[str, Any] = {
            "val_accuracy": best.accuracy,
            "best_epoch": best.epoch,
            "weights": best.variant,
            "val_loss": None if math.isnan(best.loss) else best.loss,
            "per_class_val_accuracy": list(best.per_class),
            "confused_pairs": [dict(p) for p in best.confused],
            "epochs_run": len(history),
            "history": history,
            "stopped_by_budget": bool(report.get("stopped_by_budget")),
            "device": str(report.get("device", ""))[:40],
            "classes": list(classes),
            "scored_by": "orchestrator",
        }
        for key in _REPORTED_NUMBERS:
            metrics[key] = _number(report.get(key))
        metrics["images_per_s"] = metrics["images_per_s"] or 0.0
        features = report.get("features")
        metrics["features"] = str(features)[:80] if isinstance(features, str) and features else None
        metrics["warm_start_tensors"] = _number(report.get("warm_start_tensors")) or 0
        if self.rejected:
            metrics["rejected_predictions"] = list(self.rejected)
        return metrics


def _number(value: Any) -> int | float | None:
    """A reported number, or ``None`` when it is not a finite number."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, int):
        return value
    return value if math.isfinite(value) else None
