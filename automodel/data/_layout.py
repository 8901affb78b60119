"""Split folders in their usual spellings, and the checks that say what a layout was taken to be.

A dataset shipped as ``Training/`` + ``Testing/`` (or ``train_set/``, ``VALID/``, ``dev/``...) is
a train and a test split, never two classes. :func:`split_of` names the split a folder name
means; :func:`find_split_dirs` finds them in a root. Whatever the loaders had to *assume*
(a class named like a split, a class tree one level deeper than expected) goes through
:func:`warn_layout`: a structlog warning now, and a sentence that the source carries into the
profile (``DatasetProfile.warnings``), ``run.json`` and the report.
"""

from __future__ import annotations

from pathlib import Path

import structlog

from automodel.data._decode import is_image_name

__all__ = [
    "SPLIT_SPELLINGS",
    "deeper_class_trees",
    "find_split_dirs",
    "split_of",
    "split_named_classes",
    "warn_layout",
]

log = structlog.get_logger(__name__)

SPLIT_SPELLINGS: dict[str, tuple[str, ...]] = {
    "train": ("train", "training"),
    "val": ("val", "valid", "validation", "dev", "eval"),
    "test": ("test", "testing"),
}
"""Folder names (case-insensitive) that mean a split, preferred spelling first."""
_SUFFIXES = ("", "_set", "set", "_data", "data", "_split")


def split_of(name: str) -> str | None:
    """``train``, ``val`` or ``test`` when a folder name means that split, else None.

    Case, ``-``/space separators and a ``_set``/``_data`` suffix are ignored:
    ``Training``, ``TRAIN``, ``train_set``, ``Validation``, ``dev``, ``Testing-data``.
    """
    norm = name.strip().lower().replace("-", "_").replace(" ", "_")
    for split, spellings in SPLIT_SPELLINGS.items():
        for word in spellings:
            if any(norm == word + suffix for suffix in _SUFFIXES):
                return split
    return None


def _rank(name: str, split: str) -> tuple[int, str]:
    norm = name.strip().lower()
    spellings = SPLIT_SPELLINGS[split]
    return (spellings.index(norm) if norm in spellings else len(spellings), name)


def find_split_dirs(root: Path) -> dict[str, Path]:
    """The split folders directly under ``root`` (``{"train": root/"Training", ...}``).

    Two folders for one split (``train/`` and ``Training/``) are resolved by spelling
    preference, with a warning naming the one left out.
    """
    found: dict[str, list[Path]] = {}
    if not root.is_dir():
        return {}
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        split = split_of(sub.name)
        if split is not None:
            found.setdefault(split, []).append(sub)
    out: dict[str, Path] = {}
    for split, dirs in found.items():
        dirs.sort(key=lambda p: _rank(p.name, split))
        out[split] = dirs[0]
        if len(dirs) > 1:
            log.warning(
                "data.layout.duplicate_split_dirs",
                split=split,
                used=str(dirs[0]),
                ignored=[str(d) for d in dirs[1:]],
            )
    return out


def split_named_classes(classes: list[str]) -> list[str]:
    """The class names that are spelled like a split folder."""
    return [c for c in classes if split_of(c) is not None]


def deeper_class_trees(class_dirs: dict[str, Path]) -> dict[str, list[str]]:
    """Classes whose folder holds no image itself but two or more subfolders that do.

    That is what a tree one level deeper than expected looks like (``ROOT/<group>/<class>/*``
    read as ``ROOT/<class>/*``): returns ``{class: [its image-holding subfolders]}``.
    """
    out: dict[str, list[str]] = {}
    for name, folder in class_dirs.items():
        try:
            entries = list(folder.iterdir())
        except OSError:
            continue
        if any(p.is_file() and is_image_name(p) for p in entries):
            continue
        subs = sorted(
            p.name
            for p in entries
            if p.is_dir() and not p.name.startswith(".") and any(is_image_name(f) for f in p.rglob("*"))
        )
        if len(subs) >= 2:
            out[name] = subs
    return out


def warn_layout(warnings: list[str], event: str, message: str, **fields: object) -> None:
    """Log ``message`` as a structlog warning and keep it for the profile and report."""
    log.warning(event, message=message, **fields)
    warnings.append(message)
