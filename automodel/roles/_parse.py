"""Getting code and JSON out of model replies, robustly; failures raise ReplyError.

Models wrap code in many ways: fenced blocks (backticks or tildes, any language tag,
indented fences), a last fence never closed, one block holding several files, file names
in a heading before the block, or no fence at all with prose around the code. Each
function here accepts all of these and says, in the error it raises, what to send instead:
that message goes back to the model on the retry.
"""

from __future__ import annotations

import ast
import builtins
import contextlib
import json
import re
import symtable
from dataclasses import dataclass
from typing import Any

from automodel.interfaces import COMPONENTS, validate_component
from automodel.roles._base import ReplyError

__all__ = [
    "CodeBlock",
    "component_code",
    "extract_code_blocks",
    "extract_json",
    "find_blocks",
    "same_code",
    "split_components",
    "undefined_names",
    "unused_new_knobs",
]

_OPEN = re.compile(r"^[ \t]{0,3}(`{3,}|~{3,})[ \t]*([A-Za-z0-9_.+-]*)([^\n]*)$")
_PY_LANGS = ("python", "py", "python3", "")
_FILE_NAME = re.compile(r"\b(data|model|training)\.py\b")
_CODE_START = re.compile(r"^(?:from\s+\S+\s+import\b|import\s+\w|def\s+\w+\(|class\s+\w+|[A-Z_][A-Z0-9_]*\s*=|#\s*\w+\.py\b|@\w)")


@dataclass(frozen=True)
class CodeBlock:
    """One fenced block of a reply."""

    lang: str
    code: str
    before: str = ""
    """The last line of prose before the fence (where models put a file name)."""
    info: str = ""
    """The rest of the fence's info string (``title=data.py`` and the like)."""
    closed: bool = True
    """False for a last fence never closed (it may end in prose)."""


def find_blocks(text: str) -> list[CodeBlock]:
    """Every fenced block; an unclosed last block runs to the end of the reply."""
    lines = text.replace("\r\n", "\n").split("\n")
    blocks: list[CodeBlock] = []
    prose = ""
    i = 0
    while i < len(lines):
        match = _OPEN.match(lines[i])
        if not match:
            if lines[i].strip():
                prose = lines[i].strip()
            i += 1
            continue
        fence, lang, info = match.group(1), match.group(2).lower(), match.group(3).strip()
        closing = re.compile(rf"^[ \t]{{0,3}}{re.escape(fence[0])}{{{len(fence)},}}[ \t]*$")
        body: list[str] = []
        i += 1
        while i < len(lines) and not closing.match(lines[i]):
            body.append(lines[i])
            i += 1
        closed = i < len(lines)
        i += 1  # the closing fence (or past the end)
        code = "\n".join(body)
        blocks.append(CodeBlock(lang=lang, code=code + "\n" if code and not code.endswith("\n") else code,
                                before=prose, info=info, closed=closed))
        prose = ""
    return blocks


def extract_code_blocks(text: str) -> list[tuple[str, str]]:
    """``(language, code)`` of every fenced block (an unclosed last block counts)."""
    return [(b.lang, b.code) for b in find_blocks(text)]


def _unfenced_code(text: str, *, from_top: bool = False) -> str | None:
    """Python with prose around it and no fence: from the first line that starts code to the
    last line that keeps the module parseable."""
    lines = text.replace("\r\n", "\n").split("\n")
    start = 0 if from_top else next((i for i, line in enumerate(lines) if _CODE_START.match(line)), None)
    if start is None:
        return None
    for end in range(len(lines), start, -1):
        chunk = "\n".join(lines[start:end]).rstrip() + "\n"
        try:
            ast.parse(chunk)
        except SyntaxError:
            continue
        return chunk
    return None


def _python_blocks(text: str) -> list[CodeBlock]:
    blocks = []
    for b in find_blocks(text):
        if b.lang not in _PY_LANGS:
            continue
        if not b.closed:  # an unclosed fence runs to the end of the reply: drop the prose after the code
            code = _unfenced_code(b.code, from_top=True)
            b = CodeBlock(lang=b.lang, code=code, before=b.before, info=b.info) if code else b
        blocks.append(b)
    if not blocks:
        code = _unfenced_code(text)
        if code is not None:
            blocks = [CodeBlock(lang="python", code=code)]
    return blocks


# --- JSON ---------------------------------------------------------------------------------


def _balanced_objects(text: str) -> list[str]:
    """Every top-level ``{...}`` span, matching braces outside string literals."""
    spans: list[str] = []
    depth, start, quote, escaped = 0, -1, "", False
    for i, ch in enumerate(text):
        if quote:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == quote:
                quote = ""
            continue
        if ch == '"' and depth > 0:
            quote = ch
        elif ch == "{":
            if depth == 0:
                start = i
            depth += 1
        elif ch == "}" and depth > 0:
            depth -= 1
            if depth == 0:
                spans.append(text[start : i + 1])
    return spans


def _loads_lenient(candidate: str) -> Any:
    # Strict first, then common slips: trailing commas, Python literals (single quotes, True/False/None).
    repaired = re.sub(r",\s*([}\]])", r"\1", candidate)
    for text in (candidate, repaired):
        with contextlib.suppress(ValueError):
            return json.loads(text)
    try:
        return ast.literal_eval(re.sub(r"\btrue\b", "True", re.sub(r"\bfalse\b", "False", re.sub(r"\bnull\b", "None", repaired))))
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return None


def extract_json(text: str) -> dict[str, Any]:
    """The first JSON object in the reply: a ```json block first, else any balanced ``{...}``.

    Trailing commas and Python-style literals are tolerated.
    """
    blocks = find_blocks(text)
    candidates = [b.code for b in blocks if b.lang in ("json", "json5", "")]
    for b in blocks:
        if b.lang in ("json", "json5", ""):
            candidates += _balanced_objects(b.code)
    candidates += _balanced_objects(text)
    for c in candidates:
        value = _loads_lenient(c.strip())
        if isinstance(value, dict):
            return value
    if "{" in text and "}" not in text[text.find("{"):]:
        raise ReplyError("the JSON object is cut off (no closing brace); reply with a shorter, complete ```json block")
    raise ReplyError("no JSON object found; reply with one ```json block holding a single object")


# --- code -----------------------------------------------------------------------------------


def undefined_names(source: str) -> list[tuple[str, int]]:
    """Names the code reads that nothing defines (``(name, line)``): the crash models make most.

    A module with ``import *`` is not checked (its names cannot be known statically).
    """
    try:
        tree = ast.parse(source)
        table = symtable.symtable(source, "<component>", "exec")
    except (SyntaxError, ValueError):
        return []
    if any(isinstance(n, ast.ImportFrom) and any(a.name == "*" for a in n.names) for n in ast.walk(tree)):
        return []
    module_defined = {s.get_name() for s in table.get_symbols() if s.is_assigned() or s.is_imported()}
    known = module_defined | set(dir(builtins)) | {"__file__", "__name__", "__doc__", "__builtins__", "__spec__"}
    missing: set[str] = set()

    def walk(scope: symtable.SymbolTable) -> None:
        for sym in scope.get_symbols():
            name = sym.get_name()
            if not sym.is_referenced() or name in known:
                continue
            unbound = not sym.is_assigned() and not sym.is_imported()
            if unbound and (scope.get_type() == "module" or sym.is_global()):
                missing.add(name)
        for child in scope.get_children():
            walk(child)

    walk(table)
    if not missing:
        return []
    lines: dict[str, int] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id in missing and isinstance(node.ctx, ast.Load):
            lines[node.id] = min(lines.get(node.id, node.lineno), node.lineno)
    return sorted(((n, lines.get(n, 0)) for n in missing), key=lambda x: x[1])


def _check(component: str, code: str) -> list[str]:
    problems = [str(i) for i in validate_component(component, code)]
    if not problems:
        problems += [f"{component}.py:{line}: name `{name}` is used but never defined or imported"
                     for name, line in undefined_names(code)]
    return problems


def component_code(text: str, component: str) -> str:
    """The code that defines ``component``'s function, checked against its contract.

    Raises:
        ReplyError: no code found, or the code breaks the contract (each issue with its line).
    """
    fn = COMPONENTS[component]
    blocks = _python_blocks(text)
    if not blocks:
        raise ReplyError(f"no ```python block found; reply with the complete {component}.py in one")
    units: list[str] = []
    for b in blocks:
        parts = _split_single_block(b.code)
        if len(parts) > 1:  # one block holding several files under `# data.py`-style headers
            if component in parts:
                units.append(parts[component])
        else:
            units.append(b.code)
    defining = [u for u in units if re.search(rf"^def {fn}\(", u, re.M)]
    candidates = defining or units
    problems: list[str] = []
    for code in reversed(candidates):  # models put the corrected version last
        problems = _check(component, code)
        if not problems:
            return code
    raise ReplyError(f"{component}.py does not satisfy its contract: " + "; ".join(problems[:5])
                     + f". Reply with the complete corrected {component}.py in one ```python block")


def _split_single_block(code: str) -> dict[str, str]:
    """One block holding several files separated by ``# data.py``-style header lines."""
    out: dict[str, str] = {}
    current: str | None = None
    buf: list[str] = []
    for line in code.split("\n"):
        header = re.match(r"^#+\s*(?:file:?\s*)?(data|model|training)\.py\b", line.strip(), re.I)
        if header:
            if current is not None:
                out[current] = "\n".join(buf).strip("\n") + "\n"
            current, buf = header.group(1).lower(), [line]
        elif current is not None:
            buf.append(line)
    if current is not None:
        out[current] = "\n".join(buf).strip("\n") + "\n"
    return out


def split_components(text: str) -> dict[str, str]:
    """The three component files of an Architect reply.

    A file is found by a ``# data.py`` first line, a file name just before its fence or in the
    fence's info string, a single block with ``# data.py`` headers, or its function's name.
    """
    blocks = _python_blocks(text)
    out: dict[str, str] = {}
    for block in blocks:
        parts = _split_single_block(block.code)
        if len(parts) > 1:
            for c, code in parts.items():
                out.setdefault(c, code)
            continue
        first = block.code.lstrip().splitlines()[0] if block.code.strip() else ""
        label = _FILE_NAME.search(first) or _FILE_NAME.search(block.info) or _FILE_NAME.search(block.before)
        if label:
            out.setdefault(label.group(1), block.code)
    for component, fn in COMPONENTS.items():
        if component not in out:
            found = next((b.code for b in blocks if re.search(rf"^def {fn}\(", b.code, re.M)), None)
            if found is not None:
                out[component] = found
    missing = [c for c in COMPONENTS if c not in out]
    if missing:
        raise ReplyError(f"missing component file(s): {', '.join(m + '.py' for m in missing)}; give three ```python "
                         "blocks whose first lines are `# data.py`, `# model.py`, `# training.py`")
    problems = [p for c in COMPONENTS for p in _check(c, out[c])]
    if problems:
        raise ReplyError("components do not satisfy their contracts: " + "; ".join(problems[:6]))
    return {c: out[c] for c in COMPONENTS}


# --- no-op changes ----------------------------------------------------------------------------


def _normalized(source: str) -> str | None:
    """The module's syntax tree without comments, whitespace or docstrings (None if it does not parse)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return None
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(body, list) and body and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str)):
            body.pop(0)
    return ast.dump(tree, annotate_fields=False)


def same_code(a: str, b: str) -> bool:
    """True when two files differ only in comments, whitespace or docstrings."""
    na, nb = _normalized(a), _normalized(b)
    return na is not None and na == nb


def _top_constants(tree: ast.Module) -> dict[str, int]:
    out: dict[str, int] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                if isinstance(t, ast.Name) and t.id.isupper():
                    out.setdefault(t.id, node.lineno)
    return out


def unused_new_knobs(before: str, after: str) -> list[str]:
    """UPPER_CASE constants ``after`` adds that ``before`` lacks and nothing in ``after`` reads:
    knobs a model invented (``LEARNING_RATE = 0.01`` next to the file's ``LR``) that change nothing."""
    try:
        old, new = ast.parse(before), ast.parse(after)
    except SyntaxError:
        return []
    added = set(_top_constants(new)) - set(_top_constants(old))
    read = {n.id for n in ast.walk(new) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    read |= {n.value for n in ast.walk(new) if isinstance(n, ast.Constant) and isinstance(n.value, str)}  # getattr/globals()
    return sorted(k for k in added if k not in read and k != "FEATURES")
