"""The allowed values of every knob of the reference recipe, defined once.

The reference files (``reference/*.py``) hold each knob's default and its meaning as a
comment; :data:`KNOB_RANGES` is the one place that says which values are allowed. The
prompts show it beside each knob (:func:`automodel.prompts.knobs_text`), the static
validator refuses a component file that sets a knob outside it (so an engineer's reply with
``LR = 50`` is refused with the reason and asked again, before anything runs), and the
Analyst's requested knob values are checked against it the same way (:func:`knob_problems`).
"""

from __future__ import annotations

import ast
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

KnobKind = Literal["int", "float", "bool", "choice", "text"]


@dataclass(frozen=True)
class KnobRange:
    """The values one knob may take."""

    kind: KnobKind
    lo: float | None = None
    hi: float | None = None
    choices: tuple[str, ...] = ()
    zero_allowed: bool = False
    """``0`` is allowed besides ``lo..hi`` (it means "chosen automatically" or "off": the comment says)."""

    def describe(self) -> str:
        """The allowed values in a few words, e.g. ``int 8..1024, or 0``."""
        if self.kind == "bool":
            return "True or False"
        if self.kind == "choice":
            return "one of " + ", ".join(repr(c) for c in self.choices)
        if self.kind == "text":
            return "text"
        text = f"{self.kind} {self.lo:g}..{self.hi:g}"
        return text + (", or 0" if self.zero_allowed else "")

    def problem(self, value: object) -> str | None:
        """Why ``value`` is not allowed, or None when it is."""
        if self.kind == "bool":
            return None if isinstance(value, bool) else "must be True or False"
        if self.kind in ("choice", "text"):
            if not isinstance(value, str):
                return "must be text"
            return None if self.kind == "text" or value in self.choices else f"must be {self.describe()}"
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"must be a number ({self.describe()})"
        if self.kind == "int" and not isinstance(value, int):
            return f"must be a whole number written without a decimal point ({self.describe()})"
        if not math.isfinite(value):
            return f"must be finite ({self.describe()})"
        if self.zero_allowed and value == 0:
            return None
        assert self.lo is not None and self.hi is not None
        if not self.lo <= value <= self.hi:
            return f"is outside its allowed range ({self.describe()})"
        return None


def _int(lo: float, hi: float, *, zero: bool = False) -> KnobRange:
    return KnobRange("int", lo, hi, zero_allowed=zero)


def _float(lo: float, hi: float, *, zero: bool = False) -> KnobRange:
    return KnobRange("float", lo, hi, zero_allowed=zero)


_BOOL = KnobRange("bool")
_TEXT = KnobRange("text")

KNOB_RANGES: dict[str, dict[str, KnobRange]] = {
    "data": {
        "AUGMENT": KnobRange("choice", choices=("auto", "light", "crop_flip", "rrc", "trivial")),
        "HFLIP": _BOOL,
        "COLOR_AUG": _BOOL,
        "MIXUP": _float(0.0, 10.0),
        "CUTMIX": _float(0.0, 10.0),
        "MIX_PROB": _float(0.0, 1.0),
        "ERASING": _float(0.0, 1.0),
        "BALANCED_SAMPLING": _BOOL,
        "TTA_HFLIP": _BOOL,
        "INPUT_SIZE": _int(8, 1024, zero=True),
        "BATCH_SIZE": _int(2, 4096, zero=True),  # 1 breaks batch norm in training
        "FEATURES": _TEXT,  # a feature set name, checked when it is extracted
    },
    "model": {
        "ARCH": _TEXT,  # "auto", "small_cnn" or a timm model name, checked when the model is built
        "WIDTH": _int(4, 512, zero=True),
        "DROPOUT": _float(0.0, 0.95),
        "DROP_PATH": _float(0.0, 0.9),
        "PRETRAINED": _BOOL,
        "HEAD_HIDDEN": _int(8, 8192, zero=True),
    },
    "training": {
        "LR": _float(1e-7, 2.0, zero=True),
        "WEIGHT_DECAY": _float(0.0, 1.0),
        "LABEL_SMOOTHING": _float(0.0, 0.5),
        "EPOCHS": _int(1, 1000, zero=True),
        "MAX_EPOCHS": _int(1, 1000),
        "HEAD_EPOCHS": _int(1, 5000),
        "WARMUP_EPOCHS": _float(0.0, 100.0),
        "SCHEDULE": KnobRange("choice", choices=("cosine", "onecycle", "constant")),
        "EMA_DECAY": _float(0.5, 0.99999, zero=True),
        "GRAD_CLIP": _float(0.0, 1000.0),
        "CLASS_WEIGHTED_LOSS": _BOOL,
        "LAYER_DECAY": _float(0.05, 1.0, zero=True),
    },
}
"""Component -> knob -> its allowed values. Wide enough for any sensible setting; what it
refuses is absurd (``LR = 50``, ``EPOCHS = 100000``, ``BATCH_SIZE = 1e6``, ``DROPOUT = 1.5``)."""


def knob_problems(component: str, knobs: Mapping[str, object]) -> list[str]:
    """``NAME = value <why not>`` for each of ``knobs`` outside its allowed values.

    Knobs the table does not list for ``component`` are not judged here (whether a file
    defines them is checked where the file is known).
    """
    table = KNOB_RANGES.get(component, {})
    out = []
    for name, value in knobs.items():
        allowed = table.get(name)
        why = allowed.problem(value) if allowed is not None else None
        if why:
            out.append(f"{name} = {value!r} {why}")
    return out


def read_knobs(source: str) -> dict[str, Any]:
    """The literal values of a component file's top-level UPPER_CASE constants, as Python leaves them.

    The last assignment (plain or annotated) wins; one whose value is not a literal makes the
    knob unknown, so it is left out. Read, never run: the file may be untrusted.
    """
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return {}
    knobs: dict[str, Any] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            target, value = node.target, node.value
        else:
            continue
        if not (isinstance(target, ast.Name) and target.id.isupper()):
            continue
        try:
            knobs[target.id] = ast.literal_eval(value)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            knobs.pop(target.id, None)
    return knobs
