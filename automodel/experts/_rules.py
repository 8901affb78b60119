"""The offline expert's judgement: how a careful practitioner plays each role, as rules.

Every function takes the context a role sends (plain JSON data) and returns what an LLM
in that role would return. The rules weigh compute per image x images x epochs against
the time budget and the device, and reach for pretrained weights first.
"""

from __future__ import annotations

import math
import re
from typing import Any

from automodel.data import FLIP_THRESHOLD
from automodel.experts._knobs import get_knobs, reference_source, set_knobs
from automodel.features import BACKBONES, extraction_cost_s, feature_key
from automodel.interfaces import validate_component

EXPERT_NAME = "offline expert"

ORIENTATION_WORDS = re.compile(
    r"orientation|rotat|direction|left|right|handed|mirror|flip|arrow|text|letter|digit|character|sign", re.I
)
COLOR_WORDS = re.compile(r"colou?r|hue|ripe|stain|dye", re.I)


def cpu_cost_ms(width: int, size: int, chans: int) -> float:
    """Measured fwd+bwd milliseconds per image of the small CNN on 2 CPU cores."""
    return (1.6 + 0.0022 * width * width) * (size / 32) ** 2 * (1.1 if chans == 3 else 1.0)


def lite0_cost_ms(size: int) -> float:
    """Measured fwd+bwd milliseconds per image of EfficientNet-Lite0 on 2 CPU cores (40 ms at 128px)."""
    return 40.0 * (size / 128) ** 2


def flips_change_label(ctx: dict[str, Any]) -> bool:
    """The description or the data (mirrored images land in other classes) says no flips."""
    rate = float(ctx.get("profile", {}).get("hflip_change_rate", 0.0))
    return bool(ORIENTATION_WORDS.search(ctx.get("description", "") or "")) or rate > FLIP_THRESHOLD


MIRROR_PAIR_RATE = 0.2
"""A pair counts as mirror-like when at least this fraction of its two classes' validation images
are predicted as the other one (a model that cannot tell two classes apart errs on up to half)."""
MIRROR_PAIR_SHARE = 0.5
"""The mirror-like pairs must hold at least this share of all validation errors."""


def mirror_pair_confusion(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The confused pairs of ``report`` that look like mirror images under flips, or ``[]``.

    Training with horizontal flips on classes that are each other's mirror image shows each
    image under both labels, so the model cannot tell the two apart: it guesses between them
    (errors both ways) or, as measured on the orientation task, merges each pair into one of
    its classes (every image of the other class predicted as it: one-way, half the pair's
    images). A pair qualifies when it has at least 4 errors and they are at least
    ``MIRROR_PAIR_RATE`` of its images. The list is returned only when the qualifying pairs hold
    ``MIRROR_PAIR_SHARE`` of all validation errors and share no class (an image has one mirror
    image: a class confused with two others is a cluster of look-alikes, not a mirror pair),
    and, when any of them is one-way, there are at least two: one class absorbing another is
    a weak class, while flips merge every mirror pair at once. Confusion spread over many
    classes never qualifies.
    """
    pairs: list[dict[str, Any]] = []
    share, one_way = 0.0, False
    for p in report.get("confused_pairs") or []:
        try:
            errors, a_as_b, b_as_a = int(p["errors"]), int(p["a_as_b"]), int(p["b_as_a"])
            images, pair_share = int(p["images"]), float(p["share"])
        except (KeyError, TypeError, ValueError):
            continue
        if errors >= 4 and images and errors >= MIRROR_PAIR_RATE * images:
            pairs.append(p)
            share += pair_share
            one_way = one_way or min(a_as_b, b_as_a) < 0.25 * errors
    classes = [c for p in pairs for c in (p["a"], p["b"])]
    if one_way and len(pairs) < 2:
        return []
    return pairs if share >= MIRROR_PAIR_SHARE and len(set(classes)) == len(classes) else []


def mirror_flip_feedback(report: dict[str, Any]) -> dict[str, Any] | None:
    """The Analyst's "stop horizontal flips" naming the pairs of :func:`mirror_pair_confusion`, or ``None``."""
    mirror = mirror_pair_confusion(report)
    if not mirror:
        return None
    named = ". ".join(f"Classes {p['a']} and {p['b']} are confused with each other: {p['errors']} errors "
                      f"({p['a_as_b']} one way, {p['b_as_a']} the other) among their {p['images']} images"
                      for p in mirror)
    errors = sum(int(p["errors"]) for p in mirror)
    share = sum(float(p["share"]) for p in mirror)
    return {"target": "data_engineer", "knobs": {"HFLIP": False},
            "diagnosis": f"{named}. Together {errors} of the {round(errors / share)} validation errors. If these "
                         "pairs are mirror images of each other, horizontal flips show each image under both labels "
                         "and teach wrong labels.",
            "change": "stop horizontal flips",
            "expected_effect": "the mirror-paired classes become separable: up to their whole share of errors"}


def feature_images(profile: dict[str, Any], *, flip: bool = True) -> int:
    """Images a feature extraction passes through: train twice (plain and mirrored; once without
    ``flip``), val and test once."""
    sizes = profile.get("split_sizes") or {}
    n_train = int(sizes.get("train") or profile.get("num_train") or 1000)
    return (2 if flip else 1) * n_train + int(sizes.get("val") or n_train // 4) + int(sizes.get("test") or 0)


def usable_backbones(ctx: dict[str, Any]) -> list[str]:
    """Feature backbones whose weights can be loaded here, cheapest first."""
    pretrained = ctx.get("environment", {}).get("pretrained", {})
    local = set(pretrained.get("local", []))
    hub = bool(pretrained.get("hub"))
    return [name for name in BACKBONES if hub or name in local]


FIRST_FEATURE_SIZES = (192, 160, 128)
"""Input sizes below a backbone's native one that a first feature set may step down to."""
FIRST_FEATURES_RESERVE_S = 25.0
"""What a first extraction must leave of a short budget: start-up, a head fit, test scoring."""


def first_feature_allowance_s(total_s: float) -> float:
    """Seconds a first feature extraction may take of a ``total_s`` budget: 60% of it, or the
    whole minus :data:`FIRST_FEATURES_RESERVE_S` when that is less, but never less than 40% (so
    below about 42 s it leaves more than the reserve)."""
    return max(0.4 * total_s, min(0.6 * total_s, total_s - FIRST_FEATURES_RESERVE_S))


def first_feature_plan(ctx: dict[str, Any], *, flip: bool = True) -> tuple[str, bool] | None:
    """The feature set of the first candidate and whether it includes the mirrored training images.

    The cheapest usable backbone at its native size when that extraction fits
    :func:`first_feature_allowance_s`; else the same without the mirrored view (a free
    augmentation, but it costs as much as the training split); else the largest of
    :data:`FIRST_FEATURE_SIZES` that fits, mirrored view first. On photos a head on frozen
    features, even at 128px, beats anything trained from scratch in the same seconds by a wide
    margin: on sports-12 at 60 s a small CNN got 58-66%, lite0@160 features 93-95%.
    ``flip=False``: the recipe does not flip (orientation matters), so no mirrored view at all.
    """
    env = ctx.get("environment", {})
    total = float(env.get("budget", {}).get("time_budget_s", env.get("candidate_budget_s", 60.0) * 8))
    profile = ctx.get("profile", {})
    allowed = first_feature_allowance_s(total)
    scale = float(env.get("extraction_scale", 1.0))
    for name in usable_backbones(ctx):
        native = BACKBONES[name].native_size
        for size in (native, *(s for s in FIRST_FEATURE_SIZES if s < native)):
            key = feature_key(name, size)
            for mirrored in (True, False) if flip else (False,):
                if extraction_cost_s(key, feature_images(profile, flip=mirrored), scale=scale) <= allowed:
                    return key, mirrored
    return None


def _env(ctx: dict[str, Any]) -> tuple[bool, float, dict[str, Any]]:
    env = ctx.get("environment", {})
    return bool(env.get("cuda")), float(env.get("candidate_budget_s", 60.0)), env


def architect(ctx: dict[str, Any]) -> dict[str, Any]:
    """Design the first pipeline from the profile, the description and the environment."""
    profile = ctx.get("profile", {})
    description = ctx.get("description", "") or ""
    cuda, budget, env = _env(ctx)
    pretrained = env.get("pretrained", {})
    n_train = int(profile.get("num_train", 1000))
    stored = int(profile.get("stored_size", 32))
    chans = int(profile.get("in_chans", 3))
    imbalance = float(profile.get("imbalance_ratio", 1.0))
    rationale: list[str] = []
    data: dict[str, Any] = {}
    model: dict[str, Any] = {}
    train: dict[str, Any] = {}

    color = bool(COLOR_WORDS.search(description))
    flip_rate = float(profile.get("hflip_change_rate", 0.0))
    if ORIENTATION_WORDS.search(description):
        data["HFLIP"] = False
        rationale.append("The description says orientation or handedness carries meaning: no horizontal flips.")
    elif flip_rate > FLIP_THRESHOLD:
        data["HFLIP"] = False
        rationale.append(f"{flip_rate:.0%} of mirrored training images look like another class: no horizontal flips.")
    if color:
        data["COLOR_AUG"] = False
        rationale.append("Colour carries the label: no colour augmentation.")

    has_weights = bool(pretrained.get("hub")) or "efficientnet_lite0" in pretrained.get("local", [])
    photo = stored >= 64 and chans == 3
    size = 224 if cuda else 128
    first = first_feature_plan(ctx, flip=data.get("HFLIP", True)) if photo and not cuda else None
    if first is not None:
        key, mirrored = first
        name, fsize = key.split("@")
        total = float(env.get("budget", {}).get("time_budget_s", budget))
        scale = float(env.get("extraction_scale", 1.0))
        if int(fsize) < BACKBONES[name].native_size:
            rationale.append(
                f"{name} at its native {BACKBONES[name].native_size}px would not leave time for a head in the "
                f"{total:.0f}s budget: {fsize}px instead."
            )
        if not mirrored and data.get("HFLIP", True):
            data["HFLIP"] = False
            extra_s = (extraction_cost_s(key, feature_images(profile, flip=True), scale=scale)
                       - extraction_cost_s(key, feature_images(profile, flip=False), scale=scale))
            rationale.append(
                f"No horizontal flips, for time only (orientation does not matter here): the mirrored training "
                f"images would cost about {extra_s:.0f}s more to extract, which this budget does not allow."
            )
        data.update(FEATURES=key)
        model.update(HEAD_HIDDEN=0, DROPOUT=0.2)
        train.update(WEIGHT_DECAY=0.05, LABEL_SMOOTHING=0.1, HEAD_EPOCHS=60)
        rationale.append(
            f"Real photos, a CPU and ImageNet weights: a frozen {name} at {fsize}px gives strong features in one "
            f"forward pass (about {extraction_cost_s(key, feature_images(profile, flip=mirrored), scale=scale):.0f}s, once, cached for every later "
            f"candidate); a linear head trains on them in seconds. Fine-tuning the whole network would cost about "
            f"{n_train * lite0_cost_ms(128) / 1000:.0f}s per epoch at 128px out of {total:.0f}s in all."
        )
        components = {}
        for cname, knobs in (("data", data), ("model", model), ("training", train)):
            components[cname], _ = set_knobs(reference_source(cname), knobs)
        decisions = {k: str(v) for part in (data, model, train) for k, v in part.items()}
        summary = f"linear head on cached {name} features at {fsize}px"
        return {"summary": summary, "rationale": rationale, "decisions": decisions, "components": components}
    if photo and has_weights and not cuda:
        # The largest input at which fine-tuning still gets 3+ epochs in the candidate budget.
        size = next((s for s in (128, 112, 96, 80, 64) if n_train * 3 * lite0_cost_ms(s) / 1000 <= 0.8 * budget), 0)
        if not size:
            rationale.append(
                f"Pretrained EfficientNet-Lite0 would get under 3 epochs even at 64px "
                f"({n_train * lite0_cost_ms(64) / 1000:.0f}s per epoch) in {budget:.0f}s: a from-scratch CNN instead."
            )
    if photo and has_weights and size:
        model.update(ARCH="efficientnet_lite0" if not (cuda and pretrained.get("hub")) else "convnext_nano",
                     PRETRAINED=True, DROPOUT=0.2)
        data.update(INPUT_SIZE=size, AUGMENT="rrc")
        train.update(LR=1e-3, WEIGHT_DECAY=0.02, LABEL_SMOOTHING=0.1, WARMUP_EPOCHS=0.5)
        rationale.append(
            f"Real photos and ImageNet weights are available: fine-tune {model['ARCH']} at {size}px "
            f"(about {n_train * lite0_cost_ms(size) / 1000:.0f}s per epoch here; ImageNet features transfer to small "
            "photo sets far better than what a net learns from scratch in minutes)."
        )
    elif cuda:
        size = min(max(stored, 32), 64) if stored <= 64 else 160
        model.update(ARCH="resnet18", PRETRAINED=False)
        data.update(INPUT_SIZE=size, AUGMENT="crop_flip" if size <= 64 else "rrc")
        train.update(LR=2e-3, LABEL_SMOOTHING=0.1)
        rationale.append(f"GPU, no usable pretrained weights: ResNet-18 with a full-resolution stem at {size}px.")
    else:
        size = min(stored, 32) if stored <= 64 else (64 if budget >= 120 else 48)
        # Widest small CNN that still fits ~10 epochs into the candidate budget.
        width = 16
        for w in (24, 32, 48, 64):
            if n_train * 10 * cpu_cost_ms(w, size, chans) / 1000 <= 0.7 * budget:
                width = w
        model.update(ARCH="small_cnn", WIDTH=width, DROPOUT=0.1)
        data.update(INPUT_SIZE=size, AUGMENT="crop_flip")
        train.update(LR=3e-3, LABEL_SMOOTHING=0.1)
        est = n_train * cpu_cost_ms(width, size, chans) / 1000
        rationale.append(
            f"CPU only, {n_train} training images: a compact CNN (width {width}) at {size}px costs about "
            f"{est:.1f}s per epoch, so the {budget:.0f}s budget buys enough epochs to converge; a ResNet would get one."
        )
    if imbalance >= 3:
        data["BALANCED_SAMPLING"] = True
        rationale.append(f"Classes are imbalanced ({imbalance:.1f}:1): class-balanced sampling.")
    data["BATCH_SIZE"] = 128 if cuda else (32 if photo else 64)
    train.update(SCHEDULE="cosine", GRAD_CLIP=1.0)
    rationale.append("AdamW with warmup and cosine decay, label smoothing 0.1; epochs sized to the time budget.")

    components = {}
    for name, knobs in (("data", data), ("model", model), ("training", train)):
        components[name], _ = set_knobs(reference_source(name), knobs)
    decisions = {k: str(v) for part in (data, model, train) for k, v in part.items()}
    summary = (
        f"{model.get('ARCH')} at {size}px, augmentation {data.get('AUGMENT')}, "
        f"AdamW lr {train.get('LR')}, cosine schedule"
    )
    return {"summary": summary, "rationale": rationale, "decisions": decisions, "components": components}


def engineer(ctx: dict[str, Any]) -> dict[str, Any]:
    """Check, revise or repair one component file."""
    component = ctx["component"]
    phase = ctx.get("phase", "init")
    code = ctx.get("current_code") or reference_source(component)
    if phase == "init":
        issues = validate_component(component, code)
        if issues:
            return {"code": reference_source(component),
                    "change": f"replaced an invalid {component}.py with the reference ({issues[0]})"}
        return {"code": code, "change": f"checked {component}.py against interface v1: valid, kept as designed"}
    if phase == "repair":
        err = ctx.get("error", {})
        knobs = get_knobs(code)
        ref, _ = set_knobs(reference_source(component), knobs)
        return {"code": ref, "change": (
            f"repair of {err.get('error_type', 'error')}: rebuilt {component}.py from the reference recipe, "
            "keeping its settings")}
    feedback = ctx.get("feedback", {})
    knobs = dict(feedback.get("knobs", {}))
    if not knobs:
        return {"code": code, "change": "no concrete setting in the feedback; kept the component", "skip": True}
    new, applied = set_knobs(code, knobs)
    if len(applied) < len(knobs):
        base, _ = set_knobs(reference_source(component), get_knobs(code))
        new, applied = set_knobs(base, knobs)
    change = ", ".join(f"{k}={v!r}" for k, v in applied.items())
    return {"code": new, "change": f"set {change}: {feedback.get('change', '')}".strip()}


def summarize(ctx: dict[str, Any]) -> str:
    """A faithful few-line account of one attempt."""
    r = ctx.get("report", {})
    knobs = ctx.get("knobs", {})
    curve = ", ".join(
        f"{e.get('val_accuracy', 0):.3f}" for e in r.get("epochs", [])[-6:] if e.get("val_accuracy") is not None
    )
    setting = "; ".join(f"{c}: " + ", ".join(f"{k}={v}" for k, v in sorted(kv.items())) for c, kv in knobs.items() if kv)
    acc = r.get("val_accuracy")
    outcome = f"val {acc:.4f}" if acc is not None else f"no score ({r.get('error', '')[:120]})"
    return (
        f"#{r.get('iteration')} {r.get('target')}: {r.get('change', '')[:200]} -> {r.get('status')}, {outcome} "
        f"(best {r.get('best_val_accuracy')}). Epoch val curve: [{curve}]. "
        f"{len(r.get('epochs', []))} epochs in {r.get('seconds', 0):.0f}s, {r.get('images_per_s', 0):.0f} img/s"
        f"{', stopped by the time budget' if r.get('stopped_by_budget') else ''}. Settings: {setting}"
    )


def _curve(report: dict[str, Any]) -> tuple[list[float], list[float], list[float]]:
    ep = report.get("epochs", [])
    tl = [float(e["train_loss"]) for e in ep if e.get("train_loss") is not None]
    vl = [float(e["val_loss"]) for e in ep if e.get("val_loss") is not None]
    va = [float(e["val_accuracy"]) for e in ep if e.get("val_accuracy") is not None]
    return tl, vl, va


def analyst(ctx: dict[str, Any]) -> dict[str, Any]:
    """Diagnose the best candidate's learning curve and target one engineer with one untried change."""
    report = ctx.get("best_report") or ctx.get("last_report") or {}
    last = ctx.get("last_report") or {}
    knobs = ctx.get("best_knobs", {"data": {}, "model": {}, "training": {}})
    tried = set(ctx.get("tried", []))
    profile = ctx.get("profile", {})
    cuda, budget, _ = _env(ctx)
    num_classes = int(profile.get("num_classes", 10))
    tl, vl, va = _curve(report)
    d, m, t = knobs.get("data", {}), knobs.get("model", {}), knobs.get("training", {})
    lr = float(t.get("LR") or 3e-3)
    proposals: list[tuple[str, str, dict[str, Any], str, str]] = []

    def propose(target: str, knob: dict[str, Any], diagnosis: str, change: str, effect: str) -> None:
        proposals.append((target, diagnosis, knob, change, effect))

    plan = ctx.get("environment", {}).get("budget", {})
    final_done = change_key("training_engineer", {}, "final") in tried
    if plan.get("final_due") and not final_done and not d.get("FEATURES") and report:
        # Exploration has had its share: train the best configuration with the rest of the budget,
        # continuing from its weights (a head on cached features converges in seconds: no need).
        return {"target": "training_engineer", "diagnosis": "Exploration has used its share of the budget.",
                "change": "final phase: train the best configuration with the rest of the budget",
                "expected_effect": "more epochs of the best recipe; the largest single gain left",
                "knobs": {}, "fidelity": "final", "warm_start": True}
    if d.get("FEATURES"):
        mirror = mirror_flip_feedback(report) if d.get("HFLIP", True) else None
        for prop in ([mirror] if mirror else []) + feature_proposals(ctx, d, m, t, va):
            if change_key(prop["target"], prop["knobs"], prop.get("fidelity", "explore")) not in tried:
                return prop
        return continue_training()

    error = str(last.get("error") or "")
    if last.get("status") in ("timeout",) or "MemoryLimit" in error or "Infeasible" in error:
        propose("data_engineer", {"INPUT_SIZE": max(int(d.get("INPUT_SIZE") or 32) // 2, 16)},
                "The last candidate ran out of time or memory.", "halve the input size", "fits the budget again")
    chance = 1.5 / max(num_classes, 2)
    diverged = any(math.isnan(v) or v > 50 for v in tl) or "FloatingPointError" in str(last.get("error", ""))
    if diverged or (len(va) >= 3 and (max(va) <= chance or tl[-1] > tl[0] * 1.05)):
        propose("training_engineer", {"LR": lr * 0.3}, "Training diverges or stays at chance: loss does not fall.",
                f"lower the learning rate from {lr:g} to {lr * 0.3:g}", "stable descent of the training loss")
    if d.get("HFLIP", True) and flips_change_label(ctx):
        propose("data_engineer", {"HFLIP": False},
                "Mirrored images look like other classes (or the description says orientation matters), "
                "yet training flips them: the augmentation teaches wrong labels.",
                "stop horizontal flips", "several points, more on mirror-paired classes")
    elif d.get("HFLIP", True) and (mirror := mirror_flip_feedback(report)):
        # From the results alone (the flip check may be off): two-way confusion within class pairs.
        propose(mirror["target"], mirror["knobs"], mirror["diagnosis"], mirror["change"], mirror["expected_effect"])
    under = len(va) <= 2 or bool(report.get("stopped_by_budget")) or (len(va) >= 2 and va[-1] >= max(va) - 1e-9)
    budget_bound = under
    if under and len(va) < 6:
        w = int(m.get("WIDTH") or 32)
        if m.get("ARCH") == "small_cnn" and w > 16:
            propose("model_engineer", {"WIDTH": max(w // 2, 16)},
                    f"Under-trained: only {len(va)} epochs fit the budget and accuracy was still rising.",
                    f"halve the network width to {max(w // 2, 16)} so twice the epochs fit",
                    "more epochs in the same time; higher final accuracy")
        propose("training_engineer", {"LR": lr * 2},
                f"Under-trained: {len(va)} epochs, accuracy still rising at the end.",
                f"raise the learning rate to {lr * 2:g} to converge in fewer epochs", "faster convergence")
    overfit = len(vl) >= 3 and len(tl) >= 3 and (vl[-1] - tl[-1] > 0.25) and (vl[-1] > min(vl) * 1.05)
    if overfit:
        flips_ok = d.get("HFLIP", True) and not flips_change_label(ctx)
        propose("data_engineer", {"MIXUP": 0.2, "CUTMIX": 1.0}, "Over-fitting: validation loss rises while training loss falls.",
                "add MixUp/CutMix", "smaller generalisation gap")
        propose("data_engineer", {"ERASING": 0.25}, "Over-fitting: validation loss rises while training loss falls.",
                "add random erasing", "smaller generalisation gap")
        propose("model_engineer", {"DROPOUT": min(float(m.get("DROPOUT") or 0.1) + 0.2, 0.5)},
                "Over-fitting.", "raise dropout before the classifier", "less memorisation")
        propose("training_engineer", {"WEIGHT_DECAY": 0.1}, "Over-fitting.", "raise weight decay to 0.1", "smaller gap")
        if flips_ok:
            propose("data_engineer", {"AUGMENT": "trivial"}, "Over-fitting.", "switch to TrivialAugment", "more varied views")
    imbalance = float(profile.get("imbalance_ratio", 1.0))
    per_class = [a for a in report.get("per_class_val_accuracy", []) if a is not None]
    trained = len(va) >= 3 and not under
    if imbalance >= 2 or (trained and per_class and min(per_class) < (sum(per_class) / len(per_class)) - 0.25):
        propose("data_engineer", {"BALANCED_SAMPLING": True}, "Weak minority classes under class imbalance.",
                "sample batches class-balanced", "higher accuracy on the weakest classes")
        propose("training_engineer", {"CLASS_WEIGHTED_LOSS": True}, "Weak minority classes.",
                "weight the loss by inverse class frequency", "higher recall on rare classes")
    # Plateau / general improvements, in the order a practitioner tries them.
    epochs = len(va)
    if epochs >= 4:
        propose("training_engineer", {"EMA_DECAY": 0.998}, "Plateau: accuracy is flat over the last epochs.",
                "keep an exponential moving average of the weights", "+0.5-1 point from a smoother model")
    propose("training_engineer", {"SCHEDULE": "onecycle"}, "Plateau.", "one-cycle schedule", "faster convergence")
    propose("training_engineer", {"LABEL_SMOOTHING": 0.0 if float(t.get("LABEL_SMOOTHING", 0.1)) else 0.1},
            "Plateau.", "toggle label smoothing", "better calibrated targets")
    if m.get("ARCH") == "small_cnn":
        w = int(m.get("WIDTH") or 32)
        if not budget_bound:
            propose("model_engineer", {"WIDTH": w + w // 2}, "Capacity-bound: training converges well within the budget.",
                    f"widen the network to {w + w // 2}", "more capacity")
    propose("training_engineer", {"LR": lr * 0.5}, "Plateau.", f"lower the learning rate to {lr * 0.5:g}", "finer optimum")
    if d.get("HFLIP", True) and not flips_change_label(ctx):
        propose("data_engineer", {"TTA_HFLIP": True}, "Plateau.", "average predictions with the flipped image",
                "+0.3-1 point at no training cost")
    propose("data_engineer", {"MIXUP": 0.2, "CUTMIX": 0.0}, "Plateau.", "light MixUp", "regularisation")
    propose("model_engineer", {"DROPOUT": 0.3}, "Plateau.", "raise dropout", "regularisation")
    propose("training_engineer", {"LR": lr * 3}, "Plateau.", f"raise the learning rate to {lr * 3:g}", "escape a poor basin")

    for target, diagnosis, knob, change, effect in proposals:
        if change_key(target, knob) not in tried:
            # After the final phase the incumbent is trained long: a change that keeps its model
            # continues from its weights, else it could never catch up in a short look.
            warm = final_done and target != "model_engineer"
            return {"target": target, "diagnosis": diagnosis, "change": change, "expected_effect": effect,
                    "knobs": knob, "warm_start": warm}
    return continue_training()


def continue_training() -> dict[str, Any]:
    """When every rule has been tried: train the best further with the time left (never a no-op repeat)."""
    return {"target": "training_engineer", "diagnosis": "Every rule has been tried at this fidelity.",
            "change": "continue training the best candidate with the time left", "knobs": {},
            "expected_effect": "more epochs of the best recipe", "fidelity": "final", "warm_start": True}


def feature_proposals(
    ctx: dict[str, Any], d: dict[str, Any], m: dict[str, Any], t: dict[str, Any], va: list[float]
) -> list[dict[str, Any]]:
    """Changes to a head on cached features, by expected gain per second of the run clock.

    A stronger backbone costs one extraction (estimated from the measured cost per image)
    and typically buys the most; head and optimiser changes cost seconds. Fine-tuning the
    backbone end to end is a final-phase candidate, proposed only when five epochs of it
    fit in what is left.
    """
    env = ctx.get("environment", {})
    plan = env.get("budget", {})
    remaining = float(plan.get("remaining_s", 0.0))
    profile = ctx.get("profile", {})
    n = feature_images(profile, flip=d.get("HFLIP", True) is not False)
    have = set(env.get("features", []))
    current = str(d.get("FEATURES"))
    cur_name = current.split("@")[0]
    out: list[dict[str, Any]] = []

    def add(target: str, knobs: dict[str, Any], diagnosis: str, change: str, effect: str, **extra: Any) -> None:
        out.append({"target": target, "knobs": knobs, "diagnosis": diagnosis, "change": change,
                    "expected_effect": effect, **extra})

    n_train = int((profile.get("split_sizes") or {}).get("train") or profile.get("num_train") or 1000)
    if plan.get("final_due") and cur_name == "efficientnet_lite0":
        for size in (224, 192, 160):
            epoch_s = n_train * lite0_cost_ms(size) / 1000
            if 5 * epoch_s <= remaining - 30:
                add("data_engineer", {"FEATURES": "", "INPUT_SIZE": size, "AUGMENT": "rrc"},
                    f"The features are fixed; the {remaining:.0f}s left buys {(remaining - 30) / epoch_s:.0f} epochs "
                    f"of fine-tuning the whole network at {size}px.",
                    f"final phase: fine-tune {cur_name} end to end at {size}px, starting from the trained head",
                    "+1-3 points when enough epochs fit", fidelity="final", warm_start=True)
                break
    names = usable_backbones(ctx)
    parts = current.split("+")
    strongest = max((names.index(p.split("@")[0]) for p in parts if p.split("@")[0] in names), default=-1)
    for name in names[strongest + 1:]:
        key = feature_key(name, BACKBONES[name].native_size)
        cost = 0.0 if key in have else extraction_cost_s(key, n, scale=float(env.get("extraction_scale", 1.0)))
        # A head fits in seconds, so an extraction may take what is left but the last head
        # fit, the per-attempt overhead and the final scoring (the measured scale corrects
        # the cost table; the executor stops an extraction that would overrun).
        if cost + 45.0 <= remaining:
            add("data_engineer", {"FEATURES": key},
                f"The head on {current} features is limited by the features, not by training "
                f"(val {max(va) if va else 0:.3f} within seconds).",
                f"use the stronger pretrained backbone {key} (about {cost:.0f}s to extract, once)",
                "+0.5-2 points from better features")
    others = [k for k in sorted(have, key=lambda k: -names.index(k.split("@")[0]) if k.split("@")[0] in names else 0)
              if k not in parts]
    if len(parts) == 1 and others:
        combo = "+".join([current, others[0]])
        add("data_engineer", {"FEATURES": combo},
            "Two backbones' features are cached; they make different mistakes.",
            f"concatenate the cached features {combo} (no extraction: costs seconds)",
            "+0.3-1 point from complementary features")
    lr = float(t.get("LR") or 3e-3)
    add("model_engineer", {"HEAD_HIDDEN": 512, "DROPOUT": 0.3}, "A linear head may underfit the classes' boundaries.",
        "a head with one hidden layer of 512", "a few tenths of a point; costs seconds")
    add("training_engineer", {"LR": lr * 0.3}, "The head's validation curve is noisy at the end.",
        f"lower the learning rate to {lr * 0.3:g}", "a steadier optimum; costs seconds")
    add("training_engineer", {"WEIGHT_DECAY": 0.3}, "Few images per class for 1280 features: regularise the head.",
        "raise weight decay to 0.3", "less over-fitting of the head")
    add("training_engineer", {"LABEL_SMOOTHING": 0.0 if float(t.get("LABEL_SMOOTHING", 0.1)) else 0.1},
        "Plateau.", "toggle label smoothing", "better calibrated targets")
    return out


def change_key(target: str, knobs: dict[str, Any], fidelity: str = "explore") -> str:
    """The identity of a change, for the analyst's record of what was tried (its fidelity included)."""
    key = target + ":" + ",".join(f"{k}={v!r}" for k, v in sorted(knobs.items()))
    return key + ("|final" if fidelity == "final" else "")
