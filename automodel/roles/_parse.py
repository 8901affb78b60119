"""Getting code and JSON out of model replies, robustly; failures raise ReplyError."""

from __future__ import annotations

import json
import re
from typing import Any

from automodel.interfaces import COMPONENTS, validate_component
from automodel.roles._base import ReplyError

__all__ = ["component_code", "extract_code_blocks", "extract_json", "split_components"]

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.S)


def extract_code_blocks(text: str) -> list[tuple[str, str]]:
    """``(language, code)`` of every fenced block (an unclosed last block counts)."""
    return [(lang.lower(), code) for lang, code in _FENCE.findall(text)]


def extract_json(text: str) -> dict[str, Any]:
    """The first JSON object in a ```json block, or the first balanced ``{...}`` in the text."""
    candidates = [code for lang, code in extract_code_blocks(text) if lang in ("json", "")]
    start = text.find("{")
    while start != -1:
        depth = 0
        for i in range(start, len(text)):
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            if depth == 0:
                candidates.append(text[start : i + 1])
                break
        start = text.find("{", start + 1) if not candidates else -1
    for c in candidates:
        try:
            value = json.loads(c)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    raise ReplyError("no JSON object found; reply with one ```json block")


def component_code(text: str, component: str) -> str:
    """The code block that defines ``component``'s function, checked against its contract."""
    fn = COMPONENTS[component]
    blocks = [code for lang, code in extract_code_blocks(text) if lang in ("python", "py", "")]
    if not blocks:
        raise ReplyError(f"no ```python block found; reply with the complete {component}.py in one")
    chosen = next((b for b in blocks if f"def {fn}(" in b), blocks[0])
    issues = validate_component(component, chosen)
    if issues:
        raise ReplyError(f"{component}.py does not satisfy its contract: " + "; ".join(str(i) for i in issues[:5]))
    return chosen


def split_components(text: str) -> dict[str, str]:
    """The three component files of an Architect reply (by header comment or by function)."""
    out: dict[str, str] = {}
    blocks = [code for lang, code in extract_code_blocks(text) if lang in ("python", "py", "")]
    for component, fn in COMPONENTS.items():
        for code in blocks:
            first = code.lstrip().splitlines()[0] if code.strip() else ""
            if f"{component}.py" in first or f"def {fn}(" in code:
                out[component] = code
                break
    missing = [c for c in COMPONENTS if c not in out]
    if missing:
        raise ReplyError(f"missing component file(s): {', '.join(missing)}.py; give three ```python blocks")
    problems = [str(i) for c, code in out.items() for i in validate_component(c, code)]
    if problems:
        raise ReplyError("components do not satisfy their contracts: " + "; ".join(problems[:6]))
    return out
