"""Static checks of a component file against its contract, before anything runs."""

from __future__ import annotations

import ast
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path

from automodel.interfaces._contracts import COMPONENTS, INTERFACE_VERSION
from automodel.interfaces._knobs import KNOB_RANGES, knob_problems

FORBIDDEN_MODULES = {
    "subprocess": "starting processes",
    "socket": "network access",
    "requests": "network access",
    "urllib": "network access",
    "http": "network access",
    "ftplib": "network access",
    "multiprocessing": "starting processes (the harness owns parallelism)",
    "ctypes": "native calls around the sandbox",
}
FORBIDDEN_CALLS = {
    "eval": "running generated strings",
    "exec": "running generated strings",
    "__import__": "dynamic imports",
    "os.system": "running shell commands",
    "os.popen": "running shell commands",
    "os.remove": "deleting files",
    "shutil.rmtree": "deleting files",
    "sys.exit": "ending the harness",
    "exit": "ending the harness",
    "quit": "ending the harness",
}
ARITY = {"data": 1, "model": 1, "training": 2}


@dataclass(frozen=True)
class ComponentIssue:
    """One problem found in a component file."""

    component: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.component}.py:{self.line}: {self.message}"


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def _module_available(name: str) -> bool:
    top = name.split(".")[0]
    if top in sys.stdlib_module_names or top in sys.builtin_module_names:
        return True
    try:
        return importlib.util.find_spec(top) is not None
    except (ImportError, ValueError):
        return False


def validate_component(component: str, source: str) -> list[ComponentIssue]:
    """Check ``source`` (the text of ``<component>.py``) against its contract.

    Checks: it parses; it defines ``build_<component>`` with the contract's positional
    parameters; it declares ``INTERFACE_VERSION`` matching this version; it imports only
    installed modules and none that reach the network or start processes; it calls no
    ``eval``/``exec``/``os.system``-like functions; it does not open absolute paths; the
    knobs it sets (top-level ``UPPER_CASE = literal``) are inside their allowed values
    (:data:`automodel.interfaces.KNOB_RANGES`).

    Returns:
        The issues found, empty when the file is valid.

    Raises:
        ValueError: for an unknown component name (the valid names are listed).
    """
    if component not in COMPONENTS:
        raise ValueError(f"unknown component {component!r}; expected one of {sorted(COMPONENTS)}")
    issues: list[ComponentIssue] = []

    def add(line: int, msg: str) -> None:
        issues.append(ComponentIssue(component, line, msg))

    try:
        tree = ast.parse(source, filename=f"{component}.py")
    except SyntaxError as exc:
        add(exc.lineno or 0, f"syntax error: {exc.msg}")
        return issues

    fn_name = COMPONENTS[component]
    funcs = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    fn = funcs.get(fn_name)
    if fn is None:
        add(1, f"must define a top-level function `{fn_name}`; found functions: {sorted(funcs) or 'none'}")
    else:
        required = len(fn.args.posonlyargs) + len(fn.args.args) - len(fn.args.defaults)
        total = len(fn.args.posonlyargs) + len(fn.args.args)
        want = ARITY[component]
        if not (required <= want <= total or fn.args.vararg):
            add(fn.lineno, f"`{fn_name}` must take {want} positional argument(s), it takes {total}")

    version = None
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "INTERFACE_VERSION" for t in node.targets
        ):
            version = node.value.value if isinstance(node.value, ast.Constant) else None
    if version is None:
        add(1, f"declare `INTERFACE_VERSION = {INTERFACE_VERSION}` at module level")
    elif version != INTERFACE_VERSION:
        add(1, f"INTERFACE_VERSION is {version!r}, this harness implements {INTERFACE_VERSION}")

    for line, problem in _knob_issues(component, tree):
        add(line, f"{problem}; set it inside the range (the knob list gives each knob's allowed values)")

    for item in ast.walk(tree):
        names: list[str] = []
        if isinstance(item, ast.Import):
            names = [a.name for a in item.names]
        elif isinstance(item, ast.ImportFrom) and item.level == 0 and item.module:
            names = [item.module]
        for name in names:
            top = name.split(".")[0]
            if top in FORBIDDEN_MODULES:
                add(getattr(item, "lineno", 0), f"import of `{name}` is not allowed ({FORBIDDEN_MODULES[top]})")
            elif not _module_available(name):
                add(getattr(item, "lineno", 0), f"module `{name}` is not installed; use torch, torchvision, timm, numpy or automodel.interfaces")
        if isinstance(item, ast.Call):
            called = _dotted(item.func)
            if called in FORBIDDEN_CALLS:
                add(getattr(item, "lineno", 0), f"call to `{called}` is not allowed ({FORBIDDEN_CALLS[called]})")
            if called == "open" and item.args and isinstance(item.args[0], ast.Constant):
                target = item.args[0].value
                if isinstance(target, str) and (target.startswith("/") or ".." in Path(target).parts):
                    add(getattr(item, "lineno", 0), f"component code may not open {target!r}; it gets its data from the spec")
    return issues


def _knob_issues(component: str, tree: ast.Module) -> list[tuple[int, str]]:
    """Knobs of the table set to a literal outside their allowed values, with their lines."""
    out = []
    for node in tree.body:
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)):
            continue
        name = node.targets[0].id
        if name not in KNOB_RANGES.get(component, {}):
            continue
        try:
            value = ast.literal_eval(node.value)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            continue  # an expression: its value is known only when the file runs
        out += [(node.lineno, problem) for problem in knob_problems(component, {name: value})]
    return out


def validate_components(directory: str | Path) -> list[ComponentIssue]:
    """Validate the three component files in ``directory`` (missing files are issues too)."""
    root = Path(directory)
    issues: list[ComponentIssue] = []
    for component in COMPONENTS:
        path = root / f"{component}.py"
        if not path.is_file():
            issues.append(ComponentIssue(component, 0, f"file {path} is missing"))
            continue
        issues.extend(validate_component(component, path.read_text(encoding="utf-8")))
    return issues
