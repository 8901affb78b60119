"""Naive one-shot training component: SGD lr 0.01 with momentum 0.9, plain cross-entropy, 5 epochs."""

import torch

from automodel.interfaces import TrainRecipe, TrainSpec

INTERFACE_VERSION = 1


def build_training(spec: TrainSpec, model: torch.nn.Module) -> TrainRecipe:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def loss_fn(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.cross_entropy(logits, targets)

    return TrainRecipe(optimizer=optimizer, epochs=5, loss_fn=loss_fn)
