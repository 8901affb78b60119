"""Tests for automodel.data: sources, bad-file handling, profile, splits, prepared cache."""

from __future__ import annotations

import csv
import gzip
import json
import struct
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from automodel.data import (
    DataError,
    PreparedData,
    choose_stored_size,
    decode_file,
    list_sources,
    network_available,
    prepare_dataset,
    resolve_source,
    stratified_split,
    write_digits_demo,
)
from automodel.data._torchvision import TORCHVISION_DATASETS

# ---------------------------------------------------------------- helpers


def _img(
    path: Path, color: tuple[int, int, int] | int = (200, 30, 30), size=(12, 12), mode="RGB", **save
) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path, **save)
    return path


def _noise(path: Path, seed: int, size=(12, 12), gray: bool = False) -> Path:
    rng = np.random.default_rng(seed)
    shape = (size[1], size[0]) if gray else (size[1], size[0], 3)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(path)
    return path


def _class_tree(base: Path, classes: dict[str, int], seed: int = 0, ext: str = ".png") -> None:
    for ci, (name, n) in enumerate(classes.items()):
        for i in range(n):
            _noise(base / name / f"{name}_{i}{ext}", seed=seed * 1000 + ci * 100 + i)


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return path


def _prepare(src, tmp_path: Path, **kw) -> PreparedData:
    kw.setdefault("workers", 1)
    return prepare_dataset(src, tmp_path / "out", private_dir=tmp_path / "private", **kw)


def _no_test_labels_in(out_dir: Path, labels: list[str]) -> None:
    names = {p.name for p in out_dir.rglob("*")}
    assert "test_labels.json" not in names and "test_labels.csv" not in names
    meta = json.loads((out_dir / "meta.json").read_text())
    assert "test" not in meta["profile"]["counts"]
    assert "test" not in meta["class_counts"]


# ---------------------------------------------------------------- registry


def test_registry_lists_kinds_and_unknown_spec_is_clear(tmp_path: Path) -> None:
    assert {"demo", "imagefolder", "kaggle", "idx", "torchvision"} <= set(list_sources())
    with pytest.raises(DataError, match="Known kinds"):
        resolve_source(str(tmp_path / "nowhere"))


# ---------------------------------------------------------------- imagefolder


def test_imagefolder_with_val_and_labeled_test(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    _class_tree(root / "train", {"cat": 6, "dog": 4})
    _class_tree(root / "val", {"cat": 2, "dog": 2}, seed=1)
    _class_tree(root / "test", {"cat": 2, "dog": 3}, seed=2)
    src = resolve_source(str(root))
    assert src.kind == "imagefolder" and src.classes == ["cat", "dog"]
    assert src.val is not None and src.test_labeled
    prep = _prepare(src, tmp_path)
    meta = prep.meta
    assert meta.counts == {"train": 10, "val": 4, "test": 5}
    assert meta.val_from_folder and meta.test_labeled and meta.in_chans == 3 and meta.stored_size == 12
    x, y = prep.arrays("train")
    assert x.shape == (10, 12, 12, 3) and x.dtype == np.uint8 and y is not None and y.dtype == np.int64
    tx, ty = prep.arrays("test")
    assert tx.shape[0] == 5 and ty is None
    private = json.loads((tmp_path / "private" / "test_labels.json").read_text())
    assert sorted(private["labels"]) == ["cat", "cat", "dog", "dog", "dog"]
    assert private["ids"] == prep.test_ids
    _no_test_labels_in(tmp_path / "out", private["labels"])
    assert 0.0 < meta.mean[0] < 1.0 and len(meta.std) == 3


def test_imagefolder_bare_root_and_flat_unlabeled_test(tmp_path: Path) -> None:
    bare = tmp_path / "bare"
    _class_tree(bare, {"a": 3, "b": 3})
    src = resolve_source(str(bare))
    assert len(src.train) == 6 and src.val is None and not src.test
    root = tmp_path / "ds"
    _class_tree(root / "train", {"a": 5, "b": 5})
    for i in range(3):
        _noise(root / "test" / f"t{i}.png", seed=50 + i)
    src = resolve_source(str(root))
    assert not src.test_labeled and src.submission is not None
    assert src.submission.ids == ["t0", "t1", "t2"]
    prep = _prepare(src, tmp_path)
    assert prep.meta.counts == {"train": 8, "val": 2, "test": 3}
    assert prep.test_ids == ["t0", "t1", "t2"]
    assert not (tmp_path / "private" / "test_labels.json").exists()


def test_class_names_with_spaces_and_unicode(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    _class_tree(root / "train", {"große Katze": 3, "chien noir": 3, "猫": 3})
    prep = _prepare(str(root), tmp_path)
    assert set(prep.meta.classes) == {"große Katze", "chien noir", "猫"}
    assert "große Katze" in (tmp_path / "out" / "meta.json").read_text(encoding="utf-8")


def test_single_class_is_a_clear_error(tmp_path: Path) -> None:
    _class_tree(tmp_path / "ds" / "train", {"only": 4})
    with pytest.raises(DataError, match="at least 2"):
        resolve_source(str(tmp_path / "ds"))


def test_bad_files_are_counted_skips(tmp_path: Path) -> None:
    train = tmp_path / "ds" / "train"
    _class_tree(train, {"a": 4, "b": 4})
    (train / "a" / "notes.txt").write_text("hello")
    (train / "a" / ".DS_Store").write_bytes(b"\x00\x01")
    (train / "b" / "Thumbs.db").write_bytes(b"\x00\x01")
    (train / "empty").mkdir()
    (train / "a" / "garbage.png").write_bytes(b"this is not a png at all")
    (train / "a" / "zero.jpg").write_bytes(b"")
    jpg = _noise(train / "b" / "full.jpg", seed=9, size=(64, 64))
    data = jpg.read_bytes()
    (train / "b" / "truncated.jpg").write_bytes(data[: len(data) // 2])
    jpg.unlink()
    src = resolve_source(str(tmp_path / "ds"))
    assert src.skips.counts["not_image"] == 3
    assert src.skips.counts["empty_class"] == 1
    assert src.classes == ["a", "b"]
    prep = _prepare(src, tmp_path)
    skipped = prep.meta.profile.skipped
    assert skipped["corrupt"] == 3, skipped
    assert prep.meta.counts["train"] + prep.meta.counts["val"] == 8


def test_all_images_of_a_class_corrupt_leaves_one_class(tmp_path: Path) -> None:
    train = tmp_path / "ds" / "train"
    _class_tree(train, {"a": 3})
    (train / "b").mkdir(parents=True)
    (train / "b" / "x.png").write_bytes(b"broken")
    with pytest.raises(DataError, match="at least 2"):
        _prepare(str(tmp_path / "ds"), tmp_path)


# ---------------------------------------------------------------- decoding


def test_modes_are_converted(tmp_path: Path) -> None:
    g16 = Image.fromarray(np.array([[0, 32896], [65535, 65535]], dtype=np.uint16))
    g16.save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode.startswith("I")
    d = decode_file(tmp_path / "g16.png", 2)
    assert not isinstance(d, tuple)
    assert d.array[:, :, 0].tolist() == [[0, 128], [255, 255]] and d.gray

    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 0))  # fully transparent red -> white
    rgba.save(tmp_path / "rgba.png")
    d = decode_file(tmp_path / "rgba.png", 4)
    assert not isinstance(d, tuple) and d.array.shape == (4, 4, 3) and (d.array == 255).all()

    Image.new("RGB", (4, 4), (0, 0, 255)).convert("P").save(tmp_path / "pal.png")
    d = decode_file(tmp_path / "pal.png", 4)
    assert not isinstance(d, tuple) and d.mode == "P" and tuple(d.array[0, 0]) == (0, 0, 255)

    Image.new("L", (5, 5), 77).save(tmp_path / "gray.png")
    d = decode_file(tmp_path / "gray.png", 5)
    assert not isinstance(d, tuple) and d.array.shape == (5, 5, 1) and d.gray

    Image.new("RGB", (5, 5), (90, 90, 90)).save(tmp_path / "rgbgray.png")
    d = decode_file(tmp_path / "rgbgray.png", 5)
    assert not isinstance(d, tuple) and d.gray and d.array.shape == (5, 5, 3)


def test_exif_rotation_is_applied(tmp_path: Path) -> None:
    img = Image.new("RGB", (40, 20), (10, 200, 10))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when displayed
    img.save(tmp_path / "rot.jpg", exif=exif)
    d = decode_file(tmp_path / "rot.jpg", 10)
    assert not isinstance(d, tuple) and (d.width, d.height) == (20, 40)


def test_huge_image_is_downscaled_fast_and_bomb_is_skipped(tmp_path: Path) -> None:
    big = _img(tmp_path / "big.jpg", (120, 60, 30), size=(3024, 3024), quality=80)
    t = time.perf_counter()
    d = decode_file(big, 32)
    assert time.perf_counter() - t < 1.5
    assert not isinstance(d, tuple) and d.array.shape == (32, 32, 3) and d.width <= 3024
    reason = decode_file(big, 32, max_pixels=1_000_000)
    assert isinstance(reason, tuple) and reason[0] == "too_large"


def test_non_square_is_resized_then_center_cropped(tmp_path: Path) -> None:
    arr = np.zeros((10, 30, 3), dtype=np.uint8)
    arr[:, 10:20] = 255  # white centre third
    Image.fromarray(arr).save(tmp_path / "wide.png")
    d = decode_file(tmp_path / "wide.png", 10)
    assert not isinstance(d, tuple) and d.array.shape == (10, 10, 3) and d.array.min() == 255


# ---------------------------------------------------------------- kaggle


def _kaggle_tree(root: Path, n_per_class: int = 4, id_ext: bool = False, header=("id", "label")) -> None:
    rows = []
    for ci, cls in enumerate(["ship", "plane"]):
        for i in range(n_per_class):
            key = f"{cls}{i}"
            _noise(root / "train" / f"{key}.png", seed=ci * 100 + i)
            rows.append([f"{key}.png" if id_ext else key, cls])
    _write_csv(root / "train.csv", list(header), rows)


def test_kaggle_detected_columns_and_skips(tmp_path: Path) -> None:
    root = tmp_path / "k"
    rows = []
    for ci, cls in enumerate(["ship", "plane"]):
        for i in range(4):
            _noise(root / "images" / f"{cls}{i}.png", seed=ci * 100 + i)
            rows.append([f"{cls}{i}", cls])
    rows.append(["ghost", "ship"])  # label with no file
    rows.append(["ship0", "ship"])  # duplicate that agrees
    _noise(root / "images" / "stray.png", seed=99)  # file with no label
    _write_csv(root / "labels.csv", ["Image_ID", "Category"], rows)
    src = resolve_source(str(root))
    assert src.kind == "kaggle" and src.classes == ["plane", "ship"] and len(src.train) == 8
    assert src.skips.counts["missing_file"] == 1
    assert src.skips.counts["unlabeled_file"] == 1
    assert src.skips.counts["duplicate_id"] == 1


def test_kaggle_conflicting_duplicates_name_the_ids(tmp_path: Path) -> None:
    root = tmp_path / "k"
    _kaggle_tree(root)
    with (root / "train.csv").open("a", encoding="utf-8") as fh:
        fh.write("ship0,plane\n")
    with pytest.raises(DataError, match="ship0"):
        resolve_source(str(root))


def test_kaggle_explicit_columns_and_detection_error(tmp_path: Path) -> None:
    root = tmp_path / "k"
    _kaggle_tree(root, id_ext=True, header=("picture", "kind"))
    with pytest.raises(DataError, match=r"columns are \['picture', 'kind'\]"):
        resolve_source(str(root))
    src = resolve_source(f"kaggle:{root}", id_col="picture", label_col="kind")
    assert len(src.train) == 8
    with pytest.raises(DataError, match="not a column"):
        resolve_source(str(root), id_col="nope", label_col="kind")


def test_kaggle_sample_submission_defines_order_and_columns(tmp_path: Path) -> None:
    root = tmp_path / "k"
    _kaggle_tree(root)
    order = ["t2", "t0", "t1"]
    for i, key in enumerate(order):
        _noise(root / "test" / f"{key}.jpg", seed=500 + i)
    _write_csv(root / "sample_submission.csv", ["ImageId", "Label"], [[k, "ship"] for k in order])
    src = resolve_source(str(root))
    assert not src.test_labeled and src.submission is not None
    assert (src.submission.id_col, src.submission.label_col, src.submission.ids) == (
        "ImageId",
        "Label",
        order,
    )
    prep = _prepare(src, tmp_path)
    assert prep.test_ids == order and prep.meta.submission is not None
    assert prep.meta.submission.ids == order


def test_kaggle_test_csv(tmp_path: Path) -> None:
    root = tmp_path / "k"
    _kaggle_tree(root)
    for i in range(2):
        _noise(root / "test" / f"q{i}.png", seed=700 + i)
    _write_csv(root / "test.csv", ["id"], [["q0"], ["q1"], ["q9"]])
    src = resolve_source(str(root))
    assert [s.id for s in src.test] == ["q0", "q1"]
    assert src.skips.counts["missing_test_file"] == 1


# ---------------------------------------------------------------- demo


def test_demo_keeps_answers_out_of_dataset_and_out_dir(tmp_path: Path) -> None:
    demo = write_digits_demo(tmp_path / "digits", seed=0, test_fraction=0.2)
    assert demo.answers_csv.is_file()
    assert demo.root not in demo.answers_csv.parents
    assert not list(demo.root.rglob("*answer*")) and not list(demo.root.rglob("test_labels*"))
    with (demo.root / "train.csv").open() as fh:
        assert next(csv.reader(fh)) == ["id", "label"]
    again = write_digits_demo(tmp_path / "digits", seed=0, test_fraction=0.2)
    assert again == demo
    src = resolve_source("demo", root=tmp_path / "digits")
    assert src.kind == "demo" and src.test_labeled and len(src.classes) == 10
    prep = _prepare(src, tmp_path, workers=2)
    meta = prep.meta
    assert meta.in_chans == 1 and meta.stored_size == 32 and meta.num_classes == 10
    assert meta.counts["test"] == demo.num_test
    assert meta.counts["train"] + meta.counts["val"] == demo.num_train
    assert meta.profile.channels == "gray"
    private = json.loads((tmp_path / "private" / "test_labels.json").read_text())
    with demo.answers_csv.open() as fh:
        answers = {r["id"]: r["label"] for r in csv.DictReader(fh)}
    assert {i: lab for i, lab in zip(private["ids"], private["labels"], strict=True)} == answers
    _no_test_labels_in(tmp_path / "out", private["labels"])
    assert "digit" in meta.profile.summary().lower() or "10 classes" in meta.profile.summary()


def test_demo_answers_dir_inside_root_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="outside"):
        write_digits_demo(tmp_path / "d", answers_dir=tmp_path / "d" / "answers")


# ---------------------------------------------------------------- torchvision and IDX


def test_torchvision_offline_error_is_fast_and_clear(tmp_path: Path) -> None:
    if network_available(TORCHVISION_DATASETS["cifar10"], timeout=1.0):
        pytest.skip("network available: this test checks the offline message")
    t = time.perf_counter()
    with pytest.raises(DataError, match="local folder"):
        resolve_source("torchvision:CIFAR10", root=tmp_path / "tv")
    with pytest.raises(DataError, match="network"):
        resolve_source("FashionMNIST", root=tmp_path / "tv2")
    assert time.perf_counter() - t < 6.0


def test_unknown_torchvision_name_lists_choices() -> None:
    with pytest.raises(DataError, match="CIFAR10"):
        resolve_source("torchvision:ImageNet21k")


def _write_idx(path: Path, arr: np.ndarray) -> None:
    header = b"\x00\x00\x08" + bytes([arr.ndim]) + struct.pack(">" + "I" * arr.ndim, *arr.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + arr.astype(np.uint8).tobytes())


def test_idx_folder_with_stratified_subset(tmp_path: Path) -> None:
    folder = tmp_path / "idx"
    folder.mkdir()
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), [40, 40, 20])
    _write_idx(folder / "train-images-idx3-ubyte.gz", rng.integers(0, 256, (100, 8, 8)))
    _write_idx(folder / "train-labels-idx1-ubyte.gz", y)
    _write_idx(folder / "t10k-images-idx3-ubyte.gz", rng.integers(0, 256, (9, 8, 8)))
    _write_idx(folder / "t10k-labels-idx1-ubyte.gz", np.arange(9) % 3)
    src = resolve_source(str(folder), max_train=50, seed=1)
    assert src.kind == "idx" and src.classes == ["0", "1", "2"] and len(src.train) == 50
    counts = [sum(s.label == c for s in src.train) for c in src.classes]
    assert counts == [20, 20, 10]
    assert [s.id for s in resolve_source(str(folder), max_train=50, seed=1).train] == [
        s.id for s in src.train
    ]
    prep = _prepare(src, tmp_path)
    assert prep.meta.in_chans == 1 and prep.meta.stored_size == 8 and prep.meta.counts["test"] == 9
    assert (tmp_path / "private" / "test_labels.json").is_file()


def test_fashion_mnist_missing_package_is_clear() -> None:
    from automodel.data._torchvision import DEBIAN_FASHION_MNIST

    if DEBIAN_FASHION_MNIST.is_dir():
        src = resolve_source("fashion-mnist", max_train=100)
        assert src.classes[0] == "T-shirt/top" and len(src.train) == 100
    else:
        with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
            resolve_source("fashion-mnist")


# ---------------------------------------------------------------- split, profile, cache


def test_stratified_split_is_deterministic_and_stratified() -> None:
    y = np.repeat(np.arange(4), [50, 30, 10, 2])
    tr1, va1 = stratified_split(y, 0.2, seed=3)
    tr2, va2 = stratified_split(y, 0.2, seed=3)
    _, va3 = stratified_split(y, 0.2, seed=4)
    assert np.array_equal(va1, va2) and np.array_equal(tr1, tr2) and not np.array_equal(va1, va3)
    assert np.bincount(y[va1], minlength=4).tolist() == [10, 6, 2, 1]
    assert len(np.intersect1d(tr1, va1)) == 0 and len(tr1) + len(va1) == len(y)
    single = stratified_split(np.array([0, 0, 0, 1]), 0.2, seed=0)[1]
    assert np.array_equal(np.bincount(np.array([0, 0, 0, 1])[single], minlength=2), [1, 0])
    with pytest.raises(DataError):
        stratified_split(y, 1.5)


def test_stored_size_rule() -> None:
    assert choose_stored_size([(28, 28)] * 3) == 28
    assert choose_stored_size([(3024, 3024), (640, 480), (500, 375)]) == 160
    assert choose_stored_size([(100, 80), (90, 90), (60, 120)]) == 80


def test_profile_gray_rgb_files_duplicates_and_imbalance(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    for i in range(6):
        _img(root / "train" / "a" / f"{i}.png", (i * 20, i * 20, i * 20), size=(10, 14))
    for i in range(2):
        _img(root / "train" / "b" / f"{i}.png", (200 - i, 200 - i, 200 - i), size=(10, 14))
    _img(root / "test" / "dup.png", (0, 0, 0), size=(10, 14))  # identical to train/a/0.png
    prep = _prepare(str(root), tmp_path)
    prof = prep.meta.profile
    assert prof.channels == "gray" and prep.meta.in_chans == 1
    assert prof.imbalance_ratio == 3.0
    assert prof.duplicates["train-test"] + prof.duplicates.get("val-test", 0) == 1
    assert prof.sizes.min_width == 10 and prof.sizes.max_height == 14 and prep.meta.stored_size == 10
    assert prof.counts["train"]["a"] + prof.counts["val"]["a"] == 6
    text = prof.summary()
    assert "2 classes" in text and "gray" in text


def test_cache_is_reused_and_invalidated(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    _class_tree(root / "train", {"a": 4, "b": 4})
    first = _prepare(str(root), tmp_path)
    assert not first.from_cache
    stamp = (tmp_path / "out" / "train_x.npy").stat().st_mtime_ns
    second = _prepare(str(root), tmp_path)
    assert second.from_cache and (tmp_path / "out" / "train_x.npy").stat().st_mtime_ns == stamp
    assert second.meta == first.meta
    _noise(root / "train" / "a" / "new.png", seed=123)
    third = _prepare(str(root), tmp_path)
    assert not third.from_cache and third.meta.counts["train"] + third.meta.counts["val"] == 9
    fourth = _prepare(str(root), tmp_path, seed=1)
    assert not fourth.from_cache


def test_load_uses_mmap_over_budget_and_private_dir_checked(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    _class_tree(root / "train", {"a": 3, "b": 3})
    _prepare(str(root), tmp_path)
    small = PreparedData.load(tmp_path / "out", memory_budget_bytes=1)
    x, _ = small.arrays("val")
    assert small.mmap and isinstance(x, np.memmap)
    big = PreparedData.load(tmp_path / "out")
    assert not big.mmap and not isinstance(big.arrays("train")[0], np.memmap)
    with pytest.raises(DataError, match="no test split"):
        big.arrays("test")
    with pytest.raises(DataError, match="inside out_dir"):
        prepare_dataset(str(root), tmp_path / "o2", private_dir=tmp_path / "o2" / "private")
    on_disk = prepare_dataset(
        str(root), tmp_path / "o3", private_dir=tmp_path / "p3", workers=1, memory_budget_bytes=1
    )
    assert np.array_equal(on_disk.arrays("train")[0], big.arrays("train")[0])
    spec = big.meta.data_spec("cpu")
    assert spec.num_train == big.meta.counts["train"] and spec.in_chans == 3
