"""Batched building blocks for component files.

Everything here works on whole batches on the training device, so augmentation costs a
few tensor ops per batch instead of Python work per image. Component code may use these
or write its own.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torchvision.transforms import v2

from automodel.interfaces._contracts import BatchMix, LossFn, LrSchedule

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def to_float(x: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...], out_chans: int) -> torch.Tensor:
    """uint8 ``(B,C,H,W)`` -> normalized float with ``out_chans`` channels (gray repeated to RGB)."""
    x = x.float().div_(255.0)
    if x.shape[1] == 1 and out_chans == 3:
        x = x.expand(-1, 3, -1, -1)
        mean, std = (mean * 3)[:3], (std * 3)[:3]
    m = torch.tensor(mean[: x.shape[1]], device=x.device).view(1, -1, 1, 1)
    s = torch.tensor(std[: x.shape[1]], device=x.device).view(1, -1, 1, 1)
    return (x - m) / s


def resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """Resize a float batch to ``size`` x ``size`` (antialiased when shrinking)."""
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=x.shape[-1] > size)


def random_resized_crop_flip(
    x: torch.Tensor,
    size: int,
    *,
    scale: tuple[float, float] = (0.35, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    hflip: bool = True,
    max_rotate_deg: float = 0.0,
) -> torch.Tensor:
    """Per-sample random resized crop, horizontal flip and rotation, as one ``grid_sample``.

    ``x`` is a float batch; each image gets its own crop area, aspect, offset, flip and
    angle. Use ``hflip=False`` and ``max_rotate_deg=0`` when orientation is the label.
    """
    b = x.shape[0]
    dev = x.device
    area = torch.empty(b, device=dev).uniform_(*scale)
    log_r = torch.empty(b, device=dev).uniform_(math.log(ratio[0]), math.log(ratio[1]))
    r = torch.exp(log_r)
    sw = torch.sqrt(area * r).clamp(max=1.0)
    sh = torch.sqrt(area / r).clamp(max=1.0)
    tx = (torch.rand(b, device=dev) * 2 - 1) * (1 - sw)
    ty = (torch.rand(b, device=dev) * 2 - 1) * (1 - sh)
    flip = torch.where(torch.rand(b, device=dev) < 0.5, -1.0, 1.0) if hflip else torch.ones(b, device=dev)
    ang = (torch.rand(b, device=dev) * 2 - 1) * math.radians(max_rotate_deg)
    cos, sin = torch.cos(ang), torch.sin(ang)
    theta = torch.stack(
        [torch.stack([sw * cos * flip, -sh * sin, tx], 1), torch.stack([sw * sin * flip, sh * cos, ty], 1)], 1
    )
    grid = F.affine_grid(theta, [b, x.shape[1], size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def random_crop_flip(x: torch.Tensor, *, pad: int = 4, hflip: bool = True) -> torch.Tensor:
    """Per-sample pad-and-crop translation (the CIFAR recipe) plus optional horizontal flip."""
    b, _, h, w = x.shape
    dev = x.device
    tx = torch.randint(-pad, pad + 1, (b,), device=dev).float() * 2 / w
    ty = torch.randint(-pad, pad + 1, (b,), device=dev).float() * 2 / h
    flip = torch.where(torch.rand(b, device=dev) < 0.5, -1.0, 1.0) if hflip else torch.ones(b, device=dev)
    zeros = torch.zeros(b, device=dev)
    ones = torch.ones(b, device=dev)
    theta = torch.stack([torch.stack([flip, zeros, tx], 1), torch.stack([zeros, ones, ty], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="nearest", padding_mode="zeros", align_corners=False)


def trivial_augment(x: torch.Tensor, *, chunk: int = 8, color: bool = True) -> torch.Tensor:
    """TrivialAugmentWide on a uint8 batch, one random op per chunk of ``chunk`` images.

    ``color=False`` leaves colour alone (use it when colour is the label): only
    geometric-free photometric ops that keep hue are then applied (autocontrast,
    equalize, sharpness).
    """
    if x.dtype != torch.uint8:
        raise TypeError("trivial_augment expects uint8 images; call it before to_float")
    if x.shape[1] not in (1, 3):
        return x
    op = v2.TrivialAugmentWide() if color else v2.RandomChoice([v2.RandomAutocontrast(1.0), v2.RandomEqualize(1.0), v2.RandomAdjustSharpness(2.0, 1.0)])
    return torch.cat([op(part) for part in x.split(chunk)], 0)


def random_erasing(x: torch.Tensor, *, p: float = 0.25, scale: tuple[float, float] = (0.02, 0.2)) -> torch.Tensor:
    """Per-sample random erasing of one rectangle (filled with zeros = the mean after normalising)."""
    b, _, h, w = x.shape
    dev = x.device
    keep = torch.rand(b, device=dev) >= p
    area = torch.empty(b, device=dev).uniform_(*scale) * h * w
    eh = area.sqrt().clamp(1, h).long()
    ew = area.sqrt().clamp(1, w).long()
    y0 = (torch.rand(b, device=dev) * (h - eh + 1)).long()
    x0 = (torch.rand(b, device=dev) * (w - ew + 1)).long()
    ys = torch.arange(h, device=dev).view(1, h, 1)
    xs = torch.arange(w, device=dev).view(1, 1, w)
    box = (ys >= y0.view(-1, 1, 1)) & (ys < (y0 + eh).view(-1, 1, 1)) & (xs >= x0.view(-1, 1, 1)) & (xs < (x0 + ew).view(-1, 1, 1))
    box &= ~keep.view(-1, 1, 1)
    return x.masked_fill(box.unsqueeze(1), 0.0)


def mixup_cutmix(*, mixup_alpha: float = 0.2, cutmix_alpha: float = 1.0, prob: float = 0.5, switch_prob: float = 0.5) -> BatchMix:
    """Batch-level MixUp / CutMix on float images and soft targets (applied with ``prob``)."""

    def mix(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if torch.rand(()) >= prob or x.shape[0] < 2:
            return x, y
        perm = torch.randperm(x.shape[0], device=x.device)
        use_cutmix = cutmix_alpha > 0 and (mixup_alpha <= 0 or torch.rand(()) < switch_prob)
        alpha = cutmix_alpha if use_cutmix else mixup_alpha
        lam = float(torch.distributions.Beta(alpha, alpha).sample())
        if use_cutmix:
            h, w = x.shape[-2:]
            ch, cw = int(h * math.sqrt(1 - lam)), int(w * math.sqrt(1 - lam))
            cy, cx = int(torch.randint(h, ())), int(torch.randint(w, ()))
            y0, y1 = max(cy - ch // 2, 0), min(cy + ch // 2, h)
            x0, x1 = max(cx - cw // 2, 0), min(cx + cw // 2, w)
            x = x.clone()
            x[:, :, y0:y1, x0:x1] = x[perm, :, y0:y1, x0:x1]
            lam = 1 - (y1 - y0) * (x1 - x0) / (h * w)
        else:
            x = x * lam + x[perm] * (1 - lam)
        return x, y * lam + y[perm] * (1 - lam)

    return mix


def soft_cross_entropy(label_smoothing: float = 0.0) -> LossFn:
    """Cross entropy against soft targets, with optional label smoothing."""

    def loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if label_smoothing > 0:
            target = target * (1 - label_smoothing) + label_smoothing / target.shape[1]
        return torch.sum(-target * F.log_softmax(logits.float(), dim=1), dim=1).mean()

    return loss


def class_weighted_cross_entropy(class_counts: tuple[int, ...], label_smoothing: float = 0.0) -> LossFn:
    """Soft cross entropy weighted by inverse class frequency (for imbalanced data)."""
    counts = torch.tensor(class_counts, dtype=torch.float32).clamp(min=1)
    weights = counts.sum() / (len(counts) * counts)

    def loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        w = weights.to(logits.device)
        if label_smoothing > 0:
            target = target * (1 - label_smoothing) + label_smoothing / target.shape[1]
        per = torch.sum(-target * F.log_softmax(logits.float(), dim=1) * w, dim=1)
        return per.sum() / (target * w).sum()

    return loss


def warmup_cosine(total_steps: int, *, warmup_steps: int = 0, min_ratio: float = 0.01) -> LrSchedule:
    """Linear warmup then cosine decay to ``min_ratio`` of the base learning rate."""
    total_steps = max(total_steps, 1)

    def schedule(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / max(warmup_steps, 1)
        t = min(1.0, (step - warmup_steps) / max(total_steps - warmup_steps, 1))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * t))

    return schedule


def one_cycle(total_steps: int, *, pct_start: float = 0.25, div: float = 25.0, final_div: float = 1e3) -> LrSchedule:
    """One-cycle schedule (cosine up then cosine down), as a multiplier of the peak lr."""
    total_steps = max(total_steps, 1)
    up = max(int(total_steps * pct_start), 1)

    def schedule(step: int) -> float:
        if step < up:
            t = step / up
            return 1 / div + (1 - 1 / div) * 0.5 * (1 - math.cos(math.pi * t))
        t = min(1.0, (step - up) / max(total_steps - up, 1))
        return 1 / final_div + (1 - 1 / final_div) * 0.5 * (1 + math.cos(math.pi * t))

    return schedule


def param_groups(
    model: torch.nn.Module, *, lr: float, weight_decay: float, head_lr_mult: float = 1.0, layer_decay: float | None = None
) -> list[dict[str, object]]:
    """Parameter groups: no weight decay on norms and biases; optional higher lr for the head
    and layer-wise lr decay (earlier blocks learn slower) for fine-tuning pretrained nets."""
    head_ids: set[int] = set()
    get_classifier = getattr(model, "get_classifier", None)
    if callable(get_classifier):
        head_ids = {id(p) for p in get_classifier().parameters()}
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    depth = len(named)
    groups: dict[tuple[float, float], list[torch.nn.Parameter]] = {}
    for i, (name, p) in enumerate(named):
        wd = 0.0 if p.ndim <= 1 or name.endswith(".bias") else weight_decay
        scale = head_lr_mult if id(p) in head_ids else 1.0
        if layer_decay is not None and id(p) not in head_ids:
            scale *= layer_decay ** ((depth - 1 - i) / max(depth - 1, 1) * 4)
        groups.setdefault((wd, lr * scale), []).append(p)
    return [{"params": ps, "weight_decay": wd, "lr": glr} for (wd, glr), ps in groups.items()]
