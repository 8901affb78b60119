"""The report's figures as PNG data URIs (matplotlib's object API: no pyplot, no global state)."""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

from automodel.store import Attempt

__all__ = [
    "accuracy_over_attempts",
    "class_counts",
    "confusion_matrix",
    "learning_curves",
    "per_class_accuracy",
    "sample_strip",
    "size_ranges",
]

_STATUS_COLORS = {"improved": "#2a9d4a", "discarded": "#d49a00", "crashed": "#c0392b", "timeout": "#8e44ad",
                  "invalid": "#7f8c8d"}


def _png(fig: Figure) -> str:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _fig(width: float = 6.4, height: float = 3.4) -> Figure:
    fig = Figure(figsize=(width, height))
    fig.set_layout_engine("constrained")
    return fig


def class_counts(classes: Sequence[str], counts: dict[str, dict[str, int]]) -> str:
    """Images per class, train and validation stacked (a histogram of counts past 40 classes)."""
    train = [counts.get("train", {}).get(c, 0) for c in classes]
    val = [counts.get("val", {}).get(c, 0) for c in classes]
    if len(classes) > 40:
        fig = _fig()
        ax = fig.add_subplot()
        totals = [a + b for a, b in zip(train, val, strict=True)]
        ax.hist(totals, bins=min(30, len(set(totals)) or 1), color="#3b6ea8")
        ax.set_xlabel("images per class (train + val)")
        ax.set_ylabel("classes")
        return _png(fig)
    fig = _fig(6.4, max(2.2, 0.28 * len(classes) + 0.8))
    ax = fig.add_subplot()
    pos = np.arange(len(classes))
    ax.barh(pos, train, color="#3b6ea8", label="train")
    ax.barh(pos, val, left=train, color="#9ec1e6", label="validation")
    ax.set_yticks(pos, [str(c)[:24] for c in classes])
    ax.invert_yaxis()
    ax.set_xlabel("images")
    ax.legend(loc="lower right", fontsize=8)
    return _png(fig)


def size_ranges(sizes: dict[str, Any]) -> str:
    """Source image widths and heights: min to max with the median marked."""
    fig = _fig(6.4, 1.9)
    ax = fig.add_subplot()
    for row, dim in enumerate(("width", "height")):
        lo, med, hi = sizes.get(f"min_{dim}", 0), sizes.get(f"median_{dim}", 0), sizes.get(f"max_{dim}", 0)
        ax.plot([lo, hi], [row, row], color="#3b6ea8", linewidth=6, solid_capstyle="butt")
        ax.plot([med], [row], marker="|", markersize=22, color="#c0392b")
        ax.annotate(f"{lo}-{hi}, median {med:g}", (hi, row), xytext=(6, -4), textcoords="offset points", fontsize=8)
    ax.set_yticks([0, 1], ["width", "height"])
    ax.set_ylim(-0.6, 1.6)
    top = max(float(sizes.get("max_width", 1)), float(sizes.get("max_height", 1)), 1.0)
    ax.set_xlim(0, top * 1.45)
    ax.set_xlabel("pixels (source files, before resizing)")
    return _png(fig)


def accuracy_over_attempts(history: Sequence[Attempt]) -> str:
    """Validation accuracy per attempt by status, with the incumbent (best so far) as a step line."""
    fig = _fig()
    ax = fig.add_subplot()
    scored = [a.val_accuracy for a in history if a.val_accuracy is not None]
    floor = min(scored) - 0.05 if scored else 0.0
    for status, color in _STATUS_COLORS.items():
        xs = [a.iteration for a in history if a.status == status]
        ys = [a.val_accuracy if a.val_accuracy is not None else floor for a in history if a.status == status]
        if xs:
            marker = "o" if status in ("improved", "discarded") else "x"
            ax.scatter(xs, ys, color=color, marker=marker, label=status, zorder=3)
    best: float | None = None
    steps_x, steps_y = [], []
    for a in history:
        if a.val_accuracy is not None and (best is None or a.val_accuracy > best):
            best = a.val_accuracy
        if best is not None:
            steps_x.append(a.iteration)
            steps_y.append(best)
    if steps_x:
        ax.step(steps_x, steps_y, where="post", color="#222222", linewidth=1.5, label="incumbent")
    ax.set_xlabel("attempt")
    ax.set_ylabel("validation accuracy")
    if history:
        ax.set_xticks(sorted({a.iteration for a in history})[:: max(1, math.ceil(len(history) / 20))])
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return _png(fig)


def learning_curves(epochs: Sequence[dict[str, Any]]) -> str:
    """Train/validation loss and validation accuracy per epoch of the best candidate."""
    fig = _fig(6.4, 3.0)
    ax_loss, ax_acc = fig.subplots(1, 2)
    xs = [int(e.get("epoch", i + 1)) for i, e in enumerate(epochs)]
    for key, color in (("train_loss", "#3b6ea8"), ("val_loss", "#d49a00")):
        ys = [e.get(key) for e in epochs]
        if any(y is not None for y in ys):
            ax_loss.plot(xs, [float("nan") if y is None else y for y in ys], marker="o", color=color,
                         label=key.replace("_", " "))
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("loss")
    ax_loss.legend(fontsize=8)
    ax_loss.grid(alpha=0.3)
    ax_acc.plot(xs, [e.get("val_accuracy", float("nan")) for e in epochs], marker="o", color="#2a9d4a")
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel("validation accuracy")
    ax_acc.grid(alpha=0.3)
    return _png(fig)


def confusion_matrix(matrix: Sequence[Sequence[int]], classes: Sequence[str]) -> str:
    """Counts, rows true class, columns predicted; numbers written in when the matrix is small."""
    n = len(classes)
    side = min(7.0, max(3.2, 0.38 * n + 1.5))
    fig = _fig(side, side)
    ax = fig.add_subplot()
    arr = np.asarray(matrix, dtype=float)
    ax.imshow(arr, cmap="Blues")
    if n <= 20:
        ax.set_xticks(range(n), [str(c)[:10] for c in classes], rotation=90 if n > 8 else 0, fontsize=8)
        ax.set_yticks(range(n), [str(c)[:16] for c in classes], fontsize=8)
        top = arr.max() or 1.0
        for i in range(n):
            for j in range(n):
                if arr[i, j]:
                    ax.text(j, i, f"{int(arr[i, j])}", ha="center", va="center", fontsize=7,
                            color="white" if arr[i, j] > top / 2 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    return _png(fig)


def per_class_accuracy(values: dict[str, float]) -> str:
    """Accuracy per class, worst first."""
    items = sorted(values.items(), key=lambda kv: kv[1])[:40]
    fig = _fig(6.4, max(2.0, 0.26 * len(items) + 0.8))
    ax = fig.add_subplot()
    ax.barh(range(len(items)), [v for _, v in items], color="#3b6ea8")
    ax.set_yticks(range(len(items)), [k[:24] for k, _ in items], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("accuracy")
    ax.grid(axis="x", alpha=0.3)
    return _png(fig)


def sample_strip(images: np.ndarray, *, cell: int = 56) -> str:
    """A row of images ``(n, S, S[, C])`` uint8, each scaled to ``cell`` pixels, as one PNG."""
    tiles = []
    for img in images:
        arr = np.asarray(img, dtype=np.uint8)
        if arr.ndim == 3 and arr.shape[-1] == 1:
            arr = arr[..., 0]
        pil = Image.fromarray(arr).convert("RGB").resize((cell, cell), Image.Resampling.NEAREST
                                                         if arr.shape[0] < cell else Image.Resampling.BILINEAR)
        tiles.append(pil)
    strip = Image.new("RGB", (max(1, len(tiles)) * (cell + 2), cell), "white")
    for i, tile in enumerate(tiles):
        strip.paste(tile, (i * (cell + 2), 0))
    buf = io.BytesIO()
    strip.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
