"""Seeded stratified splits."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from automodel.data._errors import DataError

__all__ = ["stratified_split", "stratified_subset"]


def stratified_split(
    labels: Sequence[int] | np.ndarray, val_fraction: float = 0.2, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Split indices into (train, val), the same fraction of every class, deterministically.

    Each class with at least 2 samples gives ``round(n * val_fraction)`` samples to val,
    clamped to ``[1, n - 1]``; a class with a single sample stays in train. Indices are
    returned sorted.

    Raises:
        DataError: ``val_fraction`` outside ``(0, 1)``.
    """
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"val_fraction must be in (0, 1), got {val_fraction}; 0.2 is a good default.")
    y = np.asarray(labels)
    rng = np.random.default_rng(seed)
    train: list[np.ndarray] = []
    val: list[np.ndarray] = []
    for cls in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == cls))
        n_val = min(max(round(len(idx) * val_fraction), 1), len(idx) - 1) if len(idx) >= 2 else 0
        val.append(idx[:n_val])
        train.append(idx[n_val:])
    empty = np.empty(0, dtype=np.int64)
    return (
        np.sort(np.concatenate(train or [empty])).astype(np.int64),
        np.sort(np.concatenate(val or [empty])).astype(np.int64),
    )


def stratified_subset(labels: Sequence[int] | np.ndarray, size: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of a seeded subset of ``size`` items with class proportions kept."""
    y = np.asarray(labels)
    if size >= len(y):
        return np.arange(len(y), dtype=np.int64)
    _, keep = stratified_split(y, size / len(y), seed)
    return keep
