"""The dataset profile: what the Architect reads before designing a pipeline."""

from __future__ import annotations

import statistics
from collections import Counter
from typing import Literal

from pydantic import BaseModel, Field

__all__ = ["DatasetProfile", "SizeStats", "build_profile", "size_stats"]


class SizeStats(BaseModel):
    """Distribution of source image sizes (after EXIF rotation)."""

    min_width: int = 0
    median_width: float = 0.0
    max_width: int = 0
    min_height: int = 0
    median_height: float = 0.0
    max_height: int = 0
    distinct_fraction: float = 0.0
    """Distinct (width, height) pairs / images: 0 ~ all one size, 1 = all different."""


class DatasetProfile(BaseModel):
    """Facts about a dataset, measured on the decoded images.

    ``counts`` holds per-class counts of ``train`` and ``val`` only: nothing derived from
    test labels is recorded here, since the profile is stored next to the arrays.
    """

    source_kind: str
    source: str = ""
    description: str = ""
    num_classes: int
    class_names: list[str]
    split_sizes: dict[str, int]
    counts: dict[str, dict[str, int]]
    imbalance_ratio: float
    """Largest / smallest class count in train+val."""
    sizes: SizeStats
    channels: Literal["gray", "color"]
    """``gray`` when every image's pixels are gray, whatever the file mode."""
    color_fraction: float = 0.0
    modes: dict[str, int] = Field(default_factory=dict)
    """Source image modes (``L``, ``RGB``, ``RGBA``, ``I;16``, ...) -> count."""
    duplicates: dict[str, int] = Field(default_factory=dict)
    """Exact pixel duplicates: ``within_train`` and across splits (``train-val``, ...)."""
    skipped: dict[str, int] = Field(default_factory=dict)
    test_labeled: bool = False
    val_from_folder: bool = False
    stored_size: int | None = None
    tiny_images: int = 0
    """Images whose shorter side is tiny for the stored size (kept, upscaled, and warned about)."""
    warnings: list[str] = Field(default_factory=list)
    """What the data layer assumed or found suspicious, in sentences (layout guesses, tiny images...)."""

    def summary(self) -> str:
        """A short text for humans and language models."""
        sizes = self.sizes
        split = ", ".join(f"{k} {v}" for k, v in self.split_sizes.items())
        train_counts = self.counts.get("train", {})
        shown = list(train_counts.items())[:12]
        per_class = ", ".join(f"{k}: {v}" for k, v in shown) + (" ..." if len(train_counts) > 12 else "")
        lines = [
            f"Dataset ({self.source_kind}{': ' + self.source if self.source else ''}): "
            f"{self.num_classes} classes; {split} images.",
            f"Train per class: {per_class}; imbalance max/min {self.imbalance_ratio:.2f}.",
            f"Images: {self.channels} ({self.color_fraction:.0%} color); width {sizes.min_width}-"
            f"{sizes.max_width} (median {sizes.median_width:g}), height {sizes.min_height}-{sizes.max_height} "
            f"(median {sizes.median_height:g}); {sizes.distinct_fraction:.0%} distinct sizes.",
        ]
        if self.stored_size:
            lines.append(f"Stored as {self.stored_size}x{self.stored_size} squares.")
        lines.append(
            "Test split: "
            + ("labeled (scored once at the end)." if self.test_labeled else "unlabeled or absent.")
        )
        dups = {k: v for k, v in self.duplicates.items() if v}
        if dups:
            lines.append("Exact duplicates: " + ", ".join(f"{k} {v}" for k, v in dups.items()) + ".")
        if self.skipped:
            lines.append("Skipped: " + ", ".join(f"{k} {v}" for k, v in self.skipped.items()) + ".")
        for warning in self.warnings:
            lines.append(f"Warning: {warning}")
        if self.description:
            lines.append(f"Description: {self.description}")
        return "\n".join(lines)


def size_stats(sizes: list[tuple[int, int]]) -> SizeStats:
    if not sizes:
        return SizeStats()
    ws, hs = [w for w, _ in sizes], [h for _, h in sizes]
    return SizeStats(
        min_width=min(ws),
        median_width=float(statistics.median(ws)),
        max_width=max(ws),
        min_height=min(hs),
        median_height=float(statistics.median(hs)),
        max_height=max(hs),
        distinct_fraction=round(len(set(sizes)) / len(sizes), 4),
    )


def _duplicates(digests: dict[str, list[str]]) -> dict[str, int]:
    out: dict[str, int] = {}
    train = digests.get("train", [])
    out["within_train"] = len(train) - len(set(train))
    names = [n for n in ("train", "val", "test") if digests.get(n)]
    for a_i, a in enumerate(names):
        seen = set(digests[a])
        for b in names[a_i + 1 :]:
            out[f"{a}-{b}"] = sum(1 for d in digests[b] if d in seen)
    return out


def build_profile(
    *,
    source_kind: str,
    source: str,
    classes: list[str],
    labels: dict[str, list[str | None]],
    sizes: list[tuple[int, int]],
    modes: list[str],
    grays: list[bool],
    digests: dict[str, list[str]],
    skipped: dict[str, int],
    test_labeled: bool,
    val_from_folder: bool = False,
    stored_size: int | None = None,
    description: str = "",
    warnings: list[str] | None = None,
    tiny_images: int = 0,
) -> DatasetProfile:
    """Assemble a :class:`DatasetProfile` from per-image facts gathered while decoding."""
    counts: dict[str, dict[str, int]] = {}
    for split, labs in labels.items():
        if split == "test":
            continue
        c = Counter(labs)
        counts[split] = {name: c.get(name, 0) for name in classes}
    totals = [counts.get("train", {}).get(k, 0) + counts.get("val", {}).get(k, 0) for k in classes]
    nonzero = [t for t in totals if t > 0]
    imbalance = max(nonzero) / min(nonzero) if nonzero else 0.0
    color = sum(1 for g in grays if not g)
    return DatasetProfile(
        source_kind=source_kind,
        source=source,
        description=description,
        num_classes=len(classes),
        class_names=classes,
        split_sizes={k: len(v) for k, v in labels.items() if v},
        counts=counts,
        imbalance_ratio=round(imbalance, 4),
        sizes=size_stats(sizes),
        channels="color" if color else "gray",
        color_fraction=round(color / len(grays), 4) if grays else 0.0,
        modes=dict(Counter(modes).most_common()),
        duplicates=_duplicates(digests),
        skipped=skipped,
        test_labeled=test_labeled,
        val_from_folder=val_from_folder,
        stored_size=stored_size,
        warnings=list(warnings or []),
        tiny_images=tiny_images,
    )
