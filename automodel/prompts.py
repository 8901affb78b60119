"""Role prompts: data files in ``prompts/`` with ``${placeholder}`` fields.

Placeholders every prompt may use:

``${team}``
    the team's goal and structure (``prompts/_team.md``);
``${interface}``
    the contract of the role's component, generated from :mod:`automodel.interfaces`;
``${reference}``
    the reference recipe's file for that component.

Roles pass more (``${component}`` for engineers). Unknown placeholders stay as written.
"""

from __future__ import annotations

import inspect
import os
from functools import cache
from pathlib import Path
from string import Template

from automodel.interfaces import REFERENCE_DIR, _contracts

__all__ = ["interface_text", "prompts_dir", "render_prompt"]

_CONTRACT_TYPES = {
    "data": [_contracts.DataSpec, _contracts.DataRecipe],
    "model": [_contracts.ModelSpec, _contracts.PretrainedInfo],
    "training": [_contracts.TrainSpec, _contracts.TrainRecipe],
}


def prompts_dir() -> Path:
    """``$AUTOMODEL_PROMPTS_DIR`` or the ``prompts/`` folder of the source tree."""
    env = os.environ.get("AUTOMODEL_PROMPTS_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[1] / "prompts"


@cache
def interface_text(component: str) -> str:
    """The contract of ``component``: its function, the types it receives and returns."""
    fn = _contracts.COMPONENTS[component]
    arg = {"data": "spec: DataSpec", "model": "spec: ModelSpec", "training": "spec: TrainSpec, model: torch.nn.Module"}
    ret = {"data": "DataRecipe", "model": "torch.nn.Module", "training": "TrainRecipe"}
    parts = [
        f"File `{component}.py` must declare `INTERFACE_VERSION = {_contracts.INTERFACE_VERSION}` and define "
        f"`def {fn}({arg[component]}) -> {ret[component]}`. Import the types with "
        "`from automodel.interfaces import ...`; batched helpers live in `automodel.interfaces.ops` "
        "(to_float, resize, random_resized_crop_flip, random_crop_flip, trivial_augment, random_erasing, "
        "mixup_cutmix, soft_cross_entropy, class_weighted_cross_entropy, warmup_cosine, one_cycle, param_groups).",
    ]
    for t in _CONTRACT_TYPES[component]:
        parts.append("```python\n" + inspect.getsource(t).strip() + "\n```")
    return "\n\n".join(parts)


def render_prompt(role: str, **values: object) -> str:
    """The system prompt of ``role`` with its placeholders filled."""
    root = prompts_dir()
    path = root / f"{role}.md"
    if not path.is_file():
        raise FileNotFoundError(f"prompt {path} is missing; set AUTOMODEL_PROMPTS_DIR to a folder with {role}.md")
    fields: dict[str, object] = {"team": (root / "_team.md").read_text(encoding="utf-8")}
    component = values.get("component")
    if isinstance(component, str) and component in _CONTRACT_TYPES:
        fields["interface"] = interface_text(component)
        fields["reference"] = (REFERENCE_DIR / f"{component}.py").read_text(encoding="utf-8")
    fields.update(values)
    return Template(path.read_text(encoding="utf-8")).safe_substitute(fields)
