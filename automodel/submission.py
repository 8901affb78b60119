"""``submission.csv`` in exactly the sample submission's format, and a pre-flight check of it.

The sample submission (``sample_submission.csv`` of a Kaggle competition) fixes everything:
the columns and their order, the id of every row in its order and spelling (with or without
a file extension), and how a label is written. Three label styles are recognised from its
values and the training classes:

* ``name``: the class names themselves (``cat``, ``dog``; or ``3`` for digit classes);
* ``code``: integer codes ``0..K-1`` in the order of the sorted classes, when the sample
  holds integers and the classes are not integers themselves;
* ``onehot``: one column per class (``id,cat,dog``): 1 for the predicted class, 0 elsewhere.

Columns other than the id and the label keep the sample's values. :func:`preflight` writes
the submission of a dummy prediction before any training and checks it against the sample
(row count, ids, columns, label vocabulary), so a long run cannot end in a rejected file.
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import structlog

from automodel._io import atomic_open
from automodel.data import DataError, PreparedData, SubmissionFormat

__all__ = [
    "SampleSubmission",
    "SubmissionError",
    "check_submission",
    "preflight",
    "preflight_run",
    "read_sample",
    "write_submission",
]

log = structlog.get_logger(__name__)

LabelStyle = Literal["name", "code", "onehot"]


class SubmissionError(DataError):
    """The submission would not match the sample submission; the message lists every difference."""


@dataclass(frozen=True)
class SampleSubmission:
    """The layout a submission must copy."""

    columns: list[str]
    rows: list[dict[str, str]]
    id_col: str
    label_col: str | None
    """``None`` in ``onehot`` style."""
    style: LabelStyle
    path: Path | None = None

    @property
    def ids(self) -> list[str]:
        return [r[self.id_col] for r in self.rows]

    def vocabulary(self, classes: Sequence[str]) -> set[str]:
        """The values a label cell may hold."""
        if self.style == "code":
            return {str(i) for i in range(len(classes))}
        if self.style == "onehot":
            return {"0", "1"}
        return set(classes)


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True


def _read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            columns = [c.strip() for c in (reader.fieldnames or [])]
            rows = [{(k or "").strip(): (v or "").strip() for k, v in row.items()} for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise SubmissionError(f"Cannot read {str(path)!r}: {exc}. It must be a UTF-8 CSV with a header.") from exc
    if not columns:
        raise SubmissionError(f"{str(path)!r} has no header row.")
    return columns, rows


def read_sample(fmt: SubmissionFormat, classes: Sequence[str]) -> SampleSubmission:
    """The layout to copy: the sample submission file when the format names one, else ``id_col,label_col``.

    Raises:
        SubmissionError: the sample cannot be read, or its id column is missing.
    """
    if fmt.sample_path and not Path(fmt.sample_path).is_file():
        log.warning("submission.sample_missing", sample=fmt.sample_path,
                    note="writing id,label columns in the recorded id order instead")
    if not fmt.sample_path or not Path(fmt.sample_path).is_file():
        rows = [{fmt.id_col: i, fmt.label_col: ""} for i in fmt.ids]
        return SampleSubmission([fmt.id_col, fmt.label_col], rows, fmt.id_col, fmt.label_col, "name")
    path = Path(fmt.sample_path)
    columns, rows = _read_csv(path)
    id_col = fmt.id_col if fmt.id_col in columns else columns[0]
    others = [c for c in columns if c != id_col]
    if len(classes) >= 2 and set(classes) <= set(others):
        return SampleSubmission(columns, rows, id_col, None, "onehot", path)
    names = set(classes)
    preferred = ([fmt.label_col] if fmt.label_col in others else []) + others
    label_col = next((c for c in preferred if rows and all(r.get(c, "") in names for r in rows)), None)
    if label_col is None:
        label_col = fmt.label_col if fmt.label_col in others else (others[0] if others else fmt.label_col)
    values = {r.get(label_col, "") for r in rows}
    style: LabelStyle = "name"
    if values and not values <= names and all(_is_int(v) for v in values) and not all(_is_int(c) for c in classes):
        style = "code"
        log.warning("submission.label_codes", sample=str(path), column=label_col,
                    note="the sample holds integers but the classes are names: writing class indices",
                    classes=list(classes)[:20])
    return SampleSubmission(columns, rows, id_col, label_col if label_col in columns else None, style, path)


def _label_cells(sample: SampleSubmission, classes: Sequence[str], pred: int) -> dict[str, str]:
    if sample.style == "onehot":
        return {c: ("1" if c == classes[pred] else "0") for c in classes}
    if sample.label_col is None:
        return {}
    return {sample.label_col: str(pred) if sample.style == "code" else classes[pred]}


def write_submission(
    path: Path, fmt: SubmissionFormat, classes: Sequence[str], test_ids: Sequence[str], preds: Sequence[int]
) -> Path:
    """Write ``path`` in the sample's format from one predicted class index per test id (atomically).

    An id of the sample without a prediction (its image could not be read) gets the most frequent
    predicted class, with a warning: Kaggle rejects a file with missing rows.
    """
    sample = read_sample(fmt, classes)
    by_id = dict(zip(test_ids, preds, strict=True))
    fallback = Counter(preds).most_common(1)[0][0] if preds else 0
    missing = [i for i in sample.ids if i not in by_id]
    if missing:
        log.warning("submission.missing_predictions", count=len(missing), examples=missing[:5],
                    filled_with=classes[fallback])
    with atomic_open(path, "w") as fh:
        writer = csv.DictWriter(fh, fieldnames=sample.columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for row in sample.rows:
            key = row[sample.id_col]
            writer.writerow({**row, **_label_cells(sample, classes, by_id.get(key, fallback))})
    return path


def check_submission(path: Path, fmt: SubmissionFormat, classes: Sequence[str]) -> list[str]:
    """Differences between ``path`` and the sample submission (empty when Kaggle would accept the layout)."""
    sample = read_sample(fmt, classes)
    columns, rows = _read_csv(path)
    problems = []
    if sample.style != "onehot" and sample.label_col is None:
        problems.append(f"the sample submission has no column for the label (columns {sample.columns})")
    if columns != sample.columns:
        problems.append(f"columns are {columns}, the sample has {sample.columns} (same names, same order)")
    if len(rows) != len(sample.rows):
        problems.append(f"{len(rows)} rows, the sample has {len(sample.rows)}")
    ids = [r.get(sample.id_col, "") for r in rows]
    if ids != sample.ids:
        diff = next((k for k, (a, b) in enumerate(zip(ids, sample.ids, strict=False)) if a != b), min(len(ids), len(sample.ids)))
        got = ids[diff] if diff < len(ids) else "(end of file)"
        want = sample.ids[diff] if diff < len(sample.ids) else "(end of file)"
        problems.append(f"ids differ from the sample's from row {diff + 1}: {got!r} where the sample has {want!r}")
    vocab = sample.vocabulary(classes)
    label_cols = list(classes) if sample.style == "onehot" else [sample.label_col] if sample.label_col else []
    bad = sorted({r.get(c, "") for r in rows for c in label_cols} - vocab)
    if bad:
        problems.append(f"label values {bad[:10]} are not in the vocabulary {sorted(vocab)[:20]} ({sample.style} style)")
    return problems


def preflight(fmt: SubmissionFormat, classes: Sequence[str], test_ids: Sequence[str], workdir: Path) -> list[str]:
    """Write the submission of a dummy prediction (class 0 everywhere) and check it against the sample.

    Returns warnings that do not make Kaggle reject the file (ids whose test image could not be read:
    their rows will hold a guess).

    Raises:
        SubmissionError: every difference that would make Kaggle reject the final file, and what to do.
    """
    sample = read_sample(fmt, classes)
    have = set(test_ids)
    no_image = [i for i in sample.ids if i not in have]
    dummy = workdir / ".preflight_submission.csv"
    try:
        write_submission(dummy, fmt, classes, list(test_ids), [0] * len(test_ids))
        problems = check_submission(dummy, fmt, classes)
    finally:
        dummy.unlink(missing_ok=True)
    if problems:
        where = str(sample.path) if sample.path else "the submission format"
        raise SubmissionError(
            f"The submission would not match {where}: " + "; ".join(problems)
            + ". Fix the dataset (or pass --id-col/--label-col) before training."
        )
    log.info("submission.preflight_ok", rows=len(sample.rows), columns=sample.columns, style=sample.style)
    if no_image:
        return [f"{len(no_image)} ids of the sample submission have no readable test image (e.g. {no_image[:5]}); "
                "their rows will hold the most frequent predicted class"]
    return []


def preflight_run(run_dir: Path) -> list[str]:
    """:func:`preflight` for a prepared run directory (nothing to check when its test set needs no submission)."""
    data = PreparedData.load(Path(run_dir) / "data")
    if data.meta.submission is None:
        return []
    return preflight(data.meta.submission, data.meta.classes, data.test_ids, Path(run_dir))
