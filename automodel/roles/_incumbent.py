"""The files a change starts from: the incumbent best, else the Architect's design, never silently the bare reference.

Before any candidate succeeded there is no ``best/``. A change then starts from the
Architect's design: its decisions (the knob values it chose, e.g. ``HFLIP = False`` on
digits) applied to the reference files, which are known to run. The Architect's files are
kept in ``run/design/`` for this.
"""

from __future__ import annotations

from typing import Any

from automodel.experts import get_knobs, reference_source, set_knobs
from automodel.interfaces import COMPONENT_FILES, COMPONENTS
from automodel.store import RunStore

__all__ = ["DESIGN_DIR", "design_knobs", "incumbent_files", "incumbent_source", "knob_diff", "save_design"]

DESIGN_DIR = "design"


def save_design(store: RunStore, components: dict[str, str]) -> None:
    """Keep the Architect's three files in ``run/design/``."""
    folder = store.root / DESIGN_DIR
    folder.mkdir(parents=True, exist_ok=True)
    for c, code in components.items():
        (folder / COMPONENT_FILES[c]).write_text(code, encoding="utf-8")


def design_knobs(store: RunStore) -> dict[str, dict[str, Any]]:
    """The knob values the Architect's design set, per component (empty without a design)."""
    folder = store.root / DESIGN_DIR
    out: dict[str, dict[str, Any]] = {}
    for c in COMPONENTS:
        path = folder / COMPONENT_FILES[c]
        out[c] = get_knobs(path.read_text(encoding="utf-8")) if path.is_file() else {}
    return out


def incumbent_source(store: RunStore) -> str:
    """Where :func:`incumbent_files` comes from: ``best``, ``design`` or ``reference``."""
    if (store.best_dir / "model.py").is_file():
        return "best"
    return "design" if (store.root / DESIGN_DIR / "model.py").is_file() else "reference"


def incumbent_files(store: RunStore) -> dict[str, str]:
    """The three files a change starts from: ``best/``; before any success, the reference with the design's knobs."""
    source = incumbent_source(store)
    if source == "best":
        return {c: (store.best_dir / COMPONENT_FILES[c]).read_text(encoding="utf-8") for c in COMPONENTS}
    knobs = design_knobs(store) if source == "design" else {}
    files = {}
    for c in COMPONENTS:
        code = reference_source(c)
        wanted = {k: v for k, v in knobs.get(c, {}).items() if k != "INTERFACE_VERSION"}
        files[c] = set_knobs(code, wanted)[0] if wanted else code
    return files


def knob_diff(before: dict[str, str], after: dict[str, str]) -> dict[str, Any]:
    """The knob values ``after``'s files set that differ from ``before``'s (what a change actually applied)."""
    out: dict[str, Any] = {}
    for c in COMPONENTS:
        old, new = get_knobs(before.get(c, "")), get_knobs(after.get(c, ""))
        out.update({k: v for k, v in new.items() if old.get(k) != v and k != "INTERFACE_VERSION"})
    return out
