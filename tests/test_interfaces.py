"""The component contracts: validator, reference recipe, batched ops, offline pretrained weights."""

from __future__ import annotations

import time

import pytest
import torch

from automodel.interfaces import REFERENCE_DIR, PretrainedInfo, ops, validate_component, validate_components


def test_reference_recipe_is_valid():
    assert validate_components(REFERENCE_DIR) == []


GOOD_DATA = (REFERENCE_DIR / "data.py").read_text()


@pytest.mark.parametrize(
    ("component", "source", "expected"),
    [
        ("data", "INTERFACE_VERSION = 1\ndef build_data(:\n", "syntax error"),
        ("data", "INTERFACE_VERSION = 1\ndef make_data(spec):\n    pass\n", "must define a top-level function `build_data`"),
        ("training", "INTERFACE_VERSION = 1\ndef build_training(spec):\n    pass\n", "must take 2 positional"),
        ("model", "def build_model(spec):\n    pass\n", "declare `INTERFACE_VERSION = 1`"),
        ("model", "INTERFACE_VERSION = 2\ndef build_model(spec):\n    pass\n", "this harness implements 1"),
        ("model", "import tensorflow\nINTERFACE_VERSION = 1\ndef build_model(spec):\n    pass\n", "not installed"),
        ("model", "import subprocess\nINTERFACE_VERSION = 1\ndef build_model(spec):\n    pass\n", "not allowed"),
        ("data", "INTERFACE_VERSION = 1\ndef build_data(spec):\n    open('/etc/passwd')\n", "may not open"),
        ("data", "INTERFACE_VERSION = 1\ndef build_data(spec):\n    eval('1')\n", "`eval` is not allowed"),
    ],
)
def test_validator_names_the_problem(component, source, expected):
    issues = validate_component(component, source)
    assert issues, "the validator accepted a bad file"
    assert any(expected in str(i) for i in issues), [str(i) for i in issues]


def test_validator_rejects_unknown_component():
    with pytest.raises(ValueError, match="expected one of"):
        validate_component("loss", GOOD_DATA)


def test_batched_augmentations_keep_shape_and_vary_per_sample():
    torch.manual_seed(0)
    x = torch.rand(16, 3, 32, 32)
    out = ops.random_resized_crop_flip(x, 24)
    assert out.shape == (16, 3, 24, 24)
    same = torch.stack([x[0]] * 16)
    crops = ops.random_resized_crop_flip(same, 32)
    assert crops.std(0).mean() > 0.01  # each sample gets its own crop
    mixed, y = ops.mixup_cutmix(mixup_alpha=0.2, cutmix_alpha=1.0, prob=1.0)(x, torch.eye(4).repeat(4, 1))
    assert mixed.shape == x.shape and torch.allclose(y.sum(1), torch.ones(16))
    u8 = (x * 255).to(torch.uint8)
    assert ops.trivial_augment(u8).shape == u8.shape
    assert ops.to_float(u8[:, :1], (0.5,), (0.5,), 3).shape == (16, 3, 32, 32)


def test_schedules_warm_up_and_decay():
    s = ops.warmup_cosine(100, warmup_steps=10, min_ratio=0.0)
    assert s(0) < s(9) <= 1.0 and s(99) < 0.01
    oc = ops.one_cycle(100)
    assert oc(0) < oc(25) and oc(99) < oc(50)


def test_offline_pretrained_weights_load_for_real():
    from automodel.weights import load_local_weights, local_weight_files, probe_pretrained

    t0 = time.perf_counter()
    info = probe_pretrained(timeout_s=1.0)
    assert time.perf_counter() - t0 < 5
    if not info.hub_available:
        import os

        assert os.environ.get("HF_HUB_OFFLINE") == "1"
    files = local_weight_files()
    assert "efficientnet_lite0" in files
    import timm

    model = timm.create_model("efficientnet_lite0", num_classes=7)
    before = model.conv_stem.weight.detach().clone()
    loaded = load_local_weights(model, files["efficientnet_lite0"])
    assert loaded >= 290
    assert not torch.equal(before, model.conv_stem.weight)
    raw = torch.load(files["efficientnet_lite0"], map_location="cpu", weights_only=True)
    assert torch.equal(next(iter(raw.values())), model.conv_stem.weight.detach())
    assert model.get_classifier().out_features == 7  # the new head is kept


def test_reference_model_uses_local_pretrained_weights_when_offline():
    import importlib.util

    from automodel.interfaces import ModelSpec
    from automodel.weights import local_weight_files

    spec = importlib.util.spec_from_file_location("ref_model", REFERENCE_DIR / "model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    info = PretrainedInfo(hub_available=False, local=local_weight_files())
    model = module.build_model(ModelSpec(num_classes=5, in_chans=3, input_size=96, device="cpu", pretrained=info))
    assert model.am_pretrained is True
    small = module.build_model(ModelSpec(num_classes=5, in_chans=1, input_size=28, device="cpu"))
    assert small(torch.rand(2, 1, 28, 28)).shape == (2, 5)
