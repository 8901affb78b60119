"""``model_card.md``: what an exported model is, what it takes, how well it did, how to use it, its limits."""

from __future__ import annotations

from typing import Any

from automodel.deploy._run import TrainedRun
from automodel.experts import get_knobs
from automodel.interfaces import COMPONENT_FILES

__all__ = ["model_card"]


def _pct(value: Any) -> str:
    return f"{100 * float(value):.2f}%" if isinstance(value, (int, float)) else "not measured"


def _knobs(trained: TrainedRun) -> list[str]:
    lines = []
    for component, file in COMPONENT_FILES.items():
        try:
            knobs = get_knobs((trained.best_dir / file).read_text(encoding="utf-8"))
        except OSError:
            knobs = {}
        knobs.pop("INTERFACE_VERSION", None)
        shown = ", ".join(f"{k}={v!r}" for k, v in knobs.items()) or "(no module-level settings)"
        lines.append(f"- `{file}` ({component}): {shown}")
    return lines


def _usage(spec: dict[str, Any]) -> list[str]:
    inp = spec["input"]
    size, chans = inp["height"], inp["channels"]
    prep = [
        "from automodel.deploy import to_model_input   # decodes files exactly as the run stored its images",
        f"x, skipped = to_model_input(['cat.jpg', 'dog.png'], size={size}, channels={chans})  # uint8 (N, {chans}, {size}, {size})",
    ]
    if spec["format"] == "onnx":
        run = [
            "import onnxruntime",
            "session = onnxruntime.InferenceSession('model.onnx', providers=['CPUExecutionProvider'])",
            "probs = session.run(None, {'images': x})[0]          # (N, classes), rows sum to 1",
        ]
    else:
        run = [
            "import torch",
            "model = torch.jit.load('model.pt').eval()",
            "with torch.no_grad():",
            "    probs = model(torch.from_numpy(x)).numpy()       # (N, classes), rows sum to 1",
        ]
    return ["```python", *prep, *run, "labels = [CLASSES[i] for i in probs.argmax(1)]   # CLASSES: model.json 'classes'",
            "```"]


def model_card(trained: TrainedRun, spec: dict[str, Any]) -> str:
    """The model card of an export described by ``spec`` (``model.json``)."""
    meta, profile = trained.meta, trained.meta.profile
    final, metrics, history = trained.final(), trained.best_metrics(), trained.history()
    inside = spec.get("preprocessing_inside", {})
    inp = spec["input"]
    size, chans = inp["height"], inp["channels"]
    train_counts = meta.class_counts.get("train", [])
    val_counts = meta.class_counts.get("val", [])
    per_class_test = final.get("per_class_test_accuracy", {}) if isinstance(final.get("per_class_test_accuracy"), dict) else {}
    lines = [
        f"# Model card: image classifier for `{meta.source_spec}`",
        "",
        f"Exported by AutoModel from the run `{trained.root}` (best attempt: "
        f"{final.get('best_iteration', 'see best/ITERATION')}). File: `{spec['file']}` ({spec['format']}); "
        "`model.json` beside it holds the same facts for programs.",
        "",
        "## Intended use",
        "",
        f"Classify images like the training data into one of {meta.num_classes} classes. It always answers "
        "with one of these classes: it was never shown images outside them and has no 'unknown' answer.",
        *([f"Dataset description: {profile.description}"] if profile.description else []),
        "",
        "## Data",
        "",
        f"- Source: `{meta.source_spec}` ({meta.source_kind}); images per split: "
        + ", ".join(f"{k} {v}" for k, v in meta.counts.items()),
        f"- Validation: {'its own folder' if meta.val_from_folder else f'a stratified {meta.val_fraction:.0%} of train (seed {meta.seed})'}",
        f"- Stored as {size}x{size} {'gray' if chans == 1 else 'RGB'} squares; skipped files: "
        + (", ".join(f"{k} {v}" for k, v in profile.skipped.items()) if profile.skipped else "none"),
        "",
        "| class | index | train | val | test accuracy |",
        "|---|---|---|---|---|",
    ]
    for i, name in enumerate(meta.classes):
        tr = train_counts[i] if i < len(train_counts) else ""
        va = val_counts[i] if i < len(val_counts) else ""
        lines.append(f"| {name} | {i} | {tr} | {va} | {_pct(per_class_test[name]) if name in per_class_test else ''} |")
    test_line = (f"{_pct(final.get('test_accuracy'))} on {final.get('test_size')} held-out test images, scored once "
                 "at the end of the run" if final.get("test_accuracy") is not None
                 else "not measured (no labelled test split, or the run has not finished)")
    lines += [
        "",
        "## Accuracy (scored by the orchestrator, never by the model's own code)",
        "",
        f"- Validation accuracy of this model: {_pct(metrics.get('val_accuracy', final.get('best_val_accuracy')))} "
        f"on {sum(val_counts) if val_counts else meta.counts.get('val', 0)} images (the split the search selected "
        "models on, so it is optimistic)",
        f"- Test accuracy: {test_line}",
        f"- Attempts in the run: {len(history)}; first valid validation accuracy: {_pct(final.get('first_val_accuracy'))}",
        "",
        "## Input and output",
        "",
        f"- Input `images`: uint8 tensor `(N, {chans}, {size}, {size})` ({'gray' if chans == 1 else 'RGB order'}, "
        "values 0-255), any batch size N.",
        f"- Output `probabilities`: float32 `(N, {meta.num_classes})`, rows sum to 1, columns in the class order "
        "of the table above.",
        "",
        "Before the model (not in the file; `automodel.deploy.to_model_input` does exactly this):",
        "",
        "1. Decode the file; apply its EXIF orientation; 16/32-bit gray is scaled to 8 bits; alpha is "
        "composited on white; palette and other modes become RGB.",
        f"2. Resize the shorter side to {size} px and centre-crop the longer side (PIL: the centre square is "
        "cut first, then resized, bilinear with reducing_gap=3 when shrinking, bicubic when enlarging).",
    ]
    if chans == 1:
        lines.append("3. Gray: the rounded mean of R, G and B.")
    lines += ["", "Inside the model (baked in, do not apply again):", ""]
    if inside.get("features"):
        lines += [
            f"- Pretrained backbone `{inside['features']}`: x/255, gray repeated to 3 channels, resized to the "
            "backbone's size (bilinear, antialiased), normalised with mean = std = 0.5, features rounded to float16 "
            "as the run's feature cache stored them, then the trained head.",
        ]
    else:
        mean = ", ".join(f"{v:.4f}" for v in meta.mean)
        std = ", ".join(f"{v:.4f}" for v in meta.std)
        lines += [
            f"- The data component's `eval_transform` (best/data.py), traced: for the reference recipe x/255, "
            f"normalised with the training set's mean ({mean}) and std ({std}), "
            f"{'gray repeated to 3 channels, ' if chans == 1 and inside.get('out_chans') == 3 else ''}"
            f"resized to the model's input size {inside.get('input_size', '?')} px (bilinear, antialiased when "
            "shrinking). A component of the team's own making may do otherwise: its code is in best/data.py.",
        ]
    lines += [
        "- The model, then a softmax"
        + (", averaged with the prediction of the mirrored image" if inside.get("tta_hflip") else "") + ".",
    ]
    if "max_abs_diff" in inside:
        lines.append(f"- The export job compared this file ({inside.get('checked_with', '')}) with the model it "
                     f"traced on a random batch: largest probability difference {inside['max_abs_diff']:.2e}.")
    lines += [
        "",
        "## Recipe (the best attempt's settings)",
        "",
        *_knobs(trained),
        f"- Parameters: {inside.get('params', 'unknown')}; epochs run: {metrics.get('epochs_run', 'unknown')}; "
        f"weights: {metrics.get('weights', 'raw')}; trained on {trained.device}",
        "",
        "## How to use it",
        "",
        *_usage(spec),
        "",
        f"Or, without the export, from the run itself (its code runs in an executor job, not in your process): "
        f"`automodel predict {trained.root} IMAGES --out preds.csv`, or in Python "
        f"`automodel.load('{trained.root}').predict(images)`.",
        "",
        "## Limits",
        "",
        f"- The input size is fixed at {size}x{size}; other sizes must go through the steps above first.",
        "- Probabilities are not calibrated; the validation set also chose the model, so expect test accuracy "
        "at or below the validation number.",
        "- Images unlike the training data (other cameras, domains, classes) get confident wrong answers.",
        "- The file is a trace: control flow that depends on the input was fixed when it was traced.",
        *(["- ONNX opset 17 (ONNX Runtime 1.14 or newer)."] if spec["format"] == "onnx" else
          ["- TorchScript: load with a PyTorch of the same or a newer version."]),
        "",
    ]
    return "\n".join(lines)
