"""Listing a dataset folder: symlinks followed once, loops and dangling links counted as skips."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from automodel.data._errors import SkipReport

__all__ = ["entry_kind", "walk_files"]


def entry_kind(path: Path) -> str:
    """``dir``, ``file``, ``symlink_loop``, ``broken_link`` or ``other`` (fifo, socket...)."""
    try:
        st = path.stat()
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # a link that points back at itself
            return "symlink_loop"
        return "broken_link" if path.is_symlink() else "unreadable"
    if stat.S_ISDIR(st.st_mode):
        return "dir"
    return "file" if stat.S_ISREG(st.st_mode) else "other"


def walk_files(folder: Path, root: Path, skips: SkipReport) -> list[Path]:
    """Every file under ``folder`` (sorted), following symlinked folders once.

    A symlinked folder that leads back to one of its own ancestors is a ``symlink_loop``
    skip; one that leads to a folder already listed is a ``duplicate_dir`` skip (its images
    would otherwise count twice); dangling links are ``broken_link`` skips.
    """
    out: list[Path] = []
    seen: set[str] = set()

    def rel(p: Path) -> str:
        try:
            return p.relative_to(root).as_posix()
        except ValueError:
            return str(p)

    def visit(current: Path, ancestors: tuple[str, ...]) -> None:
        real = os.path.realpath(current)
        if real in ancestors:
            skips.add("symlink_loop", rel(current), f"symlinked folder leads back to {real}; not followed")
            return
        if real in seen:
            skips.add("duplicate_dir", rel(current), f"symlink to {real}, already listed; not listed twice")
            return
        seen.add(real)
        try:
            entries = sorted(current.iterdir())
        except OSError as exc:
            skips.add("unreadable", rel(current), f"{type(exc).__name__}: {exc}")
            return
        for entry in entries:
            kind = entry_kind(entry)
            if kind == "dir":
                visit(entry, (*ancestors, real))
            elif kind == "file":
                out.append(entry)
            else:
                skips.add(kind, rel(entry), "not a readable file or folder")

    visit(folder, ())
    return sorted(out)
