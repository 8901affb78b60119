"""Pretrained features: extracted once by trusted code, cached without labels, heads trained on them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from automodel.features import (
    BACKBONES,
    FeatureSet,
    extraction_cost_s,
    feature_keys,
    features_ready,
    load_feature_split,
    parse_feature_key,
)
from automodel.harness import declared_features, declared_flip
from automodel.weights import local_weight_files
from automodel.workspace import open_workspace
from tests.conftest import edit

KEY = "efficientnet_lite0@64"  # a small input keeps the test fast; the product uses 224


def _photos(root: Path) -> Path:
    """Three classes of 48 px RGB images that differ in colour and texture; train/ and test/."""
    rng = np.random.default_rng(0)
    for split, n in (("train", 14), ("test", 4)):
        for k, cls in enumerate(("red_stripes", "green_dots", "blue_plain")):
            folder = root / split / cls
            folder.mkdir(parents=True)
            for i in range(n):
                img = rng.integers(0, 60, (48, 48, 3)).astype(np.uint8)
                img[..., k] += 150
                if k == 0:
                    img[::6] = 255
                elif k == 1:
                    img[::8, ::8] = 0
                Image.fromarray(img).save(folder / f"{i}.png")
    return root


@pytest.mark.skipif("efficientnet_lite0" not in local_weight_files(), reason="the Lite0 weights package is not installed")
def test_features_are_extracted_once_without_labels_and_a_head_learns_on_them(tmp_path, reference_copy):
    ws = open_workspace(_photos(tmp_path / "photos"), tmp_path / "run", device="cpu")
    edit(reference_copy / "data.py", 'FEATURES = ""', f'FEATURES = "{KEY}"')
    assert declared_features(reference_copy / "data.py") == KEY
    runner = ws.runner()
    cache = tmp_path / "run" / "features" / "efficientnet_lite0-64"

    # A recipe that does not flip (HFLIP = False) gets no mirrored view: it would never read it.
    edit(reference_copy / "data.py", "HFLIP = True", "HFLIP = False")
    _, plain = runner.ensure_features(reference_copy, tmp_path / "w")
    assert plain is not None and plain.status == "ok", plain.log_tail
    assert sorted(p.name for p in cache.iterdir()) == ["meta.json", "test.npy", "train.npy", "val.npy"]
    # One that flips needs it: the set is extracted again, with it.
    edit(reference_copy / "data.py", "HFLIP = False", "HFLIP = True")
    key, extraction = runner.ensure_features(reference_copy, tmp_path / "x")
    assert key == KEY and extraction is not None and extraction.status == "ok", extraction.log_tail
    files = sorted(p.name for p in cache.iterdir())
    assert files == ["meta.json", "test.npy", "train.npy", "train_flip.npy", "val.npy"]  # no labels in the cache
    meta = json.loads((cache / "meta.json").read_text())
    assert meta["counts"]["train"] == meta["counts"]["train_flip"] == len(ws.data.arrays("train")[0])
    assert np.load(cache / "train.npy").shape[1] == BACKBONES["efficientnet_lite0"].dim
    # Cached: the second ask extracts nothing.
    assert runner.ensure_features(reference_copy, tmp_path / "y") == (KEY, None)

    result = runner.train(reference_copy, tmp_path / "it", time_budget_s=30)
    assert result.status == "ok", result.log_tail
    metrics = json.loads((tmp_path / "it" / "metrics.json").read_text())
    assert metrics["features"] == KEY
    assert metrics["val_accuracy"] >= 0.8  # three easy classes; chance is 1/3

    pred = runner.predict(reference_copy, tmp_path / "it" / "checkpoint.pt", tmp_path / "pred")
    assert pred.status == "ok", pred.log_tail
    assert len(json.loads((tmp_path / "pred" / "predictions.json").read_text())["pred"]) == 12


def test_declared_constants_are_read_as_python_would_leave_them(tmp_path):
    data_py = tmp_path / "data.py"
    cases = {
        'HFLIP = False\nFEATURES = ""\nHFLIP = True\nFEATURES = "efficientnet_lite0@224"\n': (True, "efficientnet_lite0@224"),
        'HFLIP = True\nHFLIP = False\nFEATURES = "efficientnet_lite0@224"\nFEATURES = ""\n': (False, None),
        'HFLIP: bool = False\nFEATURES: str = "efficientnet_lite0@160"\n': (False, "efficientnet_lite0@160"),
        # Not a constant: unknown, so the mirrored view is extracted (only time is at stake).
        'HFLIP = False\nHFLIP = not False\n': (True, None),
        "def build_data(spec):\n    HFLIP = False\n": (True, None),
        "this is not python": (True, None),
    }  # fmt: skip
    for text, (flip, features) in cases.items():
        data_py.write_text(text)
        assert (declared_flip(data_py), declared_features(data_py)) == (flip, features), text


def test_a_cached_set_is_ready_only_with_the_views_a_recipe_needs(tmp_path):
    meta = tmp_path / "efficientnet_lite0-64" / "meta.json"
    meta.parent.mkdir()

    def ready(counts: object, flip: bool) -> bool:
        meta.write_text(json.dumps({"fingerprint": "f", "counts": counts}))
        return features_ready(tmp_path, KEY, "f", flip=flip)

    assert ready({"train": 3, "val": 1}, flip=False) and not ready({"train": 3, "val": 1}, flip=True)
    assert ready({"train": 3, "train_flip": 3, "val": 1}, flip=True)
    assert ready({"test": 5}, flip=True)  # images to predict: no training split, nothing to mirror
    assert not ready(7, flip=False)  # a damaged meta is extracted again, not a crash
    assert not features_ready(tmp_path, KEY, "other", flip=False)


def test_feature_keys_are_checked_and_costed():
    assert parse_feature_key("efficientnet_lite1@240") == ("efficientnet_lite1", 240)
    with pytest.raises(ValueError, match="choose one of"):
        parse_feature_key("resnet50@224")
    with pytest.raises(ValueError, match="backbone"):
        parse_feature_key("efficientnet_lite0")
    cheap, dear = extraction_cost_s("efficientnet_lite0@224", 1000), extraction_cost_s("efficientnet_lite2@260", 1000)
    assert cheap < dear


def test_joined_feature_sets_are_concatenated_in_order(tmp_path):
    a, b = "efficientnet_lite0@64", "efficientnet_lite1@64"
    for key, value in ((a, 1.0), (b, 2.0)):
        fs = FeatureSet(tmp_path, key)
        fs.dir.mkdir(parents=True)
        np.save(fs.path("val"), np.full((5, 3), value, np.float16))
    assert feature_keys(f"{a}+{b}") == [a, b]
    joined = load_feature_split(tmp_path, f"{a} + {b}", "val")
    assert joined.shape == (5, 6) and joined[:, :3].max() == 1.0 and joined[:, 3:].min() == 2.0
    with pytest.raises(ValueError, match="twice"):
        feature_keys(f"{a}+{a}")
    with pytest.raises(ValueError, match="choose one of"):
        feature_keys(f"{a}+resnet50@64")
    np.save(FeatureSet(tmp_path, b).path("val"), np.zeros((4, 3), np.float16))
    with pytest.raises(ValueError, match="different numbers"):
        load_feature_split(tmp_path, f"{a}+{b}", "val")
    with pytest.raises(FileNotFoundError, match="no test split"):
        load_feature_split(tmp_path, f"{a}+{b}", "test")


def test_extraction_estimates_follow_this_runs_measured_speed(tmp_path):
    from automodel.features import measured_cost_scale

    assert measured_cost_scale(tmp_path) == 1.0  # nothing extracted yet: the table
    key = "efficientnet_lite0@224"
    per_image = BACKBONES["efficientnet_lite0"].cpu_ms_per_image / 1000
    fs = FeatureSet(tmp_path, key)
    fs.dir.mkdir(parents=True)
    # 1000 images took twice the table's time: later estimates double.
    (fs.dir / "meta.json").write_text(json.dumps({"key": key, "counts": {"train": 600, "val": 400},
                                                  "seconds": 2 * 1000 * per_image}))
    scale = measured_cost_scale(tmp_path)
    assert scale == pytest.approx(2.0)
    assert extraction_cost_s("efficientnet_lite2@260", 500, scale=scale) - 8 == pytest.approx(
        2 * (extraction_cost_s("efficientnet_lite2@260", 500) - 8))
    (fs.dir / "meta.json").write_text("{not json")  # a broken meta is no measurement
    assert measured_cost_scale(tmp_path) == 1.0
