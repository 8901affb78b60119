"""Linux ``/proc`` helpers: find, measure and end every process of a session.

A child started with ``start_new_session=True`` leads a new session whose id is its
pid. Every descendant stays in that session even after ``setpgid`` (a new process
group), so the session id is what we track. A descendant that calls ``setsid`` itself
leaves the session and escapes this tracking; containers (the Docker executor) are
the answer for code that must be contained against that.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

__all__ = ["cgroup_oom_kills", "end_session", "end_tree", "session_pids", "session_rss_mb", "tree_pids", "tree_rss_mb"]

_PAGE_MB = os.sysconf("SC_PAGE_SIZE") / (1024 * 1024)
_PROC = Path("/proc")


def _stat_fields(pid: str) -> list[str] | None:
    """Fields of ``/proc/PID/stat`` after the command name (which may hold spaces)."""
    try:
        raw = (_PROC / pid / "stat").read_bytes()
    except OSError:
        return None
    return raw[raw.rfind(b")") + 2 :].decode("ascii", "replace").split()


def _scan(sid: int) -> list[tuple[int, int, str]]:
    """``(pid, rss_pages, state)`` of every process whose session id is ``sid``."""
    found: list[tuple[int, int, str]] = []
    for entry in os.scandir(_PROC):
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(entry.name)
        # After the name: state(0) ppid(1) pgrp(2) session(3) ... rss(21).
        if fields and len(fields) > 21 and fields[3] == str(sid):
            found.append((int(entry.name), int(fields[21]), fields[0]))
    return found


def session_pids(sid: int, *, include_zombies: bool = False) -> list[int]:
    """Pids of the processes in session ``sid``; zombies (already dead) are left out by default."""
    return [pid for pid, _, state in _scan(sid) if include_zombies or state not in ("Z", "X")]


def session_rss_mb(sid: int) -> float:
    """Summed resident memory of session ``sid`` in MiB."""
    return sum(pages for _, pages, _ in _scan(sid)) * _PAGE_MB


def _signal_all(sid: int, sig: signal.Signals) -> list[int]:
    pids = session_pids(sid)
    if not pids:
        # Once the session is empty its id may be reused by an unrelated process group.
        return pids
    # killpg reaches the leader's group without racing /proc; the scan reaches members
    # that moved to another process group.
    with contextlib.suppress(OSError):
        os.killpg(sid, sig)
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, sig)
    return pids


def end_session(sid: int, *, grace_s: float, poll_s: float = 0.05) -> list[int]:
    """SIGTERM every process of session ``sid``, then SIGKILL whatever is left after ``grace_s``.

    Returns the pids that were still alive when the first signal went out.
    """
    first = session_pids(sid)
    if not first:
        return []
    _signal_all(sid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if not session_pids(sid):
            return first
        time.sleep(poll_s)
    for _ in range(50):
        if not _signal_all(sid, signal.SIGKILL):
            break
        time.sleep(poll_s)
    return first


def _tree(root: int) -> list[tuple[int, int, str]]:
    """``(pid, rss_pages, state)`` of ``root`` and all its descendants (whatever their session)."""
    info: dict[int, tuple[int, int, str]] = {}
    for entry in os.scandir(_PROC):
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(entry.name)
        if fields and len(fields) > 21:
            info[int(entry.name)] = (int(fields[1]), int(fields[21]), fields[0])
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in info.items():
        children.setdefault(ppid, []).append(pid)
    found, todo = [], [root] if root in info else []
    while todo:
        pid = todo.pop()
        found.append((pid, info[pid][1], info[pid][2]))
        todo.extend(children.get(pid, []))
    return found


def tree_pids(root: int) -> list[int]:
    """Live pids of ``root`` and its descendants (sandboxes: a PID namespace keeps orphans inside)."""
    return [pid for pid, _, state in _tree(root) if state not in ("Z", "X")]


def tree_rss_mb(root: int) -> float:
    """Summed resident memory of ``root`` and its descendants in MiB."""
    return sum(pages for _, pages, _ in _tree(root)) * _PAGE_MB


def end_tree(root: int, *, grace_s: float, poll_s: float = 0.05) -> list[int]:
    """SIGTERM ``root`` and its descendants, SIGKILL what is left after ``grace_s``; returns the first pids."""
    first = tree_pids(root)
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        pids = tree_pids(root)
        for pid in pids:
            with contextlib.suppress(OSError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait_s
        while pids and time.monotonic() < deadline:
            time.sleep(poll_s)
            pids = tree_pids(root)
        if not pids:
            break
    return first


def cgroup_oom_kills() -> int | None:
    """The kernel OOM-killer count of this process's memory cgroup, or ``None`` if unreadable.

    Children inherit the cgroup, so a rise across a run means the kernel killed something of ours.
    """
    try:
        lines = (_PROC / "self" / "cgroup").read_text().splitlines()
    except OSError:
        return None
    candidates: list[Path] = []
    for line in lines:
        _, controllers, rel = line.split(":", 2)
        rel = rel.lstrip("/")
        if controllers == "":  # cgroup v2
            candidates += [Path("/sys/fs/cgroup", rel, "memory.events"), Path("/sys/fs/cgroup/memory.events")]
        elif "memory" in controllers.split(","):  # cgroup v1
            root = Path("/sys/fs/cgroup/memory")
            candidates += [root / rel / "memory.oom_control", root / "memory.oom_control"]
    for path in candidates:
        with contextlib.suppress(OSError, ValueError):
            for entry in path.read_text().splitlines():
                key, _, value = entry.partition(" ")
                if key == "oom_kill":
                    return int(value)
    return None
