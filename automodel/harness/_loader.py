"""Import component files by path and attribute failures to the file that raised them."""

from __future__ import annotations

import importlib.util
import linecache
import traceback
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Any

from automodel.interfaces import COMPONENTS


class ComponentFailure(Exception):
    """A component raised; carries the attribution the executor reports."""

    def __init__(self, component: str, exc: BaseException, files: dict[str, Path]):
        self.component = attribute(exc.__traceback__, files) or component
        self.exc = exc
        self.files = files
        super().__init__(f"{self.component}: {type(exc).__name__}: {exc}")

    def to_json(self) -> dict[str, Any]:
        tb = "".join(traceback.format_exception(type(self.exc), self.exc, self.exc.__traceback__))
        return {
            "component": self.component,
            "error_type": type(self.exc).__name__,
            "message": str(self.exc)[:2000],
            "traceback": tb[-6000:],
            "lines": offending_lines(self.exc.__traceback__, self.files.get(self.component)),
        }


def load_components(directory: Path) -> tuple[dict[str, ModuleType], dict[str, Path]]:
    """Import ``data.py``, ``model.py`` and ``training.py`` from ``directory``.

    Raises:
        ComponentFailure: naming the file whose import failed.
    """
    files = {name: (directory / f"{name}.py").resolve() for name in COMPONENTS}
    modules: dict[str, ModuleType] = {}
    for name, path in files.items():
        try:
            if not path.is_file():
                raise FileNotFoundError(f"component file {path} is missing")
            spec = importlib.util.spec_from_file_location(f"am_component_{name}", path)
            if spec is None or spec.loader is None:
                raise ImportError(f"cannot import {path}")
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            fn = getattr(module, COMPONENTS[name], None)
            if not callable(fn):
                raise AttributeError(f"{path.name} must define a function `{COMPONENTS[name]}`")
        except Exception as exc:
            raise ComponentFailure(name, exc, files) from exc
        modules[name] = module
    return modules, files


def attribute(tb: TracebackType | None, files: dict[str, Path]) -> str | None:
    """The component whose file holds the innermost frame of ``tb``, if any."""
    owner = {str(p): name for name, p in files.items()}
    found = None
    for frame, _ in traceback.walk_tb(tb):
        name = owner.get(str(Path(frame.f_code.co_filename).resolve()))
        if name:
            found = name
    return found


def offending_lines(tb: TracebackType | None, path: Path | None, context: int = 2) -> list[str]:
    """Source lines around the innermost frame of ``tb`` inside ``path``, numbered, ``>`` marking it."""
    if path is None:
        return []
    line = None
    for frame, lineno in traceback.walk_tb(tb):
        if Path(frame.f_code.co_filename).resolve() == path:
            line = lineno
    if line is None:
        return []
    out = []
    for n in range(max(1, line - context), line + context + 1):
        text = linecache.getline(str(path), n)
        if text:
            out.append(f"{'>' if n == line else ' '} {n:4d} | {text.rstrip()}")
    return out
