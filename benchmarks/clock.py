"""One clock for every contender, kept by the benchmark: wall and CPU seconds from a common start.

The clock starts after the shared data preparation and stops when the contender's final
model is chosen (before the test images are predicted, which no contender's budget pays
for). CPU seconds are those of this process and every child it waited for; for a contender
that runs as a child process (``automodel run``), the child's own process tree is read from
``/proc`` at the moment it reports its final model.
"""

from __future__ import annotations

import os
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Clock", "pids_running", "tree_cpu_s"]

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _own_cpu_s() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, CPU seconds of the process and its waited-for children) from ``/proc/PID/stat``."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()
    ppid = int(fields[1])
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    return ppid, (utime + stime + cutime + cstime) / _TICK


def tree_cpu_s(root_pid: int) -> float:
    """CPU seconds of ``root_pid`` and all its live descendants (with the children each has reaped)."""
    stats: dict[int, tuple[int, float]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            st = _stat(int(entry.name))
            if st is not None:
                stats[int(entry.name)] = st
    tree, frontier = {root_pid}, [root_pid]
    while frontier:
        parent = frontier.pop()
        for pid, (ppid, _) in stats.items():
            if ppid == parent and pid not in tree:
                tree.add(pid)
                frontier.append(pid)
    return sum(stats[p][1] for p in tree if p in stats)


def pids_running(needle: str) -> list[int]:
    """Pids of processes whose command line contains ``needle`` (a job file path, unique per run)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if needle in cmd:
            found.append(int(entry.name))
    return found


@dataclass
class Clock:
    """Started once per job; ``stop()`` when the final model is chosen."""

    budget_s: float
    t0: float = field(default_factory=time.monotonic)
    cpu0: float = field(default_factory=_own_cpu_s)
    wall_s: float | None = None
    cpu_s: float | None = None

    @property
    def deadline(self) -> float:
        """Monotonic time at which the budget is spent."""
        return self.t0 + self.budget_s

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def stop(self, *, extra_cpu_s: float = 0.0) -> None:
        """Record wall and CPU seconds used so far (once; later calls keep the first reading)."""
        if self.wall_s is None:
            self.wall_s = round(self.elapsed(), 2)
            self.cpu_s = round(_own_cpu_s() - self.cpu0 + extra_cpu_s, 2)

    def summary(self) -> dict[str, float | None]:
        over = None if self.wall_s is None else round(max(0.0, self.wall_s - self.budget_s), 2)
        return {"budget_s": self.budget_s, "wall_s": self.wall_s, "cpu_s": self.cpu_s, "over_budget_s": over,
                "idle_tail_s": None if self.wall_s is None else round(max(0.0, self.budget_s - self.wall_s), 2)}
