"""The contracts that component files satisfy, the helpers they may use, and a validator.

Component files import from here::

    from automodel.interfaces import DataRecipe, DataSpec, ops

``reference/`` holds the reference recipe: one strong default file per component.
"""

from pathlib import Path

from automodel.interfaces import _ops as ops
from automodel.interfaces._contracts import (
    COMPONENT_FILES,
    COMPONENTS,
    INTERFACE_VERSION,
    BatchMix,
    BatchTransform,
    DataRecipe,
    DataSpec,
    LossFn,
    LrSchedule,
    ModelSpec,
    PretrainedInfo,
    TrainRecipe,
    TrainSpec,
)
from automodel.interfaces._knobs import KNOB_RANGES, KnobRange, knob_problems, read_knobs
from automodel.interfaces._validate import ComponentIssue, validate_component, validate_components

REFERENCE_DIR = Path(__file__).parent / "reference"
"""The reference recipe: ``data.py``, ``model.py`` and ``training.py``."""

__all__ = [
    "COMPONENTS",
    "COMPONENT_FILES",
    "INTERFACE_VERSION",
    "KNOB_RANGES",
    "REFERENCE_DIR",
    "BatchMix",
    "BatchTransform",
    "ComponentIssue",
    "DataRecipe",
    "DataSpec",
    "KnobRange",
    "LossFn",
    "LrSchedule",
    "ModelSpec",
    "PretrainedInfo",
    "TrainRecipe",
    "TrainSpec",
    "knob_problems",
    "ops",
    "read_knobs",
    "validate_component",
    "validate_components",
]
