"""Kaggle layout: a CSV of ``id,label`` plus an image folder, optional unlabeled test.

Recognised files (first match wins, each overridable by an option):

* labels CSV: ``train.csv``, ``labels.csv``, ``train_labels.csv``, ``trainLabels.csv``, or the
  only other CSV in the root (``labels_csv=``);
* images: ``train/``, ``train_images/``, ``images/``, ``imgs/`` (any case), a train split folder in
  another usual spelling (``Training/``, ``train_set/``), or the root (``images_dir=``);
  ids match a file by relative path, file name, or name without extension;
* unlabeled test: ``sample_submission.csv`` (defines the submission columns and id order),
  else ``test.csv``, else the files of ``test/`` / ``test_images/`` / ``Testing/`` (``test_dir=``);
* ``answers_csv=``: known test labels kept outside the dataset (the bundled demo).
"""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path
from typing import Any

import structlog

from automodel.data._decode import is_image_name
from automodel.data._errors import DataError, SkipReport
from automodel.data._layout import find_split_dirs, warn_layout
from automodel.data._source import (
    DatasetSource,
    Sample,
    SourceInfo,
    SubmissionFormat,
    check_classes,
    register_source,
    sorted_classes,
)
from automodel.data._walk import walk_files

__all__ = ["detect_columns", "load_kaggle", "read_csv"]

log = structlog.get_logger(__name__)

ID_NAMES = (
    "id", "image_id", "imageid", "img_id", "image", "image_name", "img", "file", "filename",
    "file_name", "fname", "path", "filepath", "file_path", "image_path", "name",
)  # fmt: skip
LABEL_NAMES = (
    "label", "labels", "class", "class_name", "classname", "class_id", "target", "category",
    "y", "breed", "species", "diagnosis",
)  # fmt: skip
LABEL_CSVS = ("train.csv", "labels.csv", "train_labels.csv", "trainlabels.csv")
NOT_LABEL_CSVS = ("test.csv", "sample_submission.csv", "samplesubmission.csv", "submission.csv")
IMAGE_DIRS = ("train", "train_images", "images", "imgs", "img", "image")
TEST_DIRS = ("test", "test_images")


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """Header and rows of a CSV (UTF-8, BOM tolerated), values stripped."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            columns = [c.strip() for c in (reader.fieldnames or [])]
            rows = [{k.strip(): (v or "").strip() for k, v in row.items() if k is not None} for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"Cannot read CSV {str(path)!r}: {exc}. Save it as UTF-8 CSV with a header.") from exc
    if not columns:
        raise DataError(f"CSV {str(path)!r} is empty; it needs a header row such as 'id,label'.")
    return columns, rows


def _norm(name: str) -> str:
    return name.strip().lower().replace(" ", "_").replace("-", "_")


def _pick(columns: list[str], wanted: tuple[str, ...], exclude: str | None = None) -> str | None:
    by_norm = {_norm(c): c for c in columns if c != exclude}
    for name in wanted:
        if name in by_norm:
            return by_norm[name]
    return None


def detect_columns(
    columns: list[str], where: Path, *, id_col: str | None, label_col: str | None, need_label: bool = True
) -> tuple[str, str | None]:
    """Choose the id and label columns, or raise listing the columns found."""
    for given, kind in ((id_col, "id_col"), (label_col, "label_col")):
        if given is not None and given not in columns:
            raise DataError(f"{kind}={given!r} is not a column of {str(where)!r}; columns are {columns}.")
    idc = id_col or _pick(columns, ID_NAMES, exclude=label_col)
    labc = label_col or _pick(columns, LABEL_NAMES, exclude=idc)
    if len(columns) == 2 and (idc is None) != (labc is None):
        other = next(c for c in columns if c not in (idc, labc))
        idc, labc = (other, labc) if idc is None else (idc, other)
    if idc is None or (need_label and labc is None):
        raise DataError(
            f"Cannot tell the id and label columns of {str(where)!r}: columns are {columns}. "
            f"Expected an id-like column ({', '.join(ID_NAMES[:6])}, ...) and a label-like one "
            f"({', '.join(LABEL_NAMES[:5])}, ...); pass id_col= and label_col= explicitly."
        )
    return idc, labc


class _Index:
    """Finds the image file for an id: relative path, file name, or stem."""

    def __init__(self, folder: Path, root: Path, skips: SkipReport) -> None:
        self.folder, self.root = folder, root
        self.files = walk_files(folder, root, skips) if folder.is_dir() else []
        self.by_name: dict[str, Path] = {}
        self.by_stem: dict[str, Path] = {}
        for p in self.files:
            if is_image_name(p):
                self.by_name.setdefault(p.name, p)
                self.by_stem.setdefault(p.stem, p)

    def find(self, key: str) -> Path | None:
        for cand in (self.folder / key, self.root / key):
            if cand.is_file() and is_image_name(cand):
                return cand
        return self.by_name.get(Path(key).name) or self.by_stem.get(key) or self.by_stem.get(Path(key).stem)


def _first_dir(root: Path, names: tuple[str, ...], given: str | Path | None, split: str) -> Path | None:
    """The folder given, else the first of ``names`` (any case), else ``split``'s folder in any spelling."""
    if given is not None:
        path = Path(given) if Path(given).is_absolute() else root / given
        if not path.is_dir():
            raise DataError(f"Image folder {str(path)!r} does not exist; check images_dir/test_dir.")
        return path
    by_lower = {
        p.name.lower(): p for p in sorted(root.iterdir()) if p.is_dir() and not p.name.startswith(".")
    }
    hit = next((by_lower[n] for n in names if n in by_lower), None)
    return hit or find_split_dirs(root).get(split)


def _labels_csv(root: Path, given: str | Path | None) -> Path:
    if given is not None:
        path = Path(given) if Path(given).is_absolute() else root / given
        if not path.is_file():
            raise DataError(f"Labels CSV {str(path)!r} does not exist; check labels_csv=.")
        return path
    csvs = {p.name.lower(): p for p in sorted(root.glob("*.csv"))}
    for name in LABEL_CSVS:
        if name in csvs:
            return csvs[name]
    others = [p for n, p in csvs.items() if n not in NOT_LABEL_CSVS]
    if len(others) == 1:
        return others[0]
    raise DataError(
        f"No labels CSV in {str(root)!r} (looked for {', '.join(LABEL_CSVS)}; found "
        f"{sorted(csvs) or 'no CSV'}). Pass labels_csv= naming the id,label file."
    )


def _train_samples(
    rows: list[dict[str, str]], idc: str, labc: str, index: _Index, where: Path, skips: SkipReport
) -> list[Sample]:
    labels_by_id: dict[str, set[str]] = defaultdict(set)
    order: list[str] = []
    for row in rows:
        key, label = row.get(idc, ""), row.get(labc, "")
        if not key or not label:
            skips.add("missing_label", f"{where.name}: id={key!r}", "row without id or label")
            continue
        if key not in labels_by_id:
            order.append(key)
        labels_by_id[key].add(label)
    conflicts = sorted(k for k, v in labels_by_id.items() if len(v) > 1)
    if conflicts:
        shown = ", ".join(f"{k!r}: {sorted(labels_by_id[k])}" for k in conflicts[:10])
        raise DataError(
            f"{str(where)!r} gives different labels to the same id ({len(conflicts)} ids): {shown}. "
            "Keep one row per id."
        )
    for _ in range(sum(1 for r in rows if r.get(idc) and r.get(labc)) - len(order)):
        skips.add("duplicate_id", where, "repeated row with the same label; kept once")
    samples = []
    for key in order:
        path = index.find(key)
        if path is None:
            skips.add("missing_file", f"{where.name}: id={key!r}", f"no image for this id in {index.folder}")
            continue
        samples.append(Sample(id=key, label=next(iter(labels_by_id[key])), path=path))
    return samples


def load_kaggle(
    spec: str,
    *,
    id_col: str | None = None,
    label_col: str | None = None,
    labels_csv: str | Path | None = None,
    images_dir: str | Path | None = None,
    test_dir: str | Path | None = None,
    answers_csv: str | Path | None = None,
    **options: Any,
) -> DatasetSource:
    """Build a source from a Kaggle-style folder (see the module docstring).

    Raises:
        DataError: unreadable CSV, undetectable columns, conflicting duplicate ids, < 2 classes.
    """
    if options:
        log.info("data.kaggle.ignored_options", options=sorted(options))
    root = Path(spec).expanduser()
    if not root.is_dir():
        raise DataError(f"Kaggle dataset root {str(root)!r} is not a directory.")
    skips = SkipReport()
    labels_path = _labels_csv(root, labels_csv)
    columns, rows = read_csv(labels_path)
    idc, labc = detect_columns(columns, labels_path, id_col=id_col, label_col=label_col)
    assert labc is not None
    img_dir = _first_dir(root, IMAGE_DIRS, images_dir, "train") or root
    index = _Index(img_dir, root, skips)
    train = _train_samples(rows, idc, labc, index, labels_path, skips)
    classes = sorted_classes(s.label for s in train if s.label is not None)
    check_classes(classes, f"Kaggle labels {str(labels_path)!r}")

    warnings: list[str] = []
    test, submission, labeled = _test_samples(
        root, idc, labc, index, test_dir, answers_csv, classes, skips, warnings
    )
    if img_dir != root:
        used = {s.path for s in train} | {s.path for s in test}
        for p in index.files:
            if p not in used:
                reason = "unlabeled_file" if is_image_name(p) else "not_image"
                skips.add(reason, p.relative_to(root), "file has no row in the labels CSV")
    return DatasetSource(
        kind="kaggle",
        spec=str(root),
        classes=classes,
        train=train,
        test=test,
        test_labeled=labeled,
        submission=submission,
        skips=skips,
        root=root,
        warnings=warnings,
    )


def _test_samples(
    root: Path,
    idc: str,
    labc: str,
    train_index: _Index,
    test_dir: str | Path | None,
    answers_csv: str | Path | None,
    classes: list[str],
    skips: SkipReport,
    warnings: list[str],
) -> tuple[list[Sample], SubmissionFormat | None, bool]:
    folder = _first_dir(root, TEST_DIRS, test_dir, "test")
    index = _Index(folder, root, skips) if folder is not None else train_index
    labels: dict[str, str] = {}
    sub_path = next(
        (p for p in sorted(root.glob("*.csv")) if p.name.lower() == "sample_submission.csv"), None
    )
    test_csv = next(
        (p for p in sorted(root.glob("*.csv")) if p.name.lower() == "test.csv"), root / "test.csv"
    )
    if sub_path is not None:
        columns, rows = read_csv(sub_path)
        if len(columns) > 2:
            log.warning(
                "data.kaggle.submission_columns", path=str(sub_path), columns=columns, used=columns[:2]
            )
        sub_id, sub_label = columns[0], columns[1] if len(columns) > 1 else labc
        ids = [r[sub_id] for r in rows if r.get(sub_id)]
    elif test_csv.is_file():
        columns, rows = read_csv(test_csv)
        sub_id, test_label = detect_columns(columns, test_csv, id_col=None, label_col=None, need_label=False)
        sub_id, sub_label = idc if idc in columns else sub_id, labc
        ids = [r[sub_id] for r in rows if r.get(sub_id)]
        if test_label is not None:
            labels = {r[sub_id]: r[test_label] for r in rows if r.get(sub_id) and r.get(test_label)}
    elif folder is not None:
        sub_id, sub_label = idc, labc
        images = [p for p in index.files if is_image_name(p)]
        for p in index.files:
            if not is_image_name(p):
                skips.add("not_image", p.relative_to(root))
        stems = [p.stem for p in images]
        ids = stems if len(set(stems)) == len(stems) else [p.relative_to(folder).as_posix() for p in images]
    else:
        return [], None, False
    if answers_csv is not None:
        a_path = Path(answers_csv)
        a_cols, a_rows = read_csv(a_path)
        a_id, a_label = detect_columns(a_cols, a_path, id_col=None, label_col=None)
        labels = {r[a_id]: r[a_label or ""] for r in a_rows}
    test: list[Sample] = []
    for key in dict.fromkeys(ids):
        path = index.find(key)
        if path is None:
            skips.add("missing_test_file", f"test id={key!r}", "listed for the submission but no image found")
            continue
        test.append(Sample(id=key, label=labels.get(key), path=path))
    _explain_missing_test(root, folder, sub_path or test_csv, len(dict.fromkeys(ids)), len(test), warnings)
    labeled = bool(test) and all(s.label is not None for s in test)
    if labels and not labeled:
        log.warning("data.kaggle.partial_test_labels", known=len(labels), test=len(test))
    if labeled:
        unknown = sorted({s.label for s in test if s.label not in classes}, key=str)
        if unknown:
            raise DataError(f"Test labels {unknown[:10]} are not among the train classes {classes[:20]}.")
    else:
        test = [Sample(id=s.id, label=None, path=s.path) for s in test]
    submission = SubmissionFormat(id_col=sub_id, label_col=sub_label, ids=list(dict.fromkeys(ids)),
                                  sample_path=str(sub_path.resolve()) if sub_path is not None else None)
    return test, submission, labeled


def _explain_missing_test(
    root: Path, folder: Path | None, listing: Path, listed: int, found: int, warnings: list[str]
) -> None:
    """A sentence for test ids without images: most often a missing ``test/`` folder."""
    if found == listed:
        return
    if folder is None:
        warn_layout(
            warnings,
            "data.kaggle.no_test_folder",
            f"{listing.name} lists {listed} test ids but {str(root)!r} has no test image folder (looked for "
            f"{', '.join(d + '/' for d in TEST_DIRS)} and other spellings such as Testing/); {listed - found} "
            "ids have no image, so their predictions cannot be made. Put the test images in "
            f"{str(root / 'test')!r} or pass test_dir=.",
            listed=listed,
            found=found,
        )
    else:
        warn_layout(
            warnings,
            "data.kaggle.missing_test_images",
            f"{listed - found} of the {listed} test ids listed in {listing.name} have no image in "
            f"{str(folder)!r}; submission.csv will lack those rows. Add the missing images or fix the ids.",
            listed=listed,
            found=found,
        )


def _detect(spec: str) -> bool:
    root = Path(spec).expanduser()
    if not root.is_dir():
        return False
    return any(p.name.lower() not in NOT_LABEL_CSVS for p in root.glob("*.csv"))


register_source(
    SourceInfo(
        name="kaggle",
        description="train.csv (id,label) + train/ or images/, optional test/ and sample_submission.csv",
        detect=_detect,
        build=load_kaggle,
        priority=30,
    )
)
