"""The benchmark datasets, each resolved to a data spec that ``open_workspace`` / ``RunOptions`` accept.

Every dataset has a labelled test split that the harness holds privately, so each
contender is scored once, on the same images, by the same code.

| name | source | small version | full version |
| --- | --- | --- | --- |
| ``digits`` | scikit-learn digits in the Kaggle layout (``demo``) | 1,438 train / 359 test | same |
| ``fashion`` | Fashion-MNIST (Debian ``dataset-fashion-mnist``) | seeded stratified 3,000 / 1,000 | 60,000 / 10,000 |
| ``signs`` | Sign Language Digits photos (``../shared/datasets``) | seeded stratified 80 / 20 split of 2,062 | same |
| ``orientation`` | generated 'F' glyphs, flips change the label (:mod:`benchmarks.orientation`) | 2,000 / 800 at 32 px | 8,000 / 2,000 at 48 px |

Derived copies (the Fashion-MNIST subset, the signs split as symlinks, the glyphs) are
written once under ``benchmarks/.cache/data`` (git-ignored) and reused.
"""

from __future__ import annotations

import gzip
import json
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from benchmarks.orientation import DESCRIPTION as ORIENTATION_DESCRIPTION
from benchmarks.orientation import write_orientation_task

__all__ = ["BenchDataset", "CACHE", "DATASETS", "resolve"]

BENCH_DIR = Path(__file__).resolve().parent
CACHE = BENCH_DIR / ".cache"
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
SIGNS_DIR = BENCH_DIR.parent.parent / "shared" / "datasets" / "sign-language-digits"
DATASETS = ("digits", "fashion", "signs", "orientation")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


@dataclass(frozen=True)
class BenchDataset:
    """A benchmark dataset as the contenders receive it."""

    name: str
    spec: str
    """What ``open_workspace(spec, ...)`` / ``RunOptions(data=spec)`` take."""
    summary: str
    description: str = ""
    """The user's sentence about the data (empty: the team must work it out)."""
    info: dict[str, object] = field(default_factory=dict)


def _stratified_subset(y: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Sorted indices of ``n`` items of ``y`` with class proportions kept (seeded)."""
    if n >= len(y):
        return np.arange(len(y))
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(y, return_counts=True)
    quota = np.floor(counts / len(y) * n).astype(int)
    for i in np.argsort(-(counts / len(y) * n - quota))[: n - quota.sum()]:
        quota[i] += 1
    keep = [rng.permutation(np.flatnonzero(y == c))[:q] for c, q in zip(classes, quota, strict=True)]
    return np.sort(np.concatenate(keep))


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as fh:
        data = fh.read()
    ndim = data[3]
    dims = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _write_idx(path: Path, arr: np.ndarray) -> None:
    header = b"\x00\x00\x08" + bytes([arr.ndim]) + struct.pack(">" + "I" * arr.ndim, *arr.shape)
    tmp = path.with_name(path.name + ".tmp")
    with gzip.open(tmp, "wb", compresslevel=1) as fh:
        fh.write(header + np.ascontiguousarray(arr, dtype=np.uint8).tobytes())
    tmp.replace(path)


def fashion_subset(n_train: int, n_test: int, seed: int = 0) -> Path:
    """An IDX folder holding a seeded stratified Fashion-MNIST subset (train and test both cut).

    ``RunOptions`` forwards ``max_train`` but not ``max_test``, so the subset is written as
    its own IDX folder; its name contains "fashion" so the loader keeps the class names.
    """
    if not (FASHION_DIR / "train-images-idx3-ubyte.gz").is_file():
        raise FileNotFoundError(f"{FASHION_DIR} is missing: run 'apt-get install -y dataset-fashion-mnist'")
    out = CACHE / "data" / f"fashion-mnist-{n_train}-{n_test}-s{seed}"
    if (out / "t10k-labels-idx1-ubyte.gz").is_file():
        return out
    out.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        x = _read_idx(FASHION_DIR / f"{prefix}-images-idx3-ubyte.gz")
        y = _read_idx(FASHION_DIR / f"{prefix}-labels-idx1-ubyte.gz")
        keep = _stratified_subset(y, n, seed)
        _write_idx(out / f"{prefix}-images-idx3-ubyte.gz", x[keep])
        _write_idx(out / f"{prefix}-labels-idx1-ubyte.gz", y[keep])  # labels last: marks completion
    return out


def signs_split(test_fraction: float = 0.2, seed: int = 0) -> Path:
    """``train/<class>`` and ``test/<class>`` symlink trees over the photos (seeded stratified split).

    The photos have no test split of their own; the few 3024 x 3024 files stay in.
    """
    if not SIGNS_DIR.is_dir():
        raise FileNotFoundError(f"{SIGNS_DIR} is missing (the shared Sign Language Digits photos)")
    out = CACHE / "data" / f"sign-language-digits-split-s{seed}"
    done = out / "split.json"
    if done.is_file():
        return out
    rng = np.random.default_rng(seed)
    counts: dict[str, dict[str, int]] = {}
    for cls_dir in sorted(p for p in SIGNS_DIR.iterdir() if p.is_dir()):
        files = sorted(f for f in cls_dir.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        order = rng.permutation(len(files))
        n_test = round(len(files) * test_fraction)
        for rank, i in enumerate(order):
            split = "test" if rank < n_test else "train"
            link = out / split / cls_dir.name / files[i].name
            link.parent.mkdir(parents=True, exist_ok=True)
            if not link.is_symlink():
                link.symlink_to(files[i])
        counts[cls_dir.name] = {"train": len(files) - n_test, "test": n_test}
    done.write_text(json.dumps({"source": str(SIGNS_DIR), "seed": seed, "counts": counts}, indent=1))
    return out


def resolve(name: str, *, full: bool = False) -> BenchDataset:
    """The data spec (and the user's description, if any) for benchmark dataset ``name``."""
    if name == "digits":
        return BenchDataset("digits", "demo", "scikit-learn digits, 8x8 upscaled to 32 px, 10 classes")
    if name == "fashion":
        n_train, n_test = (60000, 10000) if full else (3000, 1000)
        spec = "fashion-mnist" if full else str(fashion_subset(n_train, n_test))
        return BenchDataset("fashion", spec, f"Fashion-MNIST {n_train} train / {n_test} test, 28 px gray",
                            info={"n_train": n_train, "n_test": n_test})
    if name == "signs":
        return BenchDataset("signs", str(signs_split()), "Sign Language Digits photos, 80/20 split, 100 px RGB",
                            info={"source": str(SIGNS_DIR)})
    if name == "orientation":
        n_train, n_test, size = (8000, 2000, 48) if full else (2000, 800, 32)
        root = write_orientation_task(CACHE / "data" / f"orientation-{n_train}-{size}", n_train=n_train,
                                      n_test=n_test, size=size, seed=0)
        return BenchDataset("orientation", str(root), f"'F' glyphs, 8 orientation classes, {n_train} train / "
                            f"{n_test} test at {size} px", info={"description_when_told": ORIENTATION_DESCRIPTION})
    raise ValueError(f"unknown benchmark dataset {name!r}; choose from {', '.join(DATASETS)}")
