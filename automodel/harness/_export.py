"""Export mode: a trained candidate, its preprocessing and its softmax traced into one model file.

This runs in the harness process, because it builds the generated components. The exported
model takes what the data layer stores for every image, a uint8 batch ``(N, C, S, S)`` (``C``
and ``S`` are the run's ``in_chans`` and ``stored_size``), and returns class probabilities
computed exactly as predict mode computes them: the data component's ``eval_transform`` (or, for
a head on cached pretrained features, the backbone with the extraction's resize, normalisation
and float16 rounding), the model, a softmax, and the mirrored-image average when the recipe asks
for it. The job holds no images: it checks the file it wrote against the eager model on a
seeded random batch and reports the largest difference (its own report, informational).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from automodel._io import atomic_open, durable_replace
from automodel.executors import OUT_DIR, export_name
from automodel.harness._job import HarnessJob, JobData
from automodel.harness._train import Candidate, owned_by, trained_candidate

__all__ = ["DeployedClassifier", "export", "portable_resize"]

ONNX_OPSET = 17


class DeployedClassifier(torch.nn.Module):
    """uint8 ``(N, C, S, S)`` images in, class probabilities ``(N, K)`` out: what predict mode computes."""

    feature_mean: torch.Tensor
    feature_std: torch.Tensor

    def __init__(self, cand: Candidate, backbone: torch.nn.Module | None = None, feature_size: int = 0,
                 feature_mean: tuple[float, ...] = (0.5, 0.5, 0.5), feature_std: tuple[float, ...] = (0.5, 0.5, 0.5)):
        super().__init__()
        self.model = cand.model
        self.transform: Callable[[torch.Tensor], torch.Tensor] = cand.recipe.eval_transform
        self.backbone = backbone
        self.feature_size = int(feature_size)
        self.register_buffer("feature_mean", torch.tensor(feature_mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("feature_std", torch.tensor(feature_std, dtype=torch.float32).view(1, -1, 1, 1))
        self.tta_hflip = bool(cand.recipe.tta_hflip) and backbone is None

    def _probs(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x).float().softmax(1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.backbone is not None:  # as automodel.features.extract_features, then the cache's float16
            x = images.float() / 255.0
            if x.shape[1] == 1:
                x = x.expand(-1, 3, -1, -1)
            x = F.interpolate(x, size=(self.feature_size, self.feature_size), mode="bilinear", antialias=True,
                              align_corners=False)
            x = (x - self.feature_mean) / self.feature_std
            return self._probs(self.backbone(x).float().half().float())
        x = self.transform(images)
        probs = self._probs(x)
        if self.tta_hflip:
            probs = (probs + self._probs(torch.flip(x, dims=[3]))) / 2
        return probs


@contextmanager
def portable_resize() -> Iterator[None]:
    """Antialiased ``F.interpolate`` computed as two matrix products inside the block.

    The ONNX exporter has no antialiased resize; a resize of a fixed size is linear and
    separable, so it is ``W_h @ x @ W_w^T`` with matrices made by resizing one-hot rows with
    torch itself (equal to float precision). Run the model once in the block before exporting:
    that builds the matrices outside the trace, which then records them as constants.
    """
    original = F.interpolate
    cache: dict[tuple[int, int, str, bool | None], torch.Tensor] = {}

    def matrix(n: int, m: int, mode: str, align_corners: bool | None) -> torch.Tensor:
        key = (n, m, mode, align_corners)
        if key not in cache:
            # One-hot rows, two columns wide: a side of 1 takes another path in torch (not the same weights).
            eye = torch.eye(n).reshape(n, 1, n, 1).expand(n, 1, n, 2).contiguous()
            cols = original(eye, size=(m, 2), mode=mode, align_corners=align_corners, antialias=True)
            cache[key] = cols[:, 0, :, 0].t().contiguous()  # (m, n): row i weighs the inputs of output i
        return cache[key]

    def interpolate(input: torch.Tensor, size: Any = None, scale_factor: Any = None, mode: str = "nearest",
                    align_corners: bool | None = None, recompute_scale_factor: bool | None = None,
                    antialias: bool = False) -> torch.Tensor:
        if antialias and input.dim() == 4 and mode in ("bilinear", "bicubic"):
            h, w = int(input.shape[-2]), int(input.shape[-1])
            if size is not None:
                oh, ow = (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))
            else:
                sh, sw = (scale_factor, scale_factor) if isinstance(scale_factor, (int, float)) else scale_factor
                oh, ow = int(h * float(sh)), int(w * float(sw))
            rows = matrix(h, oh, mode, align_corners).to(input.dtype)
            cols = matrix(w, ow, mode, align_corners).to(input.dtype)
            return torch.matmul(torch.matmul(rows, input), cols.t())
        return original(input, size=size, scale_factor=scale_factor, mode=mode, align_corners=align_corners,
                        recompute_scale_factor=recompute_scale_factor, antialias=antialias)

    setattr(F, "interpolate", interpolate)  # noqa: B010 - components look it up at call time
    try:
        yield
    finally:
        setattr(F, "interpolate", original)  # noqa: B010


def _write_onnx(wrapper: torch.nn.Module, sample: torch.Tensor, path: Path) -> torch.Tensor | None:
    tmp = path.with_name(f".{path.name}.tmp")
    with portable_resize():
        wrapper(sample)  # builds the resize matrices outside the trace
        torch.onnx.export(
            wrapper, (sample,), str(tmp), dynamo=False, opset_version=ONNX_OPSET,
            input_names=["images"], output_names=["probabilities"],
            dynamic_axes={"images": {0: "batch"}, "probabilities": {0: "batch"}},
        )
    durable_replace(tmp, path)
    try:
        import onnxruntime
    except ImportError:
        return None
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = session.run(None, {"images": sample.numpy()})[0]
    return torch.from_numpy(np.asarray(out))


def _write_torchscript(wrapper: torch.nn.Module, sample: torch.Tensor, path: Path) -> torch.Tensor:
    traced = torch.jit.trace(wrapper, sample, check_trace=False)
    with atomic_open(path, "wb") as f:
        torch.jit.save(traced, f)
    loaded = torch.jit.load(str(path))
    return loaded(sample)


def export(
    job: HarnessJob, job_dir: Path, modules: dict[str, ModuleType], files: dict[str, Path], data: JobData
) -> dict[str, Any]:
    """Write ``out/model.onnx`` or ``out/model.pt``; return the harness's report of what it wrote."""
    from automodel.features import BACKBONES, build_backbone, parse_feature_key

    cand = trained_candidate(job, job_dir, modules, files, data)
    cand.model.to("cpu").eval()  # a portable file: traced on the CPU
    backbone, size, mean, std = None, 0, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
    if cand.recipe.features:
        name, size = parse_feature_key(str(cand.recipe.features))
        weights = {n: os.path.abspath(p) for n, p in job.local_weights.items()}
        backbone = build_backbone(name, weights, job.hub_available, "cpu").to(memory_format=torch.contiguous_format)
        mean, std = BACKBONES[name].mean, BACKBONES[name].std
    wrapper = DeployedClassifier(cand, backbone, size, mean, std).eval()
    meta = data.meta
    gen = torch.Generator().manual_seed(job.seed)
    sample = torch.randint(0, 256, (2, int(meta.in_chans), int(meta.stored_size), int(meta.stored_size)),
                           dtype=torch.uint8, generator=gen)
    path = job_dir / OUT_DIR / export_name(job.export_format)
    with owned_by("model", files), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about constants: the input size is fixed by design
        expected = wrapper(sample)
        if job.export_format == "torchscript":
            got: torch.Tensor | None = _write_torchscript(wrapper, sample, path)
            checked = "torch.jit.load"
        else:
            got = _write_onnx(wrapper, sample, path)
            checked = "onnxruntime" if got is not None else ""
    diff = float((got.float() - expected).abs().max()) if got is not None else None
    return {
        "format": job.export_format,
        "file": path.name,
        "bytes": path.stat().st_size,
        "input": {"name": "images", "dtype": "uint8", "layout": "NCHW", "channels": int(meta.in_chans),
                  "size": int(meta.stored_size)},
        "output": {"name": "probabilities", "dtype": "float32", "classes": int(meta.num_classes)},
        "input_size": cand.recipe.input_size,
        "out_chans": cand.recipe.out_chans,
        "features": cand.recipe.features,
        "tta_hflip": wrapper.tta_hflip,
        "params": sum(p.numel() for p in wrapper.parameters()),
        "checked_with": checked,
        "max_abs_diff": diff,
        "onnx_opset": ONNX_OPSET if job.export_format == "onnx" else None,
    }
