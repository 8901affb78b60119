"""A run's working set: its directory, prepared data, environment and candidate runner."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from automodel.data import PreparedData, prepare_dataset, resolve_source
from automodel.harness import CandidateRunner
from automodel.interfaces import PretrainedInfo
from automodel.store import RunStore
from automodel.weights import probe_pretrained

__all__ = ["Environment", "Workspace", "detect_environment", "make_runner", "open_workspace"]

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Environment:
    """What the roles must know about the machine the candidates run on."""

    device: str
    cuda: bool
    gpu_name: str = ""
    gpu_memory_gb: float = 0.0
    cpu_count: int = 1
    memory_gb: float = 0.0
    pretrained: PretrainedInfo = field(default_factory=PretrainedInfo)

    def as_context(self) -> dict[str, Any]:
        """The environment as the roles' prompts show it."""
        return {
            "device": self.device,
            "cuda": self.cuda,
            "gpu": self.gpu_name,
            "gpu_memory_gb": round(self.gpu_memory_gb, 1),
            "cpu_count": self.cpu_count,
            "memory_gb": round(self.memory_gb, 1),
            "pretrained": {"hub": self.pretrained.hub_available, "local": sorted(self.pretrained.local)},
        }


def detect_environment(device: str = "auto", *, weights_dir: str | Path | None = None) -> Environment:
    """Device, memory and pretrained weights, found in about two seconds at most."""
    import torch

    cuda = torch.cuda.is_available() and device in ("auto",) or device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} was asked for but torch sees no CUDA GPU; use --device cpu")
    gpu_name, gpu_mem = "", 0.0
    if cuda:
        props = torch.cuda.get_device_properties(0)
        gpu_name, gpu_mem = props.name, props.total_memory / 2**30
    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        mem = 0.0
    return Environment(
        device="cuda" if cuda else "cpu",
        cuda=cuda,
        gpu_name=gpu_name,
        gpu_memory_gb=gpu_mem,
        cpu_count=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1),
        memory_gb=mem,
        pretrained=probe_pretrained(weights_dir),
    )


@dataclass
class Workspace:
    """Everything a run (or a single training) works with."""

    store: RunStore
    data: PreparedData
    env: Environment
    held_out: list[Path]
    """Paths component code may not open: test labels, the raw dataset."""
    description: str = ""

    def runner(self, **kw: Any) -> CandidateRunner:
        return make_runner(self.store, pretrained=self.env.pretrained, held_out=self.held_out,
                           device=self.env.device, description=self.description, **kw)


def make_runner(
    store: RunStore,
    *,
    pretrained: PretrainedInfo,
    held_out: list[Path],
    device: str,
    description: str = "",
    **kw: Any,
) -> CandidateRunner:
    """The one way a run (or a single training) gets its candidate runner."""
    return CandidateRunner(
        store.data_dir,
        pretrained=pretrained,
        forbidden_paths=held_out,
        device=device,
        description=description,
        features_dir=store.root / "features",
        **kw,
    )


def open_workspace(
    data: str | Path,
    out: str | Path,
    *,
    description: str = "",
    device: str = "auto",
    seed: int = 0,
    val_fraction: float = 0.2,
    id_col: str | None = None,
    label_col: str | None = None,
    weights_dir: str | Path | None = None,
    keep_prepared: bool = False,
    **source_options: Any,
) -> Workspace:
    """Resolve and prepare ``data`` into ``out/data`` (decoded once, reused on resume).

    ``keep_prepared`` (a resumed run): keep ``out/data`` even if the dataset's files changed since.
    """
    store = RunStore(out)
    source = resolve_source(str(data), id_col=id_col, label_col=label_col, **source_options)
    prepared = prepare_dataset(source, store.data_dir, private_dir=store.private_dir, seed=seed,
                               val_fraction=val_fraction, keep_prepared=keep_prepared)
    held_out = [store.private_dir]
    if source.root is not None:
        root = Path(source.root).resolve()
        held_out.append(root)
        answers = root.parent / f"{root.name}-answers"
        if answers.is_dir():
            held_out.append(answers)
    env = detect_environment(device, weights_dir=weights_dir)
    log.info("workspace_ready", out=str(store.root), classes=prepared.meta.num_classes, device=env.device)
    return Workspace(store, prepared, env, held_out, description or source.description)
