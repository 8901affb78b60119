"""Export the best model of a run to ONNX or TorchScript, in an executor job, with a model card.

The job (harness export mode) builds the generated components, loads the checkpoint and traces
preprocessing + model + softmax into one file; this side copies the file out of the job and
writes ``model.json`` (machine-readable input/output description) and ``model_card.md`` beside
it from trusted sources: the run's metadata, ``final.json``, ``best/metrics.json`` and history.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from automodel._io import atomic_open, atomic_write_json, atomic_write_text
from automodel.deploy._card import model_card
from automodel.deploy._run import DeployError, TrainedRun
from automodel.executors import EXPORT_FORMATS, Executor, export_name

__all__ = ["ExportedModel", "export_model"]

EventCallback = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class ExportedModel:
    """Where an export went: the model file, ``model.json`` and ``model_card.md``."""

    path: Path
    spec_path: Path
    card_path: Path
    spec: dict[str, Any]


def _job_facts(report: dict[str, Any] | None) -> dict[str, Any]:
    """The few facts taken from the export job's own report, type-checked (it is not trusted)."""
    report = report or {}
    out: dict[str, Any] = {}
    for key, kind in (("input_size", int), ("out_chans", int), ("params", int), ("tta_hflip", bool),
                      ("features", str), ("checked_with", str), ("max_abs_diff", float)):
        value = report.get(key)
        if isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
            out[key] = value[:80] if isinstance(value, str) else value
    return out


def model_spec(trained: TrainedRun, fmt: str, facts: dict[str, Any]) -> dict[str, Any]:
    """``model.json``: what the exported file takes and returns, and how the run scored it."""
    meta = trained.meta
    final = trained.final()
    metrics = trained.best_metrics()
    return {
        "format": fmt,
        "file": export_name(fmt),
        "classes": list(meta.classes),
        "input": {"name": "images", "dtype": "uint8", "layout": "NCHW", "channels": int(meta.in_chans),
                  "height": int(meta.stored_size), "width": int(meta.stored_size),
                  "color": "gray" if meta.in_chans == 1 else "RGB"},
        "output": {"name": "probabilities", "dtype": "float32", "shape": ["N", int(meta.num_classes)]},
        "preprocessing_outside": {
            "decode": "EXIF orientation applied; 16/32-bit gray scaled to 8 bits; alpha composited on white; "
                      "palette and other modes converted to RGB",
            "square": f"shorter side resized to {meta.stored_size} and the longer side centre-cropped "
                      "(PIL: bilinear with reducing_gap=3 when shrinking, bicubic when enlarging; the crop box "
                      "is taken from the source first)",
            "gray": "mean of R, G and B, rounded" if meta.in_chans == 1 else None,
            "python": f"automodel.deploy.to_model_input(files, size={meta.stored_size}, channels={meta.in_chans})",
        },
        "preprocessing_inside": facts,
        "dataset_mean": list(meta.mean),
        "dataset_std": list(meta.std),
        "best_val_accuracy": metrics.get("val_accuracy", final.get("best_val_accuracy")),
        "test_accuracy": final.get("test_accuracy"),
        "test_size": final.get("test_size"),
        "run": str(trained.root),
    }


def export_model(
    run: str | Path | TrainedRun,
    fmt: str = "onnx",
    *,
    out: str | Path | None = None,
    executor: Executor | str | None = None,
    device: str | None = None,
    timeout_s: float = 900.0,
    on_event: EventCallback | None = None,
) -> ExportedModel:
    """Export the best model of ``run`` as ``fmt`` (``onnx`` or ``torchscript``) into ``out``.

    ``out`` defaults to ``RUN/export``. The exported model takes uint8 ``(N, C, S, S)`` images (the
    run's channels and stored size) and returns class probabilities; the model card says how to
    make that input from an image file.

    Raises:
        DeployError: an unknown format, a run without a best model, or a failed export job.
    """
    if fmt not in EXPORT_FORMATS:
        raise DeployError(f"unknown export format {fmt!r}; choose one of {', '.join(EXPORT_FORMATS)}")
    trained = run if isinstance(run, TrainedRun) else TrainedRun.open(run)
    out_dir = Path(out).expanduser().resolve() if out is not None else trained.root / "export"
    name = export_name(fmt)
    with tempfile.TemporaryDirectory(prefix="automodel-export-") as tmp:
        best = trained.snapshot_best(Path(tmp) / "best")  # the run may promote a new best meanwhile
        runner = trained.runner(trained.root / "data", executor=executor, device=device)
        result = runner.export(best, best / "checkpoint.pt", Path(tmp) / "job", fmt=fmt, timeout_s=timeout_s,
                               on_event=on_event)
        if not result.ok:
            err = result.error
            detail = f"{err.component}.py {err.error_type}: {err.message}" if err else "; ".join(result.log_tail[-5:])
            raise DeployError(f"the export job ended with status {result.status}: {detail[:1500]}")
        out_dir.mkdir(parents=True, exist_ok=True)
        with open(Path(tmp) / "job" / name, "rb") as src, atomic_open(out_dir / name, "wb") as dst:
            shutil.copyfileobj(src, dst, 1024 * 1024)
    facts = _job_facts(result.result)
    spec = model_spec(trained, fmt, facts)
    atomic_write_json(out_dir / "model.json", spec, indent=2)
    atomic_write_text(out_dir / "model_card.md", model_card(trained, spec))
    return ExportedModel(out_dir / name, out_dir / "model.json", out_dir / "model_card.md", spec)


def read_spec(path: str | Path) -> dict[str, Any]:
    """``model.json`` of an export (a folder or the file itself)."""
    path = Path(path)
    path = path / "model.json" if path.is_dir() else path
    return dict(json.loads(path.read_text(encoding="utf-8")))
