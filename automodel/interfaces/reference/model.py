"""Reference model component: pretrained when it can be had, a compact CNN otherwise."""

import timm
import torch
from torch import nn

from automodel.interfaces import ModelSpec
from automodel.weights import load_local_weights

INTERFACE_VERSION = 1

# Knobs the engineers turn.
ARCH = "auto"  # "auto" | "small_cnn" | any timm model name
WIDTH = 0  # base width of small_cnn; 0 = 32 on CPU, 64 on GPU
DROPOUT = 0.1
DROP_PATH = 0.0
PRETRAINED = True  # use pretrained weights when the environment has them
HEAD_HIDDEN = 0  # on cached features: 0 = a linear head, else one hidden layer of this width


def conv_bn(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class SmallCNN(nn.Module):
    """Three stages of two 3x3 convs; cheap enough for CPUs at 28-64 px."""

    def __init__(self, in_chans: int, num_classes: int, width: int, dropout: float):
        super().__init__()
        w = width
        self.features = nn.Sequential(
            conv_bn(in_chans, w), conv_bn(w, w), nn.MaxPool2d(2),
            conv_bn(w, 2 * w), conv_bn(2 * w, 2 * w), nn.MaxPool2d(2),
            conv_bn(2 * w, 4 * w), conv_bn(4 * w, 4 * w), nn.AdaptiveAvgPool2d(1),
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(4 * w, num_classes))

    def get_classifier(self) -> nn.Module:
        return self.head[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class FeatureHead(nn.Module):
    """A head on cached pretrained features; ``classifier`` matches timm's name, so a
    fine-tune of the same backbone can warm-start from it."""

    def __init__(self, dim: int, num_classes: int, hidden: int, dropout: float):
        super().__init__()
        self.hidden = nn.Sequential(nn.Linear(dim, hidden), nn.GELU()) if hidden else nn.Identity()
        self.drop = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden or dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.drop(self.hidden(x)))


def choose_arch(spec: ModelSpec) -> str:
    if ARCH != "auto":
        return ARCH
    if PRETRAINED and spec.input_size >= 64 and spec.in_chans == 3:
        if spec.pretrained.hub_available:
            return "efficientnet_lite0" if not spec.device.startswith("cuda") else "convnext_nano"
        if "efficientnet_lite0" in spec.pretrained.local:
            return "efficientnet_lite0"
    if spec.input_size <= 64 and not spec.device.startswith("cuda"):
        return "small_cnn"
    return "resnet18"


def build_model(spec: ModelSpec) -> nn.Module:
    if spec.feature_dim:
        head = FeatureHead(spec.feature_dim, spec.num_classes, HEAD_HIDDEN, DROPOUT)
        vars(head)["am_head"] = True
        return head
    arch = choose_arch(spec)
    if arch == "small_cnn":
        width = WIDTH or (64 if spec.device.startswith("cuda") else 32)
        return SmallCNN(spec.in_chans, spec.num_classes, width, DROPOUT)
    use_hub = PRETRAINED and spec.pretrained.hub_available and spec.in_chans == 3
    model = timm.create_model(
        arch, pretrained=use_hub, num_classes=spec.num_classes, in_chans=spec.in_chans,
        drop_rate=DROPOUT, drop_path_rate=DROP_PATH or None,
    )
    local = spec.pretrained.local.get(arch)
    if PRETRAINED and not use_hub and local and spec.in_chans == 3:
        load_local_weights(model, local)
    vars(model)["am_pretrained"] = use_hub or bool(PRETRAINED and local and spec.in_chans == 3)
    if arch.startswith("resnet") and spec.input_size <= 64:
        # A full-resolution stem keeps small images from vanishing after the first block.
        stem_width = int(getattr(model.conv1, "out_channels", 64))
        model.conv1 = nn.Conv2d(spec.in_chans, stem_width, 3, 1, 1, bias=False)
        model.maxpool = nn.Identity()
    return model
