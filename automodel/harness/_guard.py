"""A fast first check against honest mistakes: a Python audit hook on held-out paths.

This is **not** the security boundary. Component code in the same interpreter can get
around any in-process hook (``os.open`` with ``dir_fd``, ``ctypes``, a subprocess, ...).
What keeps labels from a candidate is that they are never in its job directory or, under
the ``sandbox`` and ``docker`` executors, in its view of the filesystem at all; and every
score is computed outside the candidate (:mod:`automodel.executors`' scorer). The hook
only turns an innocent ``open`` of a held-out path (test labels, the raw dataset) under
the ``local`` executor into a clear ``PermissionError``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

_WATCHED = {"open", "os.listdir", "os.scandir", "glob.glob", "os.walk", "shutil.copyfile", "os.rename"}


def install_guard(forbidden: list[Path]) -> None:
    """Refuse any open or listing of a path under one of ``forbidden``."""
    roots = [os.path.realpath(p) for p in forbidden]
    if not roots:
        return

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if event not in _WATCHED or not args:
            return
        target = args[0]
        if isinstance(target, int) or target is None:
            return
        try:
            path = os.path.realpath(os.fsdecode(target))
        except (TypeError, ValueError):
            return
        for root in roots:
            if path == root or path.startswith(root + os.sep):
                raise PermissionError(
                    f"component code may not read {path}: held-out data belongs to the harness; "
                    "use the arrays the harness passes in"
                )

    sys.addaudithook(hook)


def is_under(path: Path, roots: list[Path]) -> bool:
    p = os.path.realpath(path)
    return any(p == os.path.realpath(r) or p.startswith(os.path.realpath(r) + os.sep) for r in roots)
