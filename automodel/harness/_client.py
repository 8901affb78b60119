"""The trusted side of the harness: write a job, start it in an executor, read the result."""

from __future__ import annotations

import ast
import json
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from automodel.executors import ExecutionRequest, ExecutionResult, Executor, create_executor
from automodel.harness._job import HarnessJob
from automodel.interfaces import COMPONENT_FILES, PretrainedInfo


def copy_components(src: Path, dst: Path) -> None:
    """Copy the three component files from ``src`` into ``dst`` (created)."""
    dst.mkdir(parents=True, exist_ok=True)
    for name in COMPONENT_FILES.values():
        if not (src / name).is_file():
            raise FileNotFoundError(
                f"{src / name} is missing: a candidate needs data.py, model.py and training.py "
                f"(start from automodel/interfaces/reference/)"
            )
        shutil.copyfile(src / name, dst / name)


class CandidateRunner:
    """Runs candidates of one prepared dataset through an executor.

    Args:
        data_dir: a folder written by :func:`automodel.data.prepare_dataset`.
        executor: where candidates run (default: a local subprocess).
        pretrained: which pretrained weights component code may load.
        forbidden_paths: what component code may not open (test labels, raw data).
        device: ``"auto"``, ``"cpu"`` or ``"cuda[:N]"``.
        memory_limit_mb: kill a candidate whose processes use more than this.
        grace_s: seconds beyond the training budget before the executor kills it
            (model building, smoke test and the last evaluation take time too).
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        executor: Executor | None = None,
        pretrained: PretrainedInfo | None = None,
        forbidden_paths: list[Path] | None = None,
        device: str = "auto",
        memory_limit_mb: int | None = None,
        grace_s: float = 120.0,
        description: str = "",
        max_epochs: int | None = None,
        threads: int = 0,
        features_dir: Path | None = None,
    ):
        self.data_dir = Path(data_dir)
        self.executor = executor or create_executor("local")
        self.pretrained = pretrained or PretrainedInfo()
        self.forbidden_paths = list(forbidden_paths or [])
        self.device = device
        self.memory_limit_mb = memory_limit_mb
        self.grace_s = grace_s
        self.description = description
        self.max_epochs = max_epochs
        self.threads = threads
        self.features_dir = Path(features_dir) if features_dir is not None else None

    def _job(self, components_dir: Path, workdir: Path, time_budget_s: float, **kw: Any) -> HarnessJob:
        return HarnessJob(
            components_dir=components_dir.resolve(),
            data_dir=self.data_dir.resolve(),
            workdir=workdir.resolve(),
            time_budget_s=time_budget_s,
            device=self.device,
            hub_available=self.pretrained.hub_available,
            local_weights=dict(self.pretrained.local),
            forbidden_paths=[p.resolve() for p in self.forbidden_paths],
            description=self.description,
            max_epochs=self.max_epochs,
            threads=self.threads,
            parent_pid=os.getpid(),
            features_dir=self.features_dir.resolve() if self.features_dir is not None else None,
            **kw,
        )

    def _execute(self, job: HarnessJob, timeout_s: float, on_event: Callable[[dict[str, Any]], None] | None) -> ExecutionResult:
        job.workdir.mkdir(parents=True, exist_ok=True)
        job_path = job.workdir / "job.json"
        job.write(job_path)
        request = ExecutionRequest(
            argv=[sys.executable, "-m", "automodel.harness", "--job", str(job_path)],
            workdir=job.workdir,
            timeout_s=timeout_s,
            memory_limit_mb=self.memory_limit_mb,
            env={"HF_HUB_OFFLINE": "1"} if not self.pretrained.hub_available else {},
        )
        return self.executor.run(request, on_event=on_event)

    def train(
        self,
        components_dir: Path,
        workdir: Path,
        *,
        time_budget_s: float,
        seed: int = 0,
        init_checkpoint: Path | None = None,
        on_event: Callable[[dict[str, Any]], None] | None = None,
    ) -> ExecutionResult:
        """Train one candidate; ``workdir`` receives the log, ``metrics.json`` and the checkpoint.

        ``init_checkpoint``: warm start from these weights (loaded where names and shapes match).
        """
        job = self._job(Path(components_dir), Path(workdir), time_budget_s, seed=seed,
                        init_checkpoint=Path(init_checkpoint).resolve() if init_checkpoint else None)
        return self._execute(job, time_budget_s + self.grace_s, on_event)

    def predict(
        self,
        components_dir: Path,
        checkpoint: Path,
        workdir: Path,
        *,
        timeout_s: float = 600.0,
        on_event: Callable[[dict[str, Any]], None] | None = None,
    ) -> ExecutionResult:
        """Predict the test split with a trained candidate; ``workdir`` receives ``predictions.json``."""
        job = self._job(Path(components_dir), Path(workdir), 1.0, mode="predict", checkpoint=Path(checkpoint).resolve())
        return self._execute(job, timeout_s, on_event)

    def extract_features(
        self,
        key: str,
        workdir: Path,
        *,
        timeout_s: float = 1800.0,
        on_event: Callable[[dict[str, Any]], None] | None = None,
    ) -> ExecutionResult:
        """Extract the pretrained feature set ``key`` into the run's feature cache (trusted code only)."""
        if self.features_dir is None:
            raise ValueError("this runner has no features_dir; pass features_dir= to CandidateRunner")
        self.features_dir.mkdir(parents=True, exist_ok=True)
        job = self._job(Path(workdir), Path(workdir), 1.0, mode="features", features_key=key)
        return self._execute(job, timeout_s, on_event)

    def ensure_features(
        self,
        components_dir: Path,
        workdir: Path,
        *,
        on_event: Callable[[dict[str, Any]], None] | None = None,
    ) -> tuple[str | None, ExecutionResult | None]:
        """Extract the feature set that ``components_dir/data.py`` names (``FEATURES = "..."``), once.

        Returns the key (None when the data component uses images) and the extraction
        result (None when the set was already cached).
        """
        from automodel.features import features_ready, parse_feature_key

        key = declared_features(Path(components_dir) / "data.py")
        if not key or self.features_dir is None:
            return key, None
        parse_feature_key(key)
        fingerprint = json.loads((self.data_dir / "meta.json").read_text(encoding="utf-8")).get("fingerprint", "")
        if features_ready(self.features_dir, key, fingerprint):
            return key, None
        if on_event is not None:
            on_event({"event": "features", "key": key, "message": f"extracting pretrained features {key} (once per run)"})
        return key, self.extract_features(key, Path(workdir) / f"features-{key.replace('@', '-')}", on_event=on_event)


def declared_features(data_py: Path) -> str | None:
    """The module-level ``FEATURES = "..."`` string of a data component, if any (read, never run)."""
    try:
        tree = ast.parse(Path(data_py).read_text(encoding="utf-8"))
    except (OSError, SyntaxError, ValueError):
        return None
    for node in tree.body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
                and node.targets[0].id == "FEATURES" and isinstance(node.value, ast.Constant)
                and isinstance(node.value.value, str)):
            return node.value.value.strip() or None
    return None
