"""What every dataset source resolves to, and the registry of source kinds."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel

from automodel.data._errors import DataError, SkipReport

__all__ = [
    "DatasetSource",
    "cache_dir",
    "check_classes",
    "Sample",
    "SourceInfo",
    "SubmissionFormat",
    "class_sort_key",
    "list_sources",
    "register_source",
    "resolve_source",
    "sorted_classes",
]

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Sample:
    """One image: a file (``path``) or row ``index`` of ``DatasetSource.arrays[split]``."""

    id: str
    label: str | None
    path: Path | None = None
    index: int = -1
    split: str = ""


class SubmissionFormat(BaseModel):
    """How predictions on an unlabeled test set are written (a Kaggle ``submission.csv``)."""

    id_col: str = "id"
    label_col: str = "label"
    ids: list[str]
    """Every id, in the order the submission must list them."""
    label_as: str = "class_name"
    sample_path: str | None = None
    """The sample submission the format was read from (``automodel.submission`` copies its exact layout)."""


@dataclass
class DatasetSource:
    """A dataset resolved to labelled samples per split, before any decoding.

    ``val`` is ``None`` when the dataset has no validation split of its own (a seeded
    stratified split is then cut from ``train``). ``test`` labels, when known, are private:
    they go to the harness only, never next to the arrays that component code reads.
    """

    kind: str
    spec: str
    classes: list[str]
    train: list[Sample]
    val: list[Sample] | None = None
    test: list[Sample] = field(default_factory=list)
    test_labeled: bool = False
    submission: SubmissionFormat | None = None
    skips: SkipReport = field(default_factory=SkipReport)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    """Split -> ``(N, H, W[, C])`` uint8 images for in-memory sources (``Sample.index``)."""
    root: Path | None = None
    description: str = ""
    warnings: list[str] = field(default_factory=list)
    """What the loader had to assume about the layout, in sentences (profile and report carry them)."""

    def split(self, name: str) -> list[Sample]:
        """Samples of ``train``, ``val`` or ``test`` (empty list if absent)."""
        if name not in SPLITS:
            raise DataError(f"Unknown split {name!r}; expected one of {', '.join(SPLITS)}.")
        return list(getattr(self, name) or [])


def class_sort_key(name: str) -> tuple[int, float, str]:
    """Numeric class names sort numerically ("2" < "10"), others alphabetically."""
    try:
        return (0, float(name), name)
    except ValueError:
        return (1, 0.0, name)


def sorted_classes(names: Iterable[str]) -> list[str]:
    return sorted(set(names), key=class_sort_key)


def check_classes(classes: list[str], where: str) -> None:
    """Raise if a classification dataset has fewer than two classes."""
    if len(classes) < 2:
        found = f"only {classes[0]!r}" if classes else "none"
        raise DataError(
            f"{where}: found {len(classes)} class(es) ({found}); classification needs at least 2. "
            "Check the folder layout or the label column."
        )


@dataclass(frozen=True)
class SourceInfo:
    """A registered source kind."""

    name: str
    description: str
    detect: Callable[[str], bool]
    """Whether a prefix-less spec belongs to this kind (tried in registration order)."""
    build: Callable[..., DatasetSource]
    """``build(spec, **options) -> DatasetSource``."""
    priority: int = 50
    """Detection order: lower first (specific layouts before generic ones)."""


_REGISTRY: dict[str, SourceInfo] = {}


def register_source(info: SourceInfo) -> SourceInfo:
    """Add a source kind to the registry (later registrations replace same-named ones)."""
    _REGISTRY[info.name] = info
    ordered = sorted(_REGISTRY.values(), key=lambda i: i.priority)
    _REGISTRY.clear()
    _REGISTRY.update((i.name, i) for i in ordered)
    return info


def list_sources() -> list[str]:
    """Names of the registered source kinds, in detection order."""
    return list(_REGISTRY)


_PREFIX = re.compile(r"^([a-z][a-z0-9_-]*):(?!//)(.*)$")


def resolve_source(
    spec: str | Path,
    *,
    id_col: str | None = None,
    label_col: str | None = None,
    **options: Any,
) -> DatasetSource:
    """Resolve a dataset spec to a :class:`DatasetSource`.

    ``spec`` is a path (ImageFolder tree, Kaggle CSV layout, IDX directory), a name
    (``demo``, ``fashion-mnist``, ``CIFAR10``) or ``kind:rest`` to force a kind
    (``torchvision:CIFAR10``, ``kaggle:/data/comp``). See :func:`list_sources`.

    Args:
        spec: what to load.
        id_col, label_col: column names for CSV-labelled layouts (detected when omitted).
        **options: passed to the source kind (e.g. ``max_train``, ``root``, ``answers_dir``).

    Raises:
        DataError: when nothing matches, naming the kinds tried.
    """
    text = str(spec).strip()
    if id_col is not None:
        options["id_col"] = id_col
    if label_col is not None:
        options["label_col"] = label_col
    match = _PREFIX.match(text)
    if match and match.group(1) in _REGISTRY:
        return _REGISTRY[match.group(1)].build(match.group(2), **options)
    for info in _REGISTRY.values():
        if info.detect(text):
            return info.build(text, **options)
    path = Path(text).expanduser()
    where = f"path {str(path)!r} exists but" if path.exists() else f"{text!r} is not an existing path and"
    kinds = "; ".join(f"{i.name}: {i.description}" for i in _REGISTRY.values())
    raise DataError(
        f"Cannot resolve dataset {text!r}: {where} matches no source kind. Known kinds: {kinds}. "
        "Pass a folder in one of these layouts or prefix the spec with a kind, e.g. 'kaggle:/path'."
    )


def cache_dir() -> Path:
    """AutoModel's cache root: ``$AUTOMODEL_CACHE`` or ``~/.cache/automodel``."""
    return Path(os.environ.get("AUTOMODEL_CACHE", "~/.cache/automodel")).expanduser()
