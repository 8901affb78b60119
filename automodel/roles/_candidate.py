"""One candidate on its way through the Executor, and who is to blame when it fails."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from automodel.messages import ENGINEER_OF, AnalystFeedback, ComponentName, Fidelity

__all__ = ["Candidate", "Failure", "as_component", "blame_by_evidence", "crash_boundaries", "owner_of"]


@dataclass
class Candidate:
    """One candidate on its way through the Executor: its files, what it tests, how it is run."""

    iteration: int
    workdir: Path
    files: dict[str, str]
    target: str
    change: str
    knobs: dict[str, Any]
    fidelity: Fidelity
    want_warm: bool
    """The feedback asked to continue from the incumbent's weights."""
    authors: dict[str, str] = field(default_factory=dict)
    repairs: int = 0
    warm: bool = False
    """It does (the same model file as the incumbent's, whose checkpoint exists)."""
    budget: float = 0.0
    features: str | None = None
    extract_s: float = 0.0
    started: float | None = None
    feedback: AnalystFeedback | None = None
    """The round's feedback that asked for it (parallel candidates only)."""


@dataclass(frozen=True)
class Failure:
    """Why a candidate did not get to train (invalid files, a feature set that could not be extracted)."""

    status: Literal["invalid", "crashed"]
    seconds: float
    component: str
    error_type: str
    message: str


def crash_boundaries(workdir: Path) -> dict[str, str]:
    """What the harness saw cross the component boundaries before a crash (``error.json``'s ``boundaries``)."""
    for path in sorted(workdir.glob("*/error.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        found = data.get("boundaries") if isinstance(data, dict) else None
        if isinstance(found, dict):
            return {str(k): str(v) for k, v in found.items()}
    return {}


def blame_by_evidence(raised_in: str, boundaries: Mapping[str, str]) -> str:
    """The component at fault: the one that raised, unless the boundary shapes point upstream.

    A wrong permute or size in ``data.py`` raises inside ``model.forward`` (or the loss): when the
    harness saw the data transform return a shape other than the one its recipe declared, the
    data file is at fault.
    """
    suspect = boundaries.get("suspect", "")
    if raised_in in ("model", "training") and suspect.startswith("data:"):
        return "data"
    return raised_in


def as_component(name: str) -> ComponentName:
    if name == "data":
        return "data"
    if name == "model":
        return "model"
    return "training"


def owner_of(target: str) -> ComponentName:
    """The component whose engineer answers for an unattributed failure of ``target``'s change."""
    for component, role in ENGINEER_OF.items():
        if role == target:
            return as_component(component)
    return "training"

