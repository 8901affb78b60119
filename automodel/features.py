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
    "EXTRACT_BATCH",
    "FeatureSet",
    "build_backbone",
    "extract_features",
    "extraction_cost_s",
    "feature_key",
    "feature_keys",
    "features_ready",
    "load_feature_split",
    "measured_cost_scale",
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


EXTRACT_BATCH = 8
"""Images per forward pass during extraction. With channels-last memory, small batches are the
fastest on a CPU (depthwise convolutions stay in cache): on 2 cores lite0@224 takes 13.9 ms per
image at batch 8, 16.9 at 32, and 38-62 at batch 64 in the default layout
(``python -m benchmarks.backbone_cost``)."""

BACKBONES: dict[str, Backbone] = {
    # Forward-only cost per image measured on this kind of machine (2 cores, torch 2.14.1,
    # batch EXTRACT_BATCH, channels-last, inference mode): benchmarks/results/backbone_cost.json.
    # EfficientNet-Lite normalises with mean = std = 0.5.
    "efficientnet_lite0": Backbone("efficientnet_lite0", 224, 1280, 16.0),
    "efficientnet_lite1": Backbone("efficientnet_lite1", 240, 1280, 22.0),
    "efficientnet_lite2": Backbone("efficientnet_lite2", 260, 1280, 30.0),
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


def _table_s_per_image(key: str) -> float:
    name, size = parse_feature_key(key)
    b = BACKBONES[name]
    return b.cpu_ms_per_image * (size / b.native_size) ** 2 / 1000


def extraction_cost_s(key: str, num_images: int, *, cuda: bool = False, scale: float = 1.0) -> float:
    """Estimated seconds to extract ``key`` for ``num_images`` images (train views included by the caller).

    ``scale`` corrects the table for this machine: :func:`measured_cost_scale` of the sets
    this run already extracted (1.0 before the first).
    """
    per_image = _table_s_per_image(key) * scale
    return num_images * per_image * (0.05 if cuda else 1.0) + 8.0  # + process start and weight loading


def measured_cost_scale(root: Path) -> float:
    """How much slower (> 1) or faster (< 1) than the table the extractions under ``root`` ran.

    The median over the feature sets found, of measured seconds per image divided by the
    table's; 1.0 when none is found. Bounded to 0.25..8 so that one odd measurement cannot
    rule every backbone in or out.
    """
    ratios = []
    for meta_path in sorted(Path(root).glob("*/meta.json")):
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            images = sum(int(v) for v in meta["counts"].values())
            if images > 0 and float(meta["seconds"]) > 0:
                ratios.append(float(meta["seconds"]) / images / _table_s_per_image(str(meta["key"])))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue
    if not ratios:
        return 1.0
    ratios.sort()
    return min(max(ratios[len(ratios) // 2], 0.25), 8.0)


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


def features_ready(root: Path, key: str, fingerprint: str, *, flip: bool) -> bool:
    """True when ``key`` was extracted from the prepared data with this ``fingerprint``
    (and, when ``flip`` and the data has a training split, with its mirrored images)."""
    fs = FeatureSet(Path(root), key)
    try:
        meta = fs.meta()
        counts = meta.get("counts")
        if not isinstance(counts, dict):  # damaged: extract it again
            return False
        mirrored = not flip or "train" not in counts or "train_flip" in counts
        return bool(meta.get("fingerprint") == fingerprint and mirrored)
    except (OSError, ValueError, TypeError):
        return False


def feature_keys(spec: str) -> list[str]:
    """The feature sets a recipe names: one key, or several joined by ``+`` whose vectors are
    concatenated (``"efficientnet_lite0@224+efficientnet_lite1@240"``: 2560 features).

    Raises:
        ValueError: a malformed or unknown key, or the same set twice.
    """
    keys = [k.strip() for k in str(spec).split("+")]
    for key in keys:
        parse_feature_key(key)
    if len(set(keys)) != len(keys):
        raise ValueError(f"feature spec {spec!r} names the same set twice")
    return keys


def load_feature_split(root: Path, key: str, split: str) -> np.ndarray:
    """The float32 ``(N, D)`` features of one split (``train``, ``train_flip``, ``val``, ``test``).

    ``key`` may join several sets with ``+`` (see :func:`feature_keys`): their vectors are
    concatenated in that order.

    Raises:
        FileNotFoundError: the set was not extracted (the message says how to get it).
        ValueError: the joined sets disagree on the number of images.
    """
    keys = feature_keys(key)
    if len(keys) > 1:
        parts = [load_feature_split(root, k, split) for k in keys]
        if len({p.shape[0] for p in parts}) != 1:
            raise ValueError(f"feature sets {keys} hold different numbers of {split} images: "
                             f"{[p.shape[0] for p in parts]}; extract them again from the same data")
        return np.concatenate(parts, axis=1)
    path = FeatureSet(Path(root), key).path(split)
    if not path.is_file():
        raise FileNotFoundError(
            f"feature set {key!r} has no {split} split at {path}: the executor extracts a set when the data "
            f"component names it at module level (FEATURES = {key!r}) and returns it in DataRecipe.features"
        )
    return np.load(path).astype(np.float32)


def build_backbone(name: str, local_weights: dict[str, str], hub: bool, device: str = "cpu") -> Any:
    """The pretrained backbone ``name`` without its classifier, in eval mode and channels-last
    memory (the layout feature extraction feeds it), on ``device``.

    Raises:
        FileNotFoundError: no local weight file and no model hub (the message lists what exists).
    """
    import timm
    import torch

    from automodel.weights import load_local_weights

    model = timm.create_model(name, pretrained=hub and name not in local_weights, num_classes=0)
    if name in local_weights:
        load_local_weights(model, local_weights[name])
    elif not hub:
        raise FileNotFoundError(
            f"no pretrained weights for {name}: neither a local file nor the model hub; "
            f"available here: {sorted(local_weights)}"
        )
    return model.eval().to(device).to(memory_format=torch.channels_last)


def extract_features(
    data_dir: Path,
    root: Path,
    key: str,
    *,
    local_weights: dict[str, str],
    hub: bool = False,
    device: str = "cpu",
    batch_size: int = EXTRACT_BATCH,
    flip: bool = True,
    on_progress: Callable[[str, int, int], None] | None = None,
) -> dict[str, Any]:
    """Extract ``key`` for every split of the prepared data in ``data_dir`` into ``root``.

    ``flip``: also the mirrored training images (``train_flip``, a free augmentation view
    for a recipe that flips; it costs as much as the training split itself).
    Trusted code: it runs in an executor job, never with generated code loaded. Returns
    the meta written beside the arrays.
    """
    import torch

    from automodel.data import PreparedData

    name, size = parse_feature_key(key)
    backbone = BACKBONES[name]
    data = PreparedData.load(Path(data_dir))
    model = build_backbone(name, local_weights, hub, device)
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
        if split == "train" and flip:
            views["train_flip"] = []
        with torch.inference_mode():
            for start in range(0, len(x), batch_size):
                xb = torch.from_numpy(np.ascontiguousarray(x[start:start + batch_size])).to(device)
                xb = xb.permute(0, 3, 1, 2).float().div_(255)
                if xb.shape[1] == 1:
                    xb = xb.expand(-1, 3, -1, -1)
                xb = torch.nn.functional.interpolate(xb, size=(size, size), mode="bilinear", antialias=True,
                                                     align_corners=False)
                xb = ((xb - mean) / std).contiguous(memory_format=torch.channels_last)
                views[split].append(model(xb).float().cpu().numpy())
                if "train_flip" in views and split == "train":
                    views["train_flip"].append(model(torch.flip(xb, dims=[3]).contiguous(memory_format=torch.channels_last)).float().cpu().numpy())
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
