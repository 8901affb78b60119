"""Naive one-shot model component: the textbook two-conv CNN (conv-relu-pool x2, two linear layers)."""

import torch
from torch import nn

from automodel.interfaces import ModelSpec

INTERFACE_VERSION = 1


class SimpleCNN(nn.Module):
    def __init__(self, in_chans: int, num_classes: int, input_size: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_chans, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        side = input_size // 4
        self.fc1 = nn.Linear(64 * side * side, 128)
        self.fc2 = nn.Linear(128, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(torch.relu(self.conv1(x)))
        x = self.pool(torch.relu(self.conv2(x)))
        x = torch.flatten(x, 1)
        return self.fc2(torch.relu(self.fc1(x)))


def build_model(spec: ModelSpec) -> nn.Module:
    return SimpleCNN(spec.in_chans, spec.num_classes, spec.input_size)
