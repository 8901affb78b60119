"""Split folders in their usual spellings, and loud warnings for what a layout was assumed to be."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from automodel.data import DataError, prepare_dataset, resolve_source
from automodel.data._layout import split_of

BRAIN = {"glioma": 3, "meningioma": 3, "notumor": 3, "pituitary": 3}


def _png(path: Path, seed: int, size: tuple[int, int] = (10, 10)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)


def _tree(base: Path, classes: dict[str, int], seed: int = 0) -> None:
    for ci, (name, n) in enumerate(classes.items()):
        for i in range(n):
            _png(base / name / f"{name}_{i}.png", seed * 1000 + ci * 100 + i)


@pytest.mark.parametrize(
    ("name", "split"),
    [("train", "train"), ("Training", "train"), ("TRAIN", "train"), ("train_set", "train"),
     ("val", "val"), ("Valid", "val"), ("validation", "val"), ("dev", "val"),
     ("test", "test"), ("Testing", "test"), ("Test", "test"), ("test-data", "test"),
     ("cat", None), ("trainer", None), ("contest", None)],
)  # fmt: skip
def test_split_spellings(name: str, split: str | None) -> None:
    assert split_of(name) == split


def test_training_testing_folders_are_splits_not_classes(tmp_path: Path) -> None:
    root = tmp_path / "brain"
    _tree(root / "Training", BRAIN)
    _tree(root / "Testing", {k: 2 for k in BRAIN}, seed=1)
    src = resolve_source(str(root))
    assert src.kind == "imagefolder"
    assert src.classes == sorted(BRAIN)
    assert len(src.train) == 12 and src.test_labeled and len(src.test) == 8
    prep = prepare_dataset(src, tmp_path / "out", private_dir=tmp_path / "private", workers=1)
    assert prep.meta.num_classes == 4
    assert prep.meta.counts["test"] == 8 and prep.meta.test_labeled
    assert prep.meta.profile.warnings == []


def test_validation_and_dev_spellings(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    _tree(root / "Train", {"a": 3, "b": 3})
    _tree(root / "Dev", {"a": 2, "b": 2}, seed=1)
    _tree(root / "TEST", {"a": 1, "b": 1}, seed=2)
    src = resolve_source(str(root))
    assert src.classes == ["a", "b"]
    assert src.val is not None and len(src.val) == 4 and len(src.test) == 2


def test_class_named_like_a_split_is_a_loud_warning(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    _tree(root / "train", {"test": 3, "other": 3})
    src = resolve_source(str(root))
    assert src.classes == ["other", "test"]
    assert any("named like a split" in w and "'test'" in w for w in src.warnings)
    prep = prepare_dataset(src, tmp_path / "out", private_dir=tmp_path / "private", workers=1)
    assert any("named like a split" in w for w in prep.meta.profile.warnings)
    assert "Warning: class folder(s) ['test']" in prep.meta.profile.summary()


def test_class_tree_one_level_deeper_is_a_loud_warning(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    _tree(root / "train" / "animals", {"cat": 2, "dog": 2})
    _tree(root / "train" / "plants", {"fern": 2, "moss": 2}, seed=1)
    src = resolve_source(str(root))
    assert src.classes == ["animals", "plants"]
    [warning] = src.warnings
    assert "one level deeper" in warning and "animals/ holds ['cat', 'dog']" in warning


def test_class_folders_beside_a_test_folder(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    _tree(root, {"cat": 3, "dog": 3})
    _tree(root / "Testing", {"cat": 1, "dog": 1}, seed=1)
    src = resolve_source(str(root))
    assert src.classes == ["cat", "dog"] and len(src.train) == 6 and len(src.test) == 2
    assert any("no train folder" in w and "Testing/ as test" in w for w in src.warnings)


def test_split_folders_without_train_are_a_clear_error(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    _tree(root / "Validation", {"cat": 2, "dog": 2})
    _tree(root / "Testing", {"cat": 2, "dog": 2}, seed=1)
    with pytest.raises(DataError, match="no train folder"):
        resolve_source(str(root))


def test_single_wrapper_folder_is_unwrapped_with_a_warning(tmp_path: Path) -> None:
    root = tmp_path / "download"
    _tree(root / "Brain MRI" / "Training", BRAIN)
    _tree(root / "Brain MRI" / "Testing", {k: 1 for k in BRAIN}, seed=1)
    src = resolve_source(str(root))
    assert src.classes == sorted(BRAIN) and len(src.test) == 4
    assert any("wraps the dataset" in w for w in src.warnings)


def test_kaggle_layout_with_training_testing_folders(tmp_path: Path) -> None:
    root = tmp_path / "comp"
    rows = []
    for i in range(8):
        _png(root / "Training" / f"img{i}.png", i)
        rows.append([f"img{i}", "ab"[i % 2]])
    for i in range(3):
        _png(root / "Testing" / f"t{i}.png", 50 + i)
    with (root / "train.csv").open("w", newline="") as fh:
        csv.writer(fh).writerows([["id", "label"], *rows])
    src = resolve_source(str(root))
    assert src.kind == "kaggle" and src.classes == ["a", "b"] and len(src.train) == 8
    assert [s.id for s in src.test] == ["t0", "t1", "t2"] and src.submission is not None
