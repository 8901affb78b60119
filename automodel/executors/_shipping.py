"""Moving a job's directories between the caller and a worker that does not share its filesystem.

A bundle maps absolute paths to file contents (and, caller to worker only, to symlink
targets). Paths stay the same on both sides: the worker recreates the caller's directories
at the same place. Whatever arrives is written only below the request's own directories,
through a temporary file and a rename, so a hard link in the destination is replaced,
never written through; files from the worker (the candidate's side) come back as regular
files only, never as links.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import structlog

from automodel._io import atomic_write_bytes, durable_replace

from ._models import ExecutionRequest

__all__ = ["Bundle", "FileState", "MARKER_PREFIX", "apply_bundle", "make_bundle", "remove_bundle", "request_roots", "snapshot"]

MARKER_PREFIX = ".automodel-ray-"
"""Files with this prefix tell a worker that it sees the caller's workdir; never shipped."""

Bundle = dict[str, Any]
"""``{"files": {path: bytes}, "links": {path: target}, "left": [path, ...]}``."""

log = structlog.get_logger(__name__)


def request_roots(request: ExecutionRequest) -> list[Path]:
    """The directories of a request whose files travel: ``workdir``, and ``job_dir`` if it lies elsewhere."""
    workdir = request.workdir.absolute()
    roots = [workdir]
    if request.job_dir is not None:
        job_dir = request.job_dir.absolute()
        if workdir not in (job_dir, *job_dir.parents):
            roots.append(job_dir)
    return roots


FileState = tuple[int, int, int, int]
"""Inode, size, modification and change time (ns) of a file: equal means untouched."""


def _state(path: Path) -> FileState:
    st = path.stat()
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def snapshot(roots: list[Path]) -> dict[str, FileState]:
    """The state of every regular file under ``roots``, to ship back only what a run changed."""
    return {
        str(path): _state(path)
        for root in roots
        if root.is_dir()
        for path in root.rglob("*")
        if not path.is_symlink() and path.is_file()
    }


def make_bundle(
    roots: list[Path], *, limit_bytes: int, links: bool, unchanged: dict[str, FileState] | None = None
) -> Bundle:
    """Regular files (and symlinks, if ``links``) under ``roots``, up to ``limit_bytes`` of contents.

    Files whose state equals the one in ``unchanged`` are skipped; files past the limit
    are listed in ``left``, not packed. Markers are never packed.
    """
    unchanged = unchanged or {}
    files: dict[str, bytes] = {}
    link_targets: dict[str, str] = {}
    left: list[str] = []
    total = 0
    for root in roots:
        if not root.is_dir():
            continue
        for path in sorted(root.rglob("*")):
            if path.name.startswith(MARKER_PREFIX):
                continue
            if path.is_symlink():
                if links:
                    link_targets[str(path)] = os.readlink(path)
                continue
            if not path.is_file() or unchanged.get(str(path)) == _state(path):
                continue
            size = path.stat().st_size
            if total + size > limit_bytes:
                left.append(str(path))
                continue
            files[str(path)] = path.read_bytes()
            total += size
    return {"files": files, "links": link_targets, "left": left}


def _inside(path: Path, roots: list[Path]) -> bool:
    # The parent is resolved (a link there would lead elsewhere); the last component is
    # replaced by a rename, never followed.
    parent = path.parent.resolve()
    return any(parent == r or r in parent.parents for r in (root.resolve() for root in roots))


def _shipped_target(name: str, roots: list[Path]) -> Path | None:
    """Where a shipped file may be written: an absolute path inside ``roots`` (else None, logged)."""
    target = Path(name)
    if not target.is_absolute() or ".." in target.parts:
        log.error("executor_ship_refused_path", path=name)
        return None
    target.parent.mkdir(parents=True, exist_ok=True)
    if not _inside(target, roots):
        log.error("executor_ship_refused_path", path=name, roots=[str(r) for r in roots])
        return None
    return target


def apply_bundle(roots: list[Path], bundle: Bundle) -> list[str]:
    """Write the bundle's files and links, refusing paths outside ``roots``; returns what it wrote."""
    written: list[str] = []
    for root in roots:
        root.mkdir(parents=True, exist_ok=True)
    for name, data in bundle.get("files", {}).items():
        target = _shipped_target(name, roots)
        if target is not None:
            atomic_write_bytes(target, data)
            written.append(name)
    for name, link_target in bundle.get("links", {}).items():
        target = _shipped_target(name, roots)
        if target is not None:
            tmp = target.with_name(f".{target.name}.{os.getpid()}.ship")
            tmp.unlink(missing_ok=True)
            os.symlink(link_target, tmp)
            durable_replace(tmp, target)
            written.append(name)
    return written


def remove_bundle(paths: list[str], created: list[Path]) -> None:
    """Remove the worker's copy of ``paths``, then those of ``created`` (roots it made) left empty."""
    for name in paths:
        with contextlib.suppress(OSError):
            Path(name).unlink()
    for root in created:
        if not root.is_dir():
            continue
        # Deepest first: remove the directories the run left empty.
        for path in sorted((p for p in root.rglob("*") if p.is_dir() and not p.is_symlink()), reverse=True):
            with contextlib.suppress(OSError):
                path.rmdir()
        with contextlib.suppress(OSError):
            root.rmdir()
