"""ImageFolder trees: ``ROOT/train/<class>/*``, optional ``val/`` and ``test/``, or ``ROOT/<class>/*``.

Split folders are recognised in their usual spellings and cases (``Training/``, ``valid/``,
``dev/``, ``Testing/``, ``test_set/``: see :mod:`automodel.data._layout`). What had to be
assumed (class folders beside a test folder, a lone wrapper folder, a class named like a
split, a class tree one level deeper than expected) is a logged warning that the profile keeps.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import structlog

from automodel.data._decode import is_image_name
from automodel.data._errors import DataError, SkipReport
from automodel.data._layout import (
    deeper_class_trees,
    find_split_dirs,
    split_named_classes,
    split_of,
    warn_layout,
)
from automodel.data._source import (
    DatasetSource,
    Sample,
    SourceInfo,
    SubmissionFormat,
    check_classes,
    register_source,
    sorted_classes,
)
from automodel.data._walk import entry_kind, walk_files

__all__ = ["load_imagefolder"]

log = structlog.get_logger(__name__)


def _subdirs(folder: Path, skips: SkipReport | None = None, root: Path | None = None) -> list[Path]:
    """Non-hidden folders of ``folder``; with ``skips``, symlink loops and dangling links there are counted."""
    out = []
    for p in sorted(folder.iterdir()):
        if p.name.startswith("."):
            continue
        kind = entry_kind(p)
        if kind == "dir":
            out.append(p)
        elif kind != "file" and skips is not None:
            skips.add(kind, p.relative_to(root or folder), "not a readable file or folder")
    return out


def _scan_classes(
    folder: Path, root: Path, skips: SkipReport, exclude: frozenset[Path] = frozenset()
) -> dict[str, list[Path]]:
    """``<class>/**/<image>`` under ``folder``; non-images and empty classes are counted skips."""
    out: dict[str, list[Path]] = {}
    for sub in _subdirs(folder, skips, root):
        if sub in exclude:
            continue
        images: list[Path] = []
        for f in walk_files(sub, root, skips):
            if is_image_name(f):
                images.append(f)
            else:
                skips.add("not_image", f.relative_to(root))
        if images:
            out[sub.name] = images
        else:
            skips.add("empty_class", sub.relative_to(root), "class folder has no image files; ignored")
    for f in sorted(p for p in folder.iterdir() if p.is_file()):
        skips.add("not_image" if not is_image_name(f) else "unlabeled_file", f.relative_to(root))
    return out


def _samples(by_class: dict[str, list[Path]], root: Path) -> list[Sample]:
    return [
        Sample(id=p.relative_to(root).as_posix(), label=cls, path=p)
        for cls, paths in by_class.items()
        for p in paths
    ]


def _unlabeled_test(folder: Path, root: Path, skips: SkipReport) -> list[Sample]:
    files = [f for f in sorted(folder.iterdir()) if f.is_file()]
    images = [f for f in files if is_image_name(f)]
    for f in files:
        if not is_image_name(f):
            skips.add("not_image", f.relative_to(root))
    stems = [f.stem for f in images]
    unique = len(set(stems)) == len(stems)
    return [Sample(id=f.stem if unique else f.name, label=None, path=f) for f in images]


def load_imagefolder(spec: str, **options: Any) -> DatasetSource:
    """Build a source from an ImageFolder tree (see module docstring).

    Raises:
        DataError: missing folder, fewer than two classes, or val/test classes unknown to train.
    """
    if options:
        log.info("data.imagefolder.ignored_options", options=sorted(options))
    root = Path(spec).expanduser()
    if not root.is_dir():
        raise DataError(f"ImageFolder root {str(root)!r} is not a directory; pass the dataset folder.")
    skips = SkipReport()
    warnings: list[str] = []
    base = _unwrap(root, warnings)
    train_dir, val_dir, test_dir, exclude = _split_dirs(base, warnings)
    train = _scan_classes(train_dir, root, skips, exclude)
    classes = sorted_classes(train)
    check_classes(classes, f"ImageFolder {str(train_dir)!r}")
    _check_class_names(train, train_dir, warnings)
    val: list[Sample] | None = None
    if val_dir is not None:
        val_classes = _scan_classes(val_dir, root, skips)
        _check_known(val_classes, classes, val_dir)
        val = _samples(val_classes, root)
    test: list[Sample] = []
    labeled = False
    submission = None
    if test_dir is not None:
        flat = [f for f in test_dir.iterdir() if f.is_file() and is_image_name(f)]
        if flat:
            test = _unlabeled_test(test_dir, root, skips)
            submission = SubmissionFormat(ids=[s.id for s in test])
        else:
            test_classes = _scan_classes(test_dir, root, skips)
            _check_known(test_classes, classes, test_dir)
            test, labeled = _samples(test_classes, root), True
    return DatasetSource(
        kind="imagefolder",
        spec=str(root),
        classes=classes,
        train=_samples(train, root),
        val=val,
        test=test,
        test_labeled=labeled,
        submission=submission,
        skips=skips,
        root=root,
        warnings=warnings,
    )


def _unwrap(root: Path, warnings: list[str]) -> Path:
    """``ROOT/<one folder>/...`` with nothing else beside it: the data is in that folder."""
    subs = _subdirs(root)
    if len(subs) != 1 or split_of(subs[0].name) is not None:
        return root
    if any(f.is_file() and is_image_name(f) for f in root.iterdir()):
        return root
    inner = subs[0]
    inner_subs = _subdirs(inner)
    if find_split_dirs(inner) or len(inner_subs) >= 2:
        warn_layout(
            warnings,
            "data.layout.wrapper_folder",
            f"{str(root)!r} holds a single folder {inner.name!r}; assumed it wraps the dataset and read "
            f"{str(inner)!r} instead (its folders: {[p.name for p in inner_subs][:8]}).",
            root=str(root),
        )
        return inner
    return root


def _split_dirs(base: Path, warnings: list[str]) -> tuple[Path, Path | None, Path | None, frozenset[Path]]:
    """(train folder, val folder, test folder, folders of ``base`` that are not classes)."""
    splits = find_split_dirs(base)
    if "train" in splits:
        return splits["train"], splits.get("val"), splits.get("test"), frozenset()
    if not splits:
        return base, None, None, frozenset()
    others = [p for p in _subdirs(base) if p not in splits.values()]
    names = ", ".join(f"{p.name}/ as {k}" for k, p in sorted(splits.items()))
    if not others:
        raise DataError(
            f"{str(base)!r} has split folders ({names}) but no train folder (train/, training/, ...). "
            "Rename the folder that holds the training images to train/."
        )
    warn_layout(
        warnings,
        "data.layout.classes_beside_splits",
        f"{str(base)!r} has no train folder: assumed its folders {[p.name for p in others][:8]} are the train "
        f"classes and read {names}.",
        root=str(base),
    )
    return base, splits.get("val"), splits.get("test"), frozenset(splits.values())


def _check_class_names(train: dict[str, list[Path]], train_dir: Path, warnings: list[str]) -> None:
    """Warn about class folders that look like a layout mistake (see the module docstring)."""
    named = split_named_classes(list(train))
    if named:
        warn_layout(
            warnings,
            "data.layout.class_named_like_split",
            f"class folder(s) {named} in {str(train_dir)!r} are named like a split; assumed they are classes. "
            "If they are splits, move them next to train/ (ROOT/train, ROOT/val, ROOT/test).",
            classes=named,
        )
    deeper = deeper_class_trees({c: train_dir / c for c in train})
    if deeper:
        shown = "; ".join(f"{c}/ holds {subs[:6]}" for c, subs in list(deeper.items())[:5])
        warn_layout(
            warnings,
            "data.layout.deeper_class_tree",
            f"the class tree in {str(train_dir)!r} is one level deeper than expected ({shown}); assumed the "
            f"top folders {sorted(deeper)[:8]} are the classes, each with its images in subfolders. If the "
            "subfolders are the classes, pass their parent folder instead.",
            classes=sorted(deeper),
        )


def _check_known(found: dict[str, list[Path]], classes: list[str], folder: Path) -> None:
    unknown = sorted(set(found) - set(classes))
    if unknown:
        raise DataError(
            f"{str(folder)!r} has class folders absent from train: {unknown}. "
            f"Train classes are {classes}; rename or remove those folders."
        )


def _detect(spec: str) -> bool:
    root = Path(spec).expanduser()
    if not root.is_dir():
        return False
    base = find_split_dirs(root).get("train", root)
    return any(any(is_image_name(f) for f in sub.rglob("*")) for sub in _subdirs(base))


register_source(
    SourceInfo(
        name="imagefolder",
        description="ROOT/train/<class>/* (+ val/, test/) or ROOT/<class>/*",
        detect=_detect,
        build=load_imagefolder,
        priority=40,
    )
)
