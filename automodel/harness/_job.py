"""The job a harness process runs, and the protocol it speaks back."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

EVENT_PREFIX = "@@AM "
"""Lines on stdout that start with this prefix carry one JSON event."""

ERROR_EXIT_CODE = 3
"""Exit status of a harness whose component code failed (details in ``error.json``)."""


class HarnessJob(BaseModel):
    """Everything a harness process needs; written as ``job.json`` by the executor's caller."""

    mode: Literal["train", "predict", "features"] = "train"
    components_dir: Path
    data_dir: Path
    workdir: Path
    time_budget_s: float = Field(60.0, gt=0)
    device: str = "auto"
    seed: int = 0
    threads: int = 0
    """CPU threads for torch; 0 = all cores."""
    smoke_steps: int = Field(3, ge=1)
    max_epochs: int | None = None
    """Hard cap on epochs regardless of the training component (for fast tests)."""
    checkpoint: Path | None = None
    """Weights to load in predict mode."""
    init_checkpoint: Path | None = None
    """Warm start: weights of the incumbent loaded (by name, where shapes match) before training."""
    features_dir: Path | None = None
    """The run's cache of pretrained features (read-only for candidates; written in features mode)."""
    features_key: str | None = None
    """Features mode: the set to extract, e.g. ``efficientnet_lite0@224``."""
    hub_available: bool = False
    local_weights: dict[str, str] = Field(default_factory=dict)
    forbidden_paths: list[Path] = Field(default_factory=list)
    """Files and folders component code may not open (test labels, raw dataset)."""
    description: str = ""
    progress_every_s: float = 5.0
    parent_pid: int | None = None
    """The harness stops when this process dies (its team was killed): nothing is left running."""

    def write(self, path: Path) -> None:
        write_json_atomic(path, self.model_dump(mode="json"))


def write_json_atomic(path: Path, payload: Any) -> None:
    """Write JSON to ``path`` through a temporary file and ``os.replace``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str), encoding="utf-8")
    os.replace(tmp, path)


def emit(event: str, **fields: Any) -> None:
    """Send one event line to the executor (stdout, flushed)."""
    sys.stdout.write(EVENT_PREFIX + json.dumps({"event": event, **fields}, default=float) + "\n")
    sys.stdout.flush()
