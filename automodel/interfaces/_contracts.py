"""The contract between the harness and the three component files.

A candidate pipeline is three Python files that engineers write:

``data.py``
    ``build_data(spec: DataSpec) -> DataRecipe``: input size, batch size, batched
    train/eval transforms (uint8 NCHW in, float NCHW out), optional batch-level mixing
    (MixUp / CutMix) and class-balanced sampling.
``model.py``
    ``build_model(spec: ModelSpec) -> torch.nn.Module``: architecture, pretrained
    weights, head, regularization. Returns logits of shape ``(B, num_classes)``.
``training.py``
    ``build_training(spec: TrainSpec, model: torch.nn.Module) -> TrainRecipe``:
    optimizer, per-step learning-rate schedule, loss, epochs, precision, EMA, clipping.

The harness owns the loop; components only build objects. Each file declares
``INTERFACE_VERSION = 1``. Data reaches component code as train and validation tensors
only: test labels never enter the process that runs component code.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

INTERFACE_VERSION = 1

BatchTransform = Callable[[torch.Tensor], torch.Tensor]
"""uint8 images ``(B, C, H, W)`` on the training device -> float ``(B, C', S, S)``."""

BatchMix = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
"""``(images float (B,C,S,S), soft targets (B,K)) -> (mixed images, mixed soft targets)``."""

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``(logits (B,K), soft targets (B,K) float) -> scalar loss``."""

LrSchedule = Callable[[int], float]
"""``global step -> multiplier`` applied to every param group's initial lr."""


@dataclass(frozen=True)
class PretrainedInfo:
    """What pretrained weights a model component can load in this environment.

    ``hub_available`` is true only when timm's hub answered a quick probe. ``local``
    maps timm model names to weight files that load with ``timm.create_model(name,
    pretrained=True, pretrained_cfg_overlay={"file": path})`` or
    :func:`automodel.weights.load_local_weights`.
    """

    hub_available: bool = False
    local: dict[str, str] = field(default_factory=dict)

    @property
    def any(self) -> bool:
        return self.hub_available or bool(self.local)


@dataclass(frozen=True)
class DataSpec:
    """What the data component knows about the dataset it transforms."""

    num_classes: int
    in_chans: int
    """Channels of the stored images: 1 (grayscale) or 3 (RGB)."""
    stored_size: int
    """Images reach the transforms as uint8 squares of this side."""
    num_train: int
    class_counts: tuple[int, ...]
    mean: tuple[float, ...]
    """Per-channel mean of the training images, in [0, 1]."""
    std: tuple[float, ...]
    device: str
    description: str = ""


@dataclass
class DataRecipe:
    """What the data component returns."""

    input_size: int
    batch_size: int
    train_transform: BatchTransform
    eval_transform: BatchTransform
    out_chans: int = 3
    """Channels the transforms emit (the model receives this many)."""
    batch_mix: BatchMix | None = None
    balanced_sampling: bool = False
    """Sample training batches with probability inversely proportional to class size."""
    tta_hflip: bool = False
    """Average predictions over the image and its horizontal flip at evaluation."""
    features: str | None = None
    """Train on cached pretrained features instead of images: a feature set such as
    ``"efficientnet_lite0@224"`` (backbone @ input size; see ``automodel.features``). The
    model then receives ``(B, feature_dim)`` vectors; the transforms and ``batch_mix`` are
    not applied (the mirrored training images are a second cached view, used at random).
    Several sets joined by ``+`` (``"efficientnet_lite0@224+efficientnet_lite1@240"``) are
    concatenated. Name the set at module level too (``FEATURES = "..."``) so the executor
    extracts it once."""
    feature_flip: bool = True
    """With features: train on the mirrored view half of the time (False when orientation matters)."""


@dataclass(frozen=True)
class ModelSpec:
    """What the model component knows when it builds the network.

    A model that starts from pretrained weights sets ``model.am_pretrained = True`` so the
    training component can choose fine-tuning settings.
    """

    num_classes: int
    in_chans: int
    input_size: int
    device: str
    pretrained: PretrainedInfo = field(default_factory=PretrainedInfo)
    num_train: int = 0
    time_budget_s: float = 0.0
    """Training seconds per candidate: weigh compute per image x images x epochs against it."""
    feature_dim: int = 0
    """When the data recipe asks for cached features: their length (the model is a head on
    ``(B, feature_dim)`` vectors); 0 when the model receives images."""


@dataclass(frozen=True)
class TrainSpec:
    """What the training component knows when it builds the optimisation."""

    num_classes: int
    num_train: int
    steps_per_epoch: int
    batch_size: int
    device: str
    time_budget_s: float
    """Wall-clock seconds the harness allows for training; it stops early at the limit."""
    est_step_s: float = 0.0
    """Seconds per training step measured during the smoke test (0 if unknown)."""
    class_counts: tuple[int, ...] = ()
    max_epochs: int | None = None
    """The harness stops after this many epochs (a run-level cap); size the schedule to it."""


@dataclass
class TrainRecipe:
    """What the training component returns."""

    optimizer: torch.optim.Optimizer
    epochs: int
    loss_fn: LossFn
    lr_schedule: LrSchedule | None = None
    amp: bool = False
    """bfloat16/float16 autocast; the harness enables it only on CUDA."""
    channels_last: bool = False
    ema_decay: float | None = None
    grad_clip: float | None = None
    """Max global gradient norm; None disables clipping."""


COMPONENTS: dict[str, str] = {
    "data": "build_data",
    "model": "build_model",
    "training": "build_training",
}
"""Component name -> the function its file must define."""

COMPONENT_FILES: dict[str, str] = {name: f"{name}.py" for name in COMPONENTS}
