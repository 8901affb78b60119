"""The harness protocol, in one place: the job spec, the job directory layout, files and events.

Both sides import this module: the trusted side (:class:`automodel.harness.CandidateRunner`,
the executors, the scorer) writes a job directory and reads what comes back; the harness
process (``python -m automodel.harness``), which runs untrusted component code, reads
``job.json`` and writes its outputs. A job directory holds only what the job needs, and
every path in ``job.json`` is relative to it::

    job.json            this HarnessJob
    components/         data.py model.py training.py (copies)
    features/KEY/       cached pretrained features of the splits the job may see, when any
    init.pt             train mode with a warm start: the incumbent's weights
    data/               meta.json, train_x.npy, train_y.npy, val_x.npy   (train mode)
                        meta.json, test_x.npy (or val_x.npy)             (predict mode)
                        meta.json                                        (export mode)
    weights/            local pretrained weight files, when the run has any
    checkpoint.pt       predict and export mode: the weights to load
    out/                what the harness writes (see the names below)
    result.json         the harness's own report (untrusted), or error.json

Validation and test labels are never in a job directory: the harness writes class
log-probabilities, and the orchestrator scores them.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from automodel._io import atomic_write_json

__all__ = [
    "COMPONENTS_DIR",
    "DATA_DIR",
    "ERROR_EXIT_CODE",
    "ERROR_FILE",
    "EVENT_PREFIX",
    "EXPORT_FORMATS",
    "GUARD_ENV",
    "INFEASIBLE_ERROR_TYPE",
    "JOB_FILE",
    "OUT_DIR",
    "PARENT_ENV",
    "RESULT_FILE",
    "WEIGHTS_DIR",
    "HarnessJob",
    "checkpoint_name",
    "emit",
    "export_name",
    "parse_event",
    "parse_val_name",
    "predictions_name",
    "val_predictions_name",
    "write_json_atomic",
]

EVENT_PREFIX = "@@AM "
"""A stdout line that starts with this and continues with a JSON object is an event."""
RESULT_FILE = "result.json"
"""The harness's own report of a finished job (informational: never a score)."""
ERROR_FILE = "error.json"
"""A :class:`~automodel.executors.ComponentError` written by a harness whose component failed."""
JOB_FILE = "job.json"
COMPONENTS_DIR = "components"
DATA_DIR = "data"
WEIGHTS_DIR = "weights"
OUT_DIR = "out"
GUARD_ENV = "AUTOMODEL_GUARD_PATHS"
"""Environment variable: ``os.pathsep``-separated held-out paths the harness's honest-mistake guard refuses
(set only under executors that do not isolate the filesystem; it is not the security boundary)."""
PARENT_ENV = "AUTOMODEL_PARENT_PID"
"""Environment variable: the pid the harness must die with (set by the local executor; sandboxes tie the
child's life to theirs themselves)."""
ERROR_EXIT_CODE = 3
"""Exit status of a harness whose component code failed (details in ``error.json``)."""
INFEASIBLE_ERROR_TYPE = "Infeasible"
"""``error_type`` of a plan that cannot train one epoch within its budget (status ``infeasible``)."""

Variant = Literal["ema", "raw"]
_VAL_NAME = re.compile(r"^val_e(\d{1,5})_(ema|raw)\.npy$")


def val_predictions_name(epoch: int, variant: str) -> str:
    """File (in ``out/``) of the validation log-probabilities after ``epoch`` with weights ``variant``."""
    return f"val_e{epoch}_{variant}.npy"


def checkpoint_name(epoch: int, variant: str) -> str:
    """File (in ``out/``) of the weights whose predictions are :func:`val_predictions_name`."""
    return f"ckpt_e{epoch}_{variant}.pt"


EXPORT_FORMATS = ("onnx", "torchscript")
"""Formats an export job writes (see :func:`export_name`)."""


def export_name(fmt: str) -> str:
    """File (in ``out/``) of an export job's model in format ``fmt`` (``onnx`` or ``torchscript``)."""
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; choose one of {', '.join(EXPORT_FORMATS)}")
    return "model.onnx" if fmt == "onnx" else "model.pt"


def predictions_name(split: str) -> str:
    """File (in ``out/``) of a predict job's log-probabilities for ``split``."""
    return f"{split}_predictions.npy"


def parse_val_name(name: str) -> tuple[int, str] | None:
    """``(epoch, variant)`` of a validation predictions file name, or ``None`` for any other name."""
    match = _VAL_NAME.match(name)
    return (int(match.group(1)), match.group(2)) if match else None


class HarnessJob(BaseModel):
    """Everything a harness process needs; ``job.json`` in the job directory.

    Paths are relative to the job directory (the harness's working directory), so the
    job names nothing outside it. Add new fields here, with a default: both sides read
    this one model.
    """

    model_config = ConfigDict(extra="forbid")

    mode: Literal["train", "predict", "features", "export"] = "train"
    """``features``: trusted code only (no component is imported) extracts pretrained features into
    ``out/features/``; the orchestrator moves them into the run's feature cache. ``export``: the
    components and ``checkpoint.pt`` become one traced model file in ``out/`` (:func:`export_name`),
    preprocessing included; the job holds no images."""
    export_format: Literal["onnx", "torchscript"] = "onnx"
    """Export mode: the format to write."""
    split: Literal["val", "test"] = "test"
    """Predict mode: which images ``data/`` holds and the harness predicts."""
    time_budget_s: float = Field(60.0, gt=0)
    device: str = "auto"
    seed: int = 0
    threads: int = 0
    """CPU threads for torch; 0 = all this process may use."""
    smoke_steps: int = Field(3, ge=1)
    max_epochs: int | None = None
    """Hard cap on epochs regardless of the training component (for fast tests)."""
    init_checkpoint: str | None = None
    """Warm start: the incumbent's weights (``init.pt``), loaded where names and shapes match."""
    features_dir: str | None = None
    """The feature sets this job may read (``features/``: train, train_flip and val for training, the
    predicted split for prediction; never labels)."""
    features_key: str | None = None
    """Features mode: the set to extract, e.g. ``efficientnet_lite0@224``."""
    features_flip: bool = True
    """Features mode: also extract the mirrored training images (``train_flip``)."""
    hub_available: bool = False
    local_weights: dict[str, str] = Field(default_factory=dict)
    """Pretrained weight files by model name, relative to the job directory (``weights/...``)."""
    description: str = ""
    progress_every_s: float = 5.0

    def write(self, path: Path) -> None:
        """Write this job as JSON to ``path`` (atomically)."""
        write_json_atomic(path, self.model_dump(mode="json"))


def write_json_atomic(path: Path, payload: Any) -> None:
    """Write JSON to ``path`` durably (the project's one write helper, :mod:`automodel._io`)."""
    atomic_write_json(path, payload, indent=2)


def emit(event: str, **fields: Any) -> None:
    """Send one event line to the executor (stdout, flushed)."""
    sys.stdout.write(EVENT_PREFIX + json.dumps({"event": event, **fields}, default=float) + "\n")
    sys.stdout.flush()


def parse_event(line: str) -> dict[str, Any] | None:
    """The event a stdout line carries, or ``None`` when it is not a well-formed event line."""
    if not line.startswith(EVENT_PREFIX):
        return None
    try:
        value = json.loads(line[len(EVENT_PREFIX) :])
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None
