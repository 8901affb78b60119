"""The harness side of the protocol: re-exports of :mod:`automodel.executors`' one definition,
plus what only the harness process needs (its lifeline to the parent, its view of the data)."""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from automodel.data import DEFAULT_MEMORY_BUDGET, PreparedMeta
from automodel.executors import (
    DATA_DIR,
    ERROR_EXIT_CODE,
    EVENT_PREFIX,
    PARENT_ENV,
    HarnessJob,
    emit,
    write_json_atomic,
)

__all__ = [
    "ERROR_EXIT_CODE",
    "EVENT_PREFIX",
    "HarnessJob",
    "Infeasible",
    "JobData",
    "arm_lifeline",
    "emit",
    "parent_gone",
    "write_json_atomic",
]

_PR_SET_PDEATHSIG = 1
_start_ppid: int | None = None


class Infeasible(Exception):
    """The plan cannot train one epoch within its budget: a typed result, never a chance score."""


def arm_lifeline() -> None:
    """Die with the parent: ``PR_SET_PDEATHSIG`` (SIGKILL) on Linux, and remember the parent's pid.

    Called first thing, so a harness stuck anywhere (importing, in ``build_data``) cannot outlive
    the process that started it. Elsewhere :func:`parent_gone` is the only check.
    """
    global _start_ppid
    expected = os.environ.get(PARENT_ENV, "")
    # The pid from the environment catches a parent that died before this line ran.
    _start_ppid = int(expected) if expected.isdigit() else os.getppid()
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass  # no prctl: the per-step parent_gone() check remains
    if os.getppid() != _start_ppid:  # the parent died before the signal was armed
        os._exit(ERROR_EXIT_CODE)


def parent_gone() -> bool:
    """Whether the process that started this harness has ended."""
    return _start_ppid is not None and os.getppid() != _start_ppid


@dataclass
class JobData:
    """The arrays of a job's ``data/`` folder: labels only where the job has them (train)."""

    root: Path
    meta: PreparedMeta
    mmap: bool
    _cache: dict[str, tuple[np.ndarray, np.ndarray | None]] = field(default_factory=dict, repr=False)

    @classmethod
    def load(cls, job_dir: Path) -> JobData:
        root = job_dir / DATA_DIR
        meta = PreparedMeta.model_validate_json((root / "meta.json").read_text(encoding="utf-8"))
        total = sum(p.stat().st_size for p in root.glob("*.npy"))
        return cls(root=root, meta=meta, mmap=total > DEFAULT_MEMORY_BUDGET)

    def arrays(self, split: str) -> tuple[np.ndarray, np.ndarray | None]:
        """``(x (N,S,S,C) uint8, y (N,) int64 or None)``; ``y`` only where the job holds labels."""
        if split not in self._cache:
            x_path, y_path = self.root / f"{split}_x.npy", self.root / f"{split}_y.npy"
            if not x_path.is_file():
                raise FileNotFoundError(f"this job has no {split} images ({x_path.name} is not in data/)")
            if self.mmap:
                x = np.load(x_path, mmap_mode="r", allow_pickle=False)
                y = np.load(y_path, mmap_mode="r", allow_pickle=False) if y_path.is_file() else None
            else:
                x = np.load(x_path, allow_pickle=False)
                y = np.load(y_path, allow_pickle=False) if y_path.is_file() else None
            self._cache[split] = (x, y)
        return self._cache[split]
