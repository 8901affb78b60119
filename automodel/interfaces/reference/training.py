"""Reference training component: AdamW, warmup + cosine, label smoothing, epochs sized to the budget."""

import torch

from automodel.interfaces import TrainRecipe, TrainSpec, ops

INTERFACE_VERSION = 1

# Knobs the engineers turn.
LR = 0.0  # 0 = chosen: 3e-3 from scratch, 1e-3 when fine-tuning
WEIGHT_DECAY = 0.05
LABEL_SMOOTHING = 0.1
EPOCHS = 0  # 0 = as many as the time budget allows (at most MAX_EPOCHS)
MAX_EPOCHS = 30
HEAD_EPOCHS = 60  # epochs of a head on cached features (each takes well under a second)
WARMUP_EPOCHS = 1.0
SCHEDULE = "cosine"  # "cosine" | "onecycle" | "constant"
EMA_DECAY = 0.0  # e.g. 0.999; 0 disables
GRAD_CLIP = 1.0
CLASS_WEIGHTED_LOSS = False
LAYER_DECAY = 0.0  # e.g. 0.7 for pretrained fine-tuning; 0 disables


def budget_epochs(spec: TrainSpec, head: bool = False) -> int:
    cap = HEAD_EPOCHS if head else MAX_EPOCHS
    cap = min(cap, spec.max_epochs or cap)
    if EPOCHS:
        return min(EPOCHS, cap)
    if spec.est_step_s <= 0:
        return min(10, cap)
    # Keep a tenth of the budget for evaluation; round to the nearest whole epoch (the
    # harness stops at the budget anyway, so a slight overshoot only trims the last epoch).
    fit = round(0.9 * spec.time_budget_s / (spec.est_step_s * spec.steps_per_epoch))
    return max(1, min(cap, fit))


def build_training(spec: TrainSpec, model: torch.nn.Module) -> TrainRecipe:
    pretrained = bool(getattr(model, "am_pretrained", False))
    lr = LR or (1e-3 if pretrained else 3e-3)
    groups = ops.param_groups(model, lr=lr, weight_decay=WEIGHT_DECAY, layer_decay=LAYER_DECAY or None)
    optimizer = torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999))
    epochs = budget_epochs(spec, head=bool(getattr(model, "am_head", False)))
    total = epochs * spec.steps_per_epoch
    if SCHEDULE == "onecycle":
        schedule = ops.one_cycle(total)
    elif SCHEDULE == "constant":
        schedule = None
    else:
        # Warm up for WARMUP_EPOCHS, but never more than a tenth of a short run.
        warmup = min(int(WARMUP_EPOCHS * spec.steps_per_epoch), total // 10)
        schedule = ops.warmup_cosine(total, warmup_steps=warmup)
    if CLASS_WEIGHTED_LOSS:
        loss = ops.class_weighted_cross_entropy(spec.class_counts, LABEL_SMOOTHING)
    else:
        loss = ops.soft_cross_entropy(LABEL_SMOOTHING)
    return TrainRecipe(
        optimizer=optimizer,
        epochs=epochs,
        loss_fn=loss,
        lr_schedule=schedule,
        amp=spec.device.startswith("cuda"),
        channels_last=spec.device.startswith("cuda"),
        ema_decay=EMA_DECAY or None,
        grad_clip=GRAD_CLIP or None,
    )
