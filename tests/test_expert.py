"""The offline expert: its decisions follow the profile, the description, the environment and the curves."""

from __future__ import annotations

import asyncio

from autogen_core.models import ChatCompletionClient, UserMessage

from automodel.experts import (
    OfflineExpertClient,
    _rules,
    change_key,
    get_knobs,
    reference_source,
    render_request,
    set_knobs,
)
from automodel.interfaces import validate_component

CPU_ENV = {"device": "cpu", "cuda": False, "candidate_budget_s": 60, "pretrained": {"hub": False, "local": []}}


def _design(profile: dict, env: dict = CPU_ENV, description: str = "") -> dict:
    return _rules.architect({"profile": profile, "environment": env, "description": description})


def test_architect_starts_photos_on_a_cpu_with_a_head_on_cached_pretrained_features():
    env = {**CPU_ENV, "pretrained": {"hub": False, "local": ["efficientnet_lite0", "efficientnet_lite1"]},
           "budget": {"time_budget_s": 300}}
    d = _design({"num_train": 750, "stored_size": 160, "in_chans": 3, "num_classes": 10}, env)
    assert get_knobs(d["components"]["data"])["FEATURES"] == "efficientnet_lite0@224"
    assert get_knobs(d["components"]["model"])["HEAD_HIDDEN"] == 0
    for component, code in d["components"].items():
        assert validate_component(component, code) == []
    # Gray digits are not photos: no pretrained features there.
    digits = _design({"num_train": 1400, "stored_size": 8, "in_chans": 1, "num_classes": 10}, env)
    assert not get_knobs(digits["components"]["data"]).get("FEATURES")


def test_architect_fine_tunes_pretrained_weights_on_a_gpu():
    env = {**CPU_ENV, "device": "cuda", "cuda": True, "pretrained": {"hub": False, "local": ["efficientnet_lite0"]}}
    d = _design({"num_train": 1600, "stored_size": 100, "in_chans": 3, "num_classes": 10}, env)
    knobs = get_knobs(d["components"]["model"])
    assert knobs["ARCH"] == "efficientnet_lite0" and knobs["PRETRAINED"] is True
    assert get_knobs(d["components"]["training"])["LR"] <= 1e-3
    for component, code in d["components"].items():
        assert validate_component(component, code) == []


def test_architect_without_weights_on_cpu_sizes_a_small_cnn_to_the_budget():
    small = _design({"num_train": 1000, "stored_size": 32, "in_chans": 1}, {**CPU_ENV, "candidate_budget_s": 20})
    large = _design({"num_train": 1000, "stored_size": 32, "in_chans": 1}, {**CPU_ENV, "candidate_budget_s": 600})
    w_small = get_knobs(small["components"]["model"])["WIDTH"]
    w_large = get_knobs(large["components"]["model"])["WIDTH"]
    assert get_knobs(small["components"]["model"])["ARCH"] == "small_cnn"
    assert w_small < w_large


def test_architect_reads_domain_cautions_and_imbalance():
    d = _design({"num_train": 500, "stored_size": 48, "in_chans": 3, "imbalance_ratio": 8.0},
                description="Arrows: the label is the direction the arrow points (left or right).")
    data = get_knobs(d["components"]["data"])
    assert data["HFLIP"] is False and data["BALANCED_SAMPLING"] is True
    plain = get_knobs(_design({"num_train": 500, "stored_size": 48, "in_chans": 3})["components"]["data"])
    assert plain["HFLIP"] is True


def _report(tl, vl, va, **kw) -> dict:
    epochs = [{"train_loss": a, "val_loss": b, "val_accuracy": c} for a, b, c in zip(tl, vl, va, strict=True)]
    return {"epochs": epochs, "status": "improved", **kw}


def _analyse(report: dict, tried=(), knobs=None, description="") -> dict:
    return _rules.analyst({
        "best_report": report, "last_report": report, "tried": list(tried), "description": description,
        "best_knobs": knobs or {"data": {"HFLIP": True}, "model": {"ARCH": "small_cnn", "WIDTH": 32}, "training": {"LR": 3e-3}},
        "profile": {"num_classes": 10}, "environment": CPU_ENV,
    })


def test_analyst_diagnoses_divergence_over_fitting_and_under_training():
    diverging = _analyse(_report([2.3, 2.4, 2.6], [2.3, 2.3, 2.3], [0.1, 0.1, 0.1]))
    assert diverging["target"] == "training_engineer" and diverging["knobs"]["LR"] < 3e-3
    overfit = _analyse(_report([1.0, 0.5, 0.2, 0.05], [0.8, 0.6, 0.7, 0.9], [0.7, 0.8, 0.79, 0.78]))
    assert overfit["target"] == "data_engineer" and "Over-fitting" in overfit["diagnosis"]
    under = _analyse(_report([2.0, 1.5], [1.9, 1.4], [0.4, 0.6], stopped_by_budget=True))
    assert under["target"] == "model_engineer" and under["knobs"]["WIDTH"] == 16


def test_analyst_never_repeats_a_tried_change_and_respects_orientation():
    report = _report([1.0, 0.5, 0.4, 0.35, 0.34], [0.6, 0.5, 0.45, 0.44, 0.44], [0.8, 0.85, 0.86, 0.86, 0.86])
    tried: list[str] = []
    seen = set()
    for _ in range(8):
        fb = _analyse(report, tried, description="handwritten digits")
        key = change_key(fb["target"], fb["knobs"])
        assert key not in seen
        seen.add(key)
        tried.append(key)
        assert "TTA_HFLIP" not in fb["knobs"] and fb["knobs"].get("AUGMENT") != "trivial"


def test_engineer_applies_knobs_and_repairs_broken_code():
    feedback = {"knobs": {"MIXUP": 0.2, "CUTMIX": 1.0}, "change": "add mixing"}
    out = _rules.engineer({"component": "data", "phase": "revision", "current_code": reference_source("data"),
                           "feedback": feedback})
    assert get_knobs(out["code"])["MIXUP"] == 0.2 and validate_component("data", out["code"]) == []
    broken, _ = set_knobs(reference_source("model"), {"WIDTH": 24})
    broken = broken.replace("return self.head(self.features(x))", "return self.head(x)")
    fixed = _rules.engineer({"component": "model", "phase": "repair", "current_code": broken,
                             "error": {"error_type": "RuntimeError"}})
    assert "return self.head(self.features(x))" in fixed["code"] and get_knobs(fixed["code"])["WIDTH"] == 24


def test_expert_is_a_loadable_chat_completion_client():
    client = ChatCompletionClient.load_component({"provider": "automodel.experts.OfflineExpertClient", "config": {}})
    assert isinstance(client, OfflineExpertClient)
    request = render_request("analyst", {"best_report": _report([1.0], [1.0], [0.5]), "profile": {"num_classes": 2}})
    result = asyncio.run(client.create([UserMessage(content=request, source="t")]))
    assert result.content.startswith("```json") and result.usage.prompt_tokens == 0
    other = asyncio.run(client.create([UserMessage(content="hello", source="t")]))
    assert "offline expert" in other.content


def test_flip_check_tells_mirror_classes_from_symmetric_ones():
    import numpy as np

    from automodel.data import FLIP_THRESHOLD, flip_change_rate

    rng = np.random.default_rng(0)
    arrow = np.zeros((16, 16), np.uint8)
    arrow[7:9, 2:14] = 255
    arrow[4:12, 2:4] = 255  # a bar on the left end: class 0 points one way, class 1 (mirrored) the other
    blob = np.zeros((16, 16), np.uint8)
    blob[4:12, 4:12] = 255
    ring = np.zeros((16, 16), np.uint8)
    ring[2:14, 2:14] = 255
    ring[5:11, 5:11] = 0

    def noisy(img, n):
        return np.clip(img[None].astype(int) + rng.integers(-30, 30, (n, 16, 16)), 0, 255).astype(np.uint8)[..., None]

    mirror_x = np.concatenate([noisy(arrow, 50), noisy(arrow[:, ::-1], 50)])
    mirror_y = np.repeat([0, 1], 50)
    assert flip_change_rate(mirror_x, mirror_y, 2) > FLIP_THRESHOLD
    sym_x = np.concatenate([noisy(blob, 50), noisy(ring, 50)])
    assert flip_change_rate(sym_x, mirror_y, 2) < FLIP_THRESHOLD


def test_flips_found_from_the_data_when_nobody_said_so():
    design = _design({"num_train": 500, "stored_size": 32, "in_chans": 1, "hflip_change_rate": 0.9})
    assert get_knobs(design["components"]["data"])["HFLIP"] is False
    fb = _rules.analyst({
        "best_report": _report([1.0, 0.8, 0.7], [1.0, 0.9, 0.9], [0.5, 0.55, 0.56]),
        "best_knobs": {"data": {"HFLIP": True}, "model": {"ARCH": "small_cnn", "WIDTH": 32}, "training": {}},
        "profile": {"num_classes": 8, "hflip_change_rate": 0.95}, "environment": CPU_ENV, "tried": [],
    })
    assert fb["target"] == "data_engineer" and fb["knobs"] == {"HFLIP": False}


def test_architect_weighs_pretrained_cost_against_the_budget():
    env = {**CPU_ENV, "pretrained": {"hub": False, "local": ["efficientnet_lite0"]}}
    photos = {"num_train": 1650, "stored_size": 100, "in_chans": 3, "num_classes": 10}
    # 60 s in all: lite0 at its native 224px (about 67 s for these 3,700 images with the mirrored view,
    # 41 s without) does not fit; at 192px without the mirrored view (about 32 s) it does and leaves
    # time for a head: features, not a CNN from scratch.
    short = _design(photos, {**env, "candidate_budget_s": 20, "budget": {"time_budget_s": 60}})
    knobs = get_knobs(short["components"]["data"])
    assert knobs["FEATURES"] == "efficientnet_lite0@192" and knobs["HFLIP"] is False
    assert any("192px instead" in line for line in short["rationale"])
    assert any("No horizontal flips, for time only" in line for line in short["rationale"])
    # 30 s in all: nothing fits in the 12 s (40%) a first extraction may take.
    tight = _design(photos, {**env, "candidate_budget_s": 10, "budget": {"time_budget_s": 30}})
    assert not get_knobs(tight["components"]["data"]).get("FEATURES")
    assert get_knobs(tight["components"]["model"])["ARCH"] == "small_cnn"
    roomy = _design(photos, {**env, "candidate_budget_s": 100, "budget": {"time_budget_s": 600}})
    assert get_knobs(roomy["components"]["data"])["FEATURES"] == "efficientnet_lite0@224"
    assert get_knobs(roomy["components"]["data"]).get("HFLIP", True) is True


def test_first_feature_set_drops_the_mirrored_view_then_steps_down_the_size():
    env = {**CPU_ENV, "pretrained": {"hub": False, "local": ["efficientnet_lite0", "efficientnet_lite1"]}}
    # sports-12's splits: 1147 train (twice with the mirrored view), 287 val, 120 test.
    profile = {"num_train": 1147, "stored_size": 160, "in_chans": 3,
               "split_sizes": {"train": 1147, "val": 287, "test": 120}}  # fmt: skip

    def plan(total: float, flip: bool = True) -> tuple[str, bool] | None:
        ctx = {"profile": profile, "environment": {**env, "budget": {"time_budget_s": total}}}
        return _rules.first_feature_plan(ctx, flip=flip)

    assert {t: plan(t) for t in (30, 60, 75, 300)} == {
        30: None, 60: ("efficientnet_lite0@224", False), 75: ("efficientnet_lite0@224", False),
        300: ("efficientnet_lite0@224", True)}  # fmt: skip
    # A machine measured 1.5 times slower than the table steps down further.
    slow = {**env, "budget": {"time_budget_s": 60}, "extraction_scale": 1.5}
    assert _rules.first_feature_plan({"profile": profile, "environment": slow}) == ("efficientnet_lite0@160", False)
    # A recipe that must not flip never gets the mirrored view, even when it would fit.
    assert plan(300, flip=False) == ("efficientnet_lite0@224", False)


def test_analyst_explores_features_by_gain_per_second_then_final_phase():
    env = {**CPU_ENV, "pretrained": {"hub": False, "local": ["efficientnet_lite0", "efficientnet_lite1"]},
           "budget": {"remaining_s": 250, "final_due": False}, "features": ["efficientnet_lite0@224"]}
    profile = {"num_classes": 10, "split_sizes": {"train": 750, "val": 188, "test": 265}}
    knobs = {"data": {"HFLIP": True, "FEATURES": "efficientnet_lite0@224"}, "model": {"HEAD_HIDDEN": 0},
             "training": {}}
    report = _report([1.0, 0.6, 0.5], [0.5, 0.3, 0.3], [0.95, 0.98, 0.98])
    ctx = {"best_report": report, "last_report": report, "tried": [], "best_knobs": knobs, "profile": profile,
           "environment": env}
    first = _rules.analyst(ctx)
    assert first["target"] == "data_engineer" and first["knobs"] == {"FEATURES": "efficientnet_lite1@240"}
    # Once tried, the cheaper head changes follow.
    second = _rules.analyst({**ctx, "tried": [change_key(first["target"], first["knobs"])]})
    assert second["target"] == "model_engineer" and second["knobs"]["HEAD_HIDDEN"] == 512
    # A from-scratch CNN whose exploration share is spent gets the final phase, warm-started.
    cnn = {"data": {"HFLIP": True}, "model": {"ARCH": "small_cnn", "WIDTH": 32}, "training": {}}
    due = {**CPU_ENV, "budget": {"remaining_s": 300, "final_due": True}}
    final = _rules.analyst({**ctx, "best_knobs": cnn, "environment": due})
    assert final["fidelity"] == "final" and final["warm_start"] is True and final["knobs"] == {}
    after = _rules.analyst({**ctx, "best_knobs": cnn, "environment": due,
                            "tried": [change_key("training_engineer", {}, "final")]})
    assert after.get("fidelity", "explore") == "explore"


def test_analyst_joins_cached_feature_sets_and_never_steps_down_a_backbone():
    env = {**CPU_ENV, "pretrained": {"hub": False, "local": ["efficientnet_lite0", "efficientnet_lite1"]},
           "budget": {"remaining_s": 120, "final_due": False},
           "features": ["efficientnet_lite0@224", "efficientnet_lite1@240"]}
    profile = {"num_classes": 10, "split_sizes": {"train": 750, "val": 188, "test": 265}}
    knobs = {"data": {"HFLIP": True, "FEATURES": "efficientnet_lite1@240"}, "model": {"HEAD_HIDDEN": 0},
             "training": {}}
    report = _report([1.0, 0.6, 0.5], [0.5, 0.3, 0.3], [0.95, 0.98, 0.98])
    ctx = {"best_report": report, "last_report": report, "tried": [], "best_knobs": knobs, "profile": profile,
           "environment": env}
    first = _rules.analyst(ctx)
    assert first["knobs"] == {"FEATURES": "efficientnet_lite1@240+efficientnet_lite0@224"}
    # On the joined set, no single (weaker) backbone is proposed again, and no second join.
    joined = {**knobs, "data": {**knobs["data"], "FEATURES": first["knobs"]["FEATURES"]}}
    nxt = _rules.analyst({**ctx, "best_knobs": joined})
    assert "FEATURES" not in nxt["knobs"]
