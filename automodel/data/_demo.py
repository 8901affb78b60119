"""The bundled demo: scikit-learn's ``load_digits`` written out in the Kaggle layout.

``write_digits_demo(root)`` writes ``root/train.csv`` (``id,label``), ``root/train/<id>.png``,
``root/test/<id>.png`` (unlabeled), ``root/sample_submission.csv``, and keeps the test
answers outside the dataset root in ``<root>-answers/test_labels.csv`` (or ``answers_dir``).
The 8x8 images (16 gray levels) are scaled to 0-255 and upscaled to ``size`` pixels.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import structlog
from PIL import Image

from automodel._io import atomic_open, atomic_write_text
from automodel.data._errors import DataError
from automodel.data._source import DatasetSource, SourceInfo, cache_dir, register_source
from automodel.data._split import stratified_split

__all__ = ["DemoDataset", "write_digits_demo"]

log = structlog.get_logger(__name__)

_MARKER = ".automodel-demo.json"


@dataclass(frozen=True)
class DemoDataset:
    """Where the demo was written."""

    root: Path
    """The dataset root (Kaggle layout) that candidates may read."""
    answers_csv: Path
    """``id,label`` for the test images, outside ``root``."""
    num_train: int
    num_test: int


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    with atomic_open(path, "w") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)


def write_digits_demo(
    root: Path,
    *,
    seed: int = 0,
    test_fraction: float = 0.2,
    answers_dir: Path | None = None,
    size: int = 32,
) -> DemoDataset:
    """Write the digits demo (1,797 images, 10 classes) to ``root``; deterministic per seed.

    Reuses an existing copy written with the same settings.

    Raises:
        DataError: ``answers_dir`` inside ``root`` (the answers must stay out of the dataset).
    """
    from sklearn.datasets import load_digits

    root = Path(root).expanduser().resolve()
    answers = (
        Path(answers_dir).expanduser().resolve() if answers_dir else root.parent / f"{root.name}-answers"
    )
    if answers == root or root in answers.parents:
        raise DataError(
            f"answers_dir {str(answers)!r} is inside the dataset root {str(root)!r}; put it outside."
        )
    answers_csv = answers / "test_labels.csv"
    settings = {"seed": seed, "test_fraction": test_fraction, "size": size, "version": 1}
    marker = root / _MARKER
    digits = load_digits()
    y = digits.target.astype(np.int64)
    train_idx, test_idx = stratified_split(y, test_fraction, seed)
    if marker.is_file() and answers_csv.is_file() and json.loads(marker.read_text()) == settings:
        return DemoDataset(root, answers_csv, len(train_idx), len(test_idx))

    rng = np.random.default_rng(seed)
    order = rng.permutation(len(y))  # ids carry no hint of the label or split
    ids = {int(i): f"img_{rank:04d}" for rank, i in enumerate(order)}
    pixels = np.clip(np.rint(digits.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    for split, indices in (("train", train_idx), ("test", test_idx)):
        folder = root / split
        folder.mkdir(parents=True, exist_ok=True)
        for i in indices:
            img = Image.fromarray(pixels[i], "L").resize((size, size), Image.Resampling.BILINEAR)
            img.save(folder / f"{ids[int(i)]}.png")
    answers.mkdir(parents=True, exist_ok=True)
    train_rows = sorted([ids[int(i)], str(y[i])] for i in train_idx)
    test_rows = sorted([ids[int(i)], str(y[i])] for i in test_idx)
    _write_csv(root / "train.csv", ["id", "label"], train_rows)
    _write_csv(root / "sample_submission.csv", ["id", "label"], [[r[0], "0"] for r in test_rows])
    _write_csv(answers_csv, ["id", "label"], test_rows)
    atomic_write_text(marker, json.dumps(settings))  # the commit mark: written last
    log.info(
        "data.demo.written",
        root=str(root),
        answers=str(answers_csv),
        train=len(train_rows),
        test=len(test_rows),
    )
    return DemoDataset(root, answers_csv, len(train_rows), len(test_rows))


def load_demo(
    spec: str = "", *, root: Path | str | None = None, seed: int = 0, **options: Any
) -> DatasetSource:
    """Write (or reuse) the digits demo and resolve it as a Kaggle source with private answers."""
    from automodel.data._kaggle import load_kaggle

    target = Path(root) if root is not None else cache_dir() / "datasets" / "digits"
    demo = write_digits_demo(target, seed=seed, answers_dir=options.pop("answers_dir", None))
    source = load_kaggle(str(demo.root), answers_csv=demo.answers_csv, **options)
    source.kind, source.spec = "demo", "demo"
    source.description = "scikit-learn digits: 8x8 grayscale handwritten digits upscaled, 10 classes"
    return source


register_source(
    SourceInfo(
        name="demo",
        description="bundled scikit-learn digits ('demo' or 'digits'), answers kept aside",
        detect=lambda spec: spec.lower() in ("demo", "digits"),
        build=load_demo,
        priority=10,
    )
)
