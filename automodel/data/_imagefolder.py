"""ImageFolder trees: ``ROOT/train/<class>/*``, optional ``val/`` and ``test/``, or ``ROOT/<class>/*``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import structlog

from automodel.data._decode import is_image_name
from automodel.data._errors import DataError, SkipReport
from automodel.data._source import (
    DatasetSource,
    Sample,
    SourceInfo,
    SubmissionFormat,
    check_classes,
    register_source,
    sorted_classes,
)

__all__ = ["load_imagefolder"]

log = structlog.get_logger(__name__)

VAL_DIRS = ("val", "valid", "validation")
TEST_DIRS = ("test",)


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def _subdirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _scan_classes(folder: Path, root: Path, skips: SkipReport) -> dict[str, list[Path]]:
    """``<class>/**/<image>`` under ``folder``; non-images and empty classes are counted skips."""
    out: dict[str, list[Path]] = {}
    for sub in _subdirs(folder):
        images: list[Path] = []
        for f in _files(sub):
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


def _find(root: Path, names: tuple[str, ...]) -> Path | None:
    for name in names:
        if (root / name).is_dir():
            return root / name
    return None


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
    train_dir = root / "train" if (root / "train").is_dir() else None
    val_dir = _find(root, VAL_DIRS) if train_dir else None
    test_dir = _find(root, TEST_DIRS) if train_dir else None
    train = _scan_classes(train_dir or root, root, skips)
    classes = sorted_classes(train)
    check_classes(classes, f"ImageFolder {str(train_dir or root)!r}")
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
    base = root / "train" if (root / "train").is_dir() else root
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
