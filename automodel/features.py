"""Pretrained features, computed once per run and reused by every candidate that asks.

A frozen pretrained backbone is the cheapest strong model on a CPU: one forward pass
over the data (no backward, no augmentation), then a head that trains in seconds. A
data component asks for it by naming a feature set in ``DataRecipe.features``, for
example ``"efficientnet_lite0@224"`` (backbone ``@`` input size). The executor extracts
the set once into the run directory (``features/<key>/``), with this module's own code
(never generated code), and the harness then feeds the cached vectors instead of images.

The cache holds features only: no labels of any split. ``train_flip.npy`` holds the
features of the horizontally mirrored training images, a free augmentation view.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from automodel._io import atomic_open, atomic_write_json

__all__ = [
    "BACKBONES",
    "FeatureSet",
    "extract_features",
    "extraction_cost_s",
    "feature_key",
    "features_ready",
    "load_feature_split",
    "parse_feature_key",
]

_KEY = re.compile(r"^([a-z0-9_]+)@(\d{2,3})$")


@dataclass(frozen=True)
class Backbone:
    """A pretrained backbone usable for features, with its measured CPU cost."""

    name: str
    native_size: int
    dim: int
    cpu_ms_per_image: float
    """Forward-only milliseconds per image at ``native_size`` on 2 CPU cores (measured here)."""
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)


BACKBONES: dict[str, Backbone] = {
    # Forward-only cost per image measured on this kind of machine (2 cores, torch 2.14,
    # batch 64, inference mode). EfficientNet-Lite normalises with mean = std = 0.5.
    "efficientnet_lite0": Backbone("efficientnet_lite0", 224, 1280, 13.0),
    "efficientnet_lite1": Backbone("efficientnet_lite1", 240, 1280, 19.0),
    "efficientnet_lite2": Backbone("efficientnet_lite2", 260, 1280, 28.0),
}


def feature_key(backbone: str, size: int) -> str:
    return f"{backbone}@{int(size)}"


def parse_feature_key(key: str) -> tuple[str, int]:
    """``"efficientnet_lite0@224"`` -> ``("efficientnet_lite0", 224)``.

    Raises:
        ValueError: a malformed key or an unknown backbone (the message lists the choices).
    """
    m = _KEY.match(key.strip())
    if not m:
        raise ValueError(f"feature set {key!r} is not '<backbone>@<size>', e.g. 'efficientnet_lite0@224'")
    name, size = m.group(1), int(m.group(2))
    if name not in BACKBONES:
        raise ValueError(f"unknown feature backbone {name!r}; choose one of {sorted(BACKBONES)}")
    if not 32 <= size <= 512:
        raise ValueError(f"feature input size {size} is out of range 32..512")
    return name, size


def extraction_cost_s(key: str, num_images: int, *, cuda: bool = False) -> float:
    """Estimated seconds to extract ``key`` for ``num_images`` images (train views included by the caller)."""
    name, size = parse_feature_key(key)
    b = BACKBONES[name]
    per_image = b.cpu_ms_per_image * (size / b.native_size) ** 2 / 1000
    return num_images * per_image * (0.05 if cuda else 1.0) + 8.0  # + process start and weight loading


@dataclass(frozen=True)
class FeatureSet:
    """Where one extracted feature set lives and what it holds."""

    root: Path
    key: str

    @property
    def dir(self) -> Path:
        return self.root / self.key.replace("@", "-")

    def path(self, split: str) -> Path:
        return self.dir / f"{split}.npy"

    def meta(self) -> dict[str, Any]:
        return dict(json.loads((self.dir / "meta.json").read_text(encoding="utf-8")))


def features_ready(root: Path, key: str, fingerprint: str) -> bool:
    """True when ``key`` was extracted from the prepared data with this ``fingerprint``."""
    fs = FeatureSet(Path(root), key)
    try:
        return fs.meta().get("fingerprint") == fingerprint
    except (OSError, ValueError):
        return False


def load_feature_split(root: Path, key: str, split: str) -> np.ndarray:
    """The float32 ``(N, D)`` features of one split (``train``, ``train_flip``, ``val``, ``test``).

    Raises:
        FileNotFoundError: the set was not extracted (the message says how to get it).
    """
    path = FeatureSet(Path(root), key).path(split)
    if not path.is_file():
        raise FileNotFoundError(
            f"feature set {key!r} has no {split} split at {path}: the executor extracts a set when the data "
            f"component names it at module level (FEATURES = {key!r}) and returns it in DataRecipe.features"
        )
    return np.load(path).astype(np.float32)


def _build_backbone(name: str, local_weights: dict[str, str], hub: bool) -> Any:
    import timm

    from automodel.weights import load_local_weights

    model = timm.create_model(name, pretrained=hub and name not in local_weights, num_classes=0)
    if name in local_weights:
        load_local_weights(model, local_weights[name])
    elif not hub:
        raise FileNotFoundError(
            f"no pretrained weights for {name}: neither a local file nor the model hub; "
            f"available here: {sorted(local_weights)}"
        )
    return model.eval()


def extract_features(
    data_dir: Path,
    root: Path,
    key: str,
    *,
    local_weights: dict[str, str],
    hub: bool = False,
    device: str = "cpu",
    batch_size: int = 64,
    on_progress: Callable[[str, int, int], None] | None = None,
) -> dict[str, Any]:
    """Extract ``key`` for every split of the prepared data in ``data_dir`` into ``root``.

    Trusted code: it runs in an executor job, never with generated code loaded. Returns
    the meta written beside the arrays.
    """
    import torch

    from automodel.data import PreparedData

    name, size = parse_feature_key(key)
    backbone = BACKBONES[name]
    data = PreparedData.load(Path(data_dir))
    model = _build_backbone(name, local_weights, hub).to(device)
    mean = torch.tensor(backbone.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(backbone.std, device=device).view(1, 3, 1, 1)
    fs = FeatureSet(Path(root), key)
    fs.dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    counts: dict[str, int] = {}
    splits = [s for s in ("train", "val", "test") if (Path(data_dir) / f"{s}_x.npy").is_file()]
    for split in splits:
        x, _ = data.arrays(split)
        views: dict[str, list[np.ndarray]] = {split: []}
        if split == "train":
            views["train_flip"] = []
        with torch.inference_mode():
            for start in range(0, len(x), batch_size):
                xb = torch.from_numpy(np.ascontiguousarray(x[start:start + batch_size])).to(device)
                xb = xb.permute(0, 3, 1, 2).float().div_(255)
                if xb.shape[1] == 1:
                    xb = xb.expand(-1, 3, -1, -1)
                xb = torch.nn.functional.interpolate(xb, size=(size, size), mode="bilinear", antialias=True,
                                                     align_corners=False)
                xb = (xb - mean) / std
                views[split].append(model(xb).float().cpu().numpy())
                if split == "train":
                    views["train_flip"].append(model(torch.flip(xb, dims=[3])).float().cpu().numpy())
                if on_progress is not None:
                    on_progress(split, min(start + batch_size, len(x)), len(x))
        for view, parts in views.items():
            arr = np.concatenate(parts) if parts else np.zeros((0, backbone.dim), np.float32)
            with atomic_open(fs.path(view), "wb") as f:
                np.save(f, arr.astype(np.float16), allow_pickle=False)
            counts[view] = int(arr.shape[0])
    meta = {
        "key": key, "backbone": name, "input_size": size, "dim": backbone.dim, "counts": counts,
        "fingerprint": data.meta.fingerprint, "seconds": round(time.perf_counter() - t0, 1),
    }
    atomic_write_json(fs.dir / "meta.json", meta)
    return meta
