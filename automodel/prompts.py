"""Role prompts: data files in ``prompts/`` with ``${placeholder}`` fields.

Placeholders every prompt may use (``prompts/README.md`` lists them too):

``${team}``
    the team's goal, structure and way of working (``prompts/_team.md``, itself a template);
``${interface_data}``, ``${interface_model}``, ``${interface_training}``
    the contract of each component, generated from :mod:`automodel.interfaces`;
``${description}``
    the user's description of the dataset (every role's ``ask`` passes it);
``${environment}``
    device, memory, time budget per candidate, loadable pretrained weights (JSON; passed by ``ask``).

``${ops}``
    every helper of ``automodel.interfaces.ops``: signature and docstring, generated from the code;
``${knobs}``
    the reference files' knobs (UPPER_CASE settings) with their comments (meaning, what 0 means) and their
    allowed values from :data:`automodel.interfaces.KNOB_RANGES`;
``${reference_data}``, ``${reference_model}``, ``${reference_training}``
    the reference recipe's files.

With ``component=`` (the engineers): ``${component}``, ``${interface}`` (that component's
contract) and ``${reference}`` (the reference recipe's file for it). A placeholder left
unfilled stays as written; :func:`unfilled_placeholders` finds them (the tests use it).
"""

from __future__ import annotations

import inspect
import os
import re
import sys
from collections.abc import Callable
from functools import cache
from pathlib import Path
from string import Template
from typing import Any

from automodel.interfaces import KNOB_RANGES, REFERENCE_DIR, _contracts, ops

__all__ = ["interface_text", "knobs_text", "ops_text", "prompt_roles", "prompts_dir", "render_prompt",
           "unfilled_placeholders"]

_PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")

_CONTRACT_TYPES = {
    "data": [_contracts.DataSpec, _contracts.DataRecipe],
    "model": [_contracts.ModelSpec, _contracts.PretrainedInfo],
    "training": [_contracts.TrainSpec, _contracts.TrainRecipe],
}


def prompts_dir() -> Path:
    """``$AUTOMODEL_PROMPTS_DIR``, else the source tree's ``prompts/`` (editable installs),
    else ``<prefix>/share/automodel/prompts`` (where a wheel installs them)."""
    env = os.environ.get("AUTOMODEL_PROMPTS_DIR")
    if env:
        return Path(env)
    source = Path(__file__).resolve().parents[1] / "prompts"
    installed = Path(sys.prefix) / "share" / "automodel" / "prompts"
    return source if source.is_dir() or not installed.is_dir() else installed


def _ops_functions() -> list[tuple[str, Callable[..., Any]]]:
    return [(name, fn) for name, fn in inspect.getmembers(ops, inspect.isfunction)
            if not name.startswith("_") and fn.__module__ == ops.__name__]


@cache
def ops_text() -> str:
    """Every helper in ``automodel.interfaces.ops``: its signature and docstring, from the code itself."""
    out = []
    for name, fn in _ops_functions():
        doc = (inspect.getdoc(fn) or "").split("\n\n")[0].replace("\n", " ")
        out.append(f"ops.{name}{inspect.signature(fn)}" + (f"\n    {doc}" if doc else ""))
    return "\n".join(out)


_KNOB_LINE = re.compile(r"^([A-Z][A-Z0-9_]*)\s*=\s*(.+?)\s*(?:#\s*(.*))?$")


@cache
def knobs_text() -> str:
    """The reference files' knobs with their comments (meaning, what 0 means) and their allowed values
    (:data:`automodel.interfaces.KNOB_RANGES`; a file that sets a knob outside them is refused)."""
    out = []
    for component in _CONTRACT_TYPES:
        out.append(f"{component}.py:")
        for line in (REFERENCE_DIR / f"{component}.py").read_text(encoding="utf-8").splitlines():
            m = _KNOB_LINE.match(line)
            if m and m.group(1) != "INTERFACE_VERSION":
                allowed = KNOB_RANGES[component].get(m.group(1))
                out.append(f"  {m.group(1)} = {m.group(2)}" + (f"  # {m.group(3)}" if m.group(3) else "")
                           + (f"  [allowed: {allowed.describe()}]" if allowed is not None else ""))
    return "\n".join(out)


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
        f"({', '.join(name for name, _ in _ops_functions())}; no others: there is no RandAugment, use "
        "trivial_augment). `TrainRecipe.lr_schedule(step)` returns a MULTIPLIER of the optimizer's learning rate "
        "(1.0 = the LR set in the optimizer), never an absolute learning rate.",
    ]
    for t in _CONTRACT_TYPES[component]:
        parts.append("```python\n" + inspect.getsource(t).strip() + "\n```")
    return "\n\n".join(parts)


def prompt_roles() -> list[str]:
    """The roles that have a prompt file (files starting with ``_`` are shared parts)."""
    return sorted(p.stem for p in prompts_dir().glob("*.md") if not p.name.startswith("_") and p.stem.islower()
                  and p.stem != "readme")


def render_prompt(role: str, **values: object) -> str:
    """The system prompt of ``role`` with its placeholders filled.

    Raises:
        FileNotFoundError: ``prompts/<role>.md`` does not exist (the message names the folder).
    """
    root = prompts_dir()
    path = root / f"{role}.md"
    if not path.is_file():
        raise FileNotFoundError(f"prompt {path} is missing; the prompts there are {prompt_roles()}; set "
                                f"AUTOMODEL_PROMPTS_DIR to a folder with {role}.md")
    fields: dict[str, object] = {f"interface_{c}": interface_text(c) for c in _CONTRACT_TYPES}
    fields.update({f"reference_{c}": (REFERENCE_DIR / f"{c}.py").read_text(encoding="utf-8") for c in _CONTRACT_TYPES})
    fields["ops"] = ops_text()
    fields["knobs"] = knobs_text()
    component = values.get("component")
    if isinstance(component, str) and component in _CONTRACT_TYPES:
        fields["interface"] = interface_text(component)
        fields["reference"] = (REFERENCE_DIR / f"{component}.py").read_text(encoding="utf-8")
    fields.update(values)
    team = root / "_team.md"
    fields["team"] = Template(team.read_text(encoding="utf-8")).safe_substitute(fields) if team.is_file() else ""
    return Template(path.read_text(encoding="utf-8")).safe_substitute(fields)


def unfilled_placeholders(text: str) -> list[str]:
    """The ``${name}`` fields still in a rendered prompt."""
    return sorted(set(_PLACEHOLDER.findall(text)))
