"""torchvision datasets by name, and MNIST-style IDX files (e.g. Debian's Fashion-MNIST).

``torchvision:CIFAR10`` or ``CIFAR10`` downloads into ``<cache>/torchvision/<Name>`` when
the network answers a quick probe; offline and not cached, it fails within seconds with
a message to pass a local folder. ``fashion-mnist`` (or any folder holding
``train-images-idx3-ubyte[.gz]`` and friends) reads IDX files, by default from
``/usr/share/datasets/fashion-mnist`` (``apt-get install dataset-fashion-mnist``).
``max_train`` / ``max_test`` keep a seeded stratified subset.
"""

from __future__ import annotations

import gzip
import socket
import struct
import threading
from pathlib import Path
from typing import Any

import numpy as np
import structlog

from automodel.data._errors import DataError
from automodel.data._source import DatasetSource, Sample, SourceInfo, cache_dir, register_source
from automodel.data._split import stratified_subset

__all__ = ["TORCHVISION_DATASETS", "load_idx", "load_torchvision", "network_available", "read_idx"]

log = structlog.get_logger(__name__)

TORCHVISION_DATASETS: dict[str, str] = {
    "cifar10": "www.cs.toronto.edu",
    "cifar100": "www.cs.toronto.edu",
    "svhn": "ufldl.stanford.edu",
    "fashionmnist": "fashion-mnist.s3-website.eu-central-1.amazonaws.com",
    "mnist": "ossci-datasets.s3.amazonaws.com",
    "kmnist": "codh.rois.ac.jp",
    "qmnist": "raw.githubusercontent.com",
    "stl10": "ai.stanford.edu",
}
"""Lower-case name -> host probed before a download."""
_CANONICAL = {
    n.lower(): n
    for n in ("CIFAR10", "CIFAR100", "SVHN", "FashionMNIST", "MNIST", "KMNIST", "QMNIST", "STL10")
}
_SPLIT_ARG = {"svhn", "stl10"}

FASHION_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
_IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def network_available(host: str, port: int = 443, timeout: float = 2.0) -> bool:
    """Whether a TCP connection to ``host`` opens within ``timeout`` seconds (DNS included)."""
    ok: list[bool] = []

    def probe() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            ok.append(True)
        except OSError:
            pass

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout + 0.5)
    return bool(ok)


def _norm(name: str) -> str:
    return name.strip().lower().replace("-", "").replace("_", "")


def _subset(
    split: str, x: np.ndarray, y: np.ndarray, limit: int | None, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    if limit is None or limit >= len(y):
        return x, y
    keep = stratified_subset(y, limit, seed)
    log.info("data.subset", split=split, kept=len(keep), of=len(y), seed=seed)
    return x[keep], y[keep]


def _array_source(
    kind: str,
    spec: str,
    classes: list[str],
    splits: dict[str, tuple[np.ndarray, np.ndarray]],
    *,
    max_train: int | None,
    max_test: int | None,
    seed: int,
    root: Path,
) -> DatasetSource:
    arrays: dict[str, np.ndarray] = {}
    samples: dict[str, list[Sample]] = {}
    for split, (x, y) in splits.items():
        x, y = _subset(split, x, y, max_train if split == "train" else max_test, seed)
        arrays[split] = np.ascontiguousarray(x)
        samples[split] = [
            Sample(id=f"{split}_{i}", label=classes[int(c)], index=i, split=split) for i, c in enumerate(y)
        ]
    return DatasetSource(
        kind=kind,
        spec=spec,
        classes=classes,
        train=samples["train"],
        test=samples.get("test", []),
        test_labeled="test" in samples,
        arrays=arrays,
        root=root,
    )


def _to_arrays(ds: Any) -> tuple[np.ndarray, np.ndarray]:
    data = ds.data
    data = data.numpy() if hasattr(data, "numpy") else np.asarray(data)
    labels = getattr(ds, "targets", None)
    if labels is None:
        labels = ds.labels
    labels = labels.numpy() if hasattr(labels, "numpy") else np.asarray(labels)
    if data.ndim == 4 and data.shape[1] in (1, 3) and data.shape[-1] not in (1, 3):
        data = data.transpose(0, 2, 3, 1)  # SVHN / STL10 store NCHW
    return data.astype(np.uint8, copy=False), labels.astype(np.int64)


def load_torchvision(
    spec: str,
    *,
    root: str | Path | None = None,
    max_train: int | None = None,
    max_test: int | None = None,
    seed: int = 0,
    probe_timeout: float = 2.0,
    **options: Any,
) -> DatasetSource:
    """Load a torchvision dataset by name (downloads when online).

    Raises:
        DataError: unknown name, or not cached and no network (within ~``probe_timeout`` s).
    """
    key = _norm(spec)
    if key not in _CANONICAL:
        raise DataError(
            f"Unknown torchvision dataset {spec!r}; supported: {', '.join(_CANONICAL.values())}. "
            "For anything else pass a local folder."
        )
    name = _CANONICAL[key]
    data_root = Path(root).expanduser() if root else cache_dir() / "torchvision" / name
    cached = data_root.is_dir() and any(data_root.iterdir())
    download = False
    if not cached:
        if not network_available(TORCHVISION_DATASETS[key], timeout=probe_timeout):
            raise DataError(
                f"torchvision dataset {name} is not cached in {str(data_root)!r} and the network is "
                f"unreachable ({TORCHVISION_DATASETS[key]} did not answer in {probe_timeout:.0f} s). "
                "Pass a local folder instead (ImageFolder tree, Kaggle CSV layout, or an IDX folder "
                "such as /usr/share/datasets/fashion-mnist), or download it where there is network."
            )
        download = True
    import torchvision.datasets as tvd

    cls = getattr(tvd, name)
    data_root.mkdir(parents=True, exist_ok=True)
    splits: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    classes: list[str] = []
    for split in ("train", "test"):
        kwargs: dict[str, Any] = {"split": split} if key in _SPLIT_ARG else {"train": split == "train"}
        try:
            ds = cls(str(data_root), download=download, **kwargs)
        except Exception as exc:  # noqa: BLE001 - torchvision raises RuntimeError/OSError/URLError
            raise DataError(
                f"Could not load torchvision {name} ({split}) from {str(data_root)!r}: {exc}. "
                "Delete that folder to re-download, or pass a local folder instead."
            ) from exc
        splits[split] = _to_arrays(ds)
        classes = [str(c) for c in getattr(ds, "classes", [])] or classes
    n = int(max(y.max() for _, y in splits.values())) + 1
    if len(classes) != n:
        classes = [str(i) for i in range(n)]
    return _array_source(
        "torchvision",
        name,
        classes,
        splits,
        max_train=max_train,
        max_test=max_test,
        seed=seed,
        root=data_root,
    )


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (``.gz`` or raw) of unsigned bytes."""
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as fh:
            data = fh.read()
        if len(data) < 4 or data[0:2] != b"\x00\x00" or data[2] != 0x08:
            raise ValueError("bad magic number (expected unsigned-byte IDX)")
        ndim = data[3]
        dims = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
        return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)
    except (OSError, ValueError, struct.error, EOFError) as exc:
        raise DataError(f"Cannot read IDX file {str(path)!r}: {exc}. Re-download or reinstall it.") from exc


def _idx_path(folder: Path, stem: str) -> Path | None:
    return next((folder / f"{stem}{ext}" for ext in (".gz", "") if (folder / f"{stem}{ext}").is_file()), None)


def load_idx(
    spec: str = "",
    *,
    max_train: int | None = None,
    max_test: int | None = None,
    seed: int = 0,
    classes: list[str] | None = None,
    **options: Any,
) -> DatasetSource:
    """Load MNIST-style IDX files from a folder (``fashion-mnist`` = the Debian package).

    Raises:
        DataError: folder or files missing, unreadable files, images/labels count mismatch.
    """
    fashion = spec.strip().lower() in ("fashion-mnist", "fashion_mnist", "")
    folder = DEBIAN_FASHION_MNIST if fashion else Path(spec).expanduser()
    if not folder.is_dir():
        raise DataError(
            f"IDX folder {str(folder)!r} does not exist. For Fashion-MNIST run "
            "'apt-get install dataset-fashion-mnist', or pass the folder holding "
            "train-images-idx3-ubyte.gz, or use torchvision:FashionMNIST when online."
        )
    splits: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for split, (img_stem, lab_stem) in _IDX_FILES.items():
        img_path, lab_path = _idx_path(folder, img_stem), _idx_path(folder, lab_stem)
        if img_path is None or lab_path is None:
            if split == "train":
                raise DataError(
                    f"{str(folder)!r} lacks {img_stem}[.gz] / {lab_stem}[.gz]; not an IDX dataset."
                )
            continue
        x, y = read_idx(img_path), read_idx(lab_path).astype(np.int64)
        if len(x) != len(y) or x.ndim != 3:
            raise DataError(f"{str(img_path)!r}: {x.shape} images but {len(y)} labels; files do not match.")
        splits[split] = (x, y)
    n = int(max(y.max() for _, y in splits.values())) + 1
    if classes is None:
        classes = (
            FASHION_CLASSES if "fashion" in str(folder).lower() and n == 10 else [str(i) for i in range(n)]
        )
    if len(classes) < n:
        raise DataError(f"{len(classes)} class names given but labels go up to {n - 1} in {str(folder)!r}.")
    return _array_source(
        "idx",
        str(folder),
        list(classes),
        splits,
        max_train=max_train,
        max_test=max_test,
        seed=seed,
        root=folder,
    )


def _detect_idx(spec: str) -> bool:
    if spec.strip().lower() in ("fashion-mnist", "fashion_mnist"):
        return True
    folder = Path(spec).expanduser()
    return folder.is_dir() and _idx_path(folder, _IDX_FILES["train"][0]) is not None


register_source(
    SourceInfo(
        name="idx",
        description="MNIST-style IDX folder, or 'fashion-mnist' (Debian dataset-fashion-mnist)",
        detect=_detect_idx,
        build=load_idx,
        priority=20,
    )
)
register_source(
    SourceInfo(
        name="torchvision",
        description=f"torchvision names: {', '.join(_CANONICAL.values())} (downloads when online)",
        detect=lambda spec: _norm(spec) in _CANONICAL and not Path(spec).exists(),
        build=load_torchvision,
        priority=60,
    )
)
