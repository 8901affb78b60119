"""Read and turn the knobs of a component file: its top-level UPPER_CASE constants."""

from __future__ import annotations

import ast
from typing import Any

from automodel.interfaces import REFERENCE_DIR, read_knobs

__all__ = ["get_knobs", "reference_source", "set_knobs"]


def reference_source(component: str) -> str:
    """The reference recipe's file for ``component``."""
    return (REFERENCE_DIR / f"{component}.py").read_text(encoding="utf-8")


def _knob_nodes(tree: ast.Module) -> dict[str, ast.Assign]:
    out = {}
    for node in tree.body:
        if (
            isinstance(node, ast.Assign)
            and len(node.targets) == 1
            and isinstance(node.targets[0], ast.Name)
            and node.targets[0].id.isupper()
        ):
            out[node.targets[0].id] = node
    return out


def get_knobs(source: str) -> dict[str, Any]:
    """Literal values of the file's UPPER_CASE constants (:func:`automodel.interfaces.read_knobs`)."""
    return read_knobs(source)


def set_knobs(source: str, knobs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Return ``source`` with the named constants set; also the subset that was applied.

    Constants not defined in the file are not applied (the caller decides what then).
    Comments on the changed lines are kept.
    """
    tree = ast.parse(source)
    nodes = _knob_nodes(tree)
    lines = source.splitlines(keepends=True)
    applied: dict[str, Any] = {}
    # Edit bottom-up so earlier offsets stay valid.
    for name, node in sorted(nodes.items(), key=lambda kv: -kv[1].lineno):
        if name not in knobs:
            continue
        value = node.value
        if value.end_lineno is None or value.end_col_offset is None:
            continue
        start, end = value.lineno - 1, value.end_lineno - 1
        head = lines[start][: value.col_offset]
        tail = lines[end][value.end_col_offset:]
        lines[start : end + 1] = [head + repr(knobs[name]) + tail]
        applied[name] = knobs[name]
    return "".join(lines), applied
