"""A run directory seen from the deployment side: read only, and checked before any job starts."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from automodel.data import PreparedMeta
from automodel.executors import Executor
from automodel.harness import CandidateRunner
from automodel.interfaces import COMPONENT_FILES, PretrainedInfo

__all__ = ["DeployError", "TrainedRun"]


class DeployError(Exception):
    """A run, an image set or a job that predict/export cannot use; the message says what to do."""


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DeployError(f"{path} is unreadable ({exc}); the run directory is damaged") from exc
    return value if isinstance(value, dict) else None


@dataclass(frozen=True)
class TrainedRun:
    """The best model of a run directory: its components, checkpoint and the data's metadata.

    Opening it never writes into the run directory (a running team may own it).
    """

    root: Path
    record: dict[str, Any]
    meta: PreparedMeta

    @classmethod
    def open(cls, run_dir: str | Path) -> TrainedRun:
        """Check that ``run_dir`` holds a best model.

        Raises:
            DeployError: not a directory, not a run directory, no prepared data, or no best model yet.
        """
        root = Path(run_dir).expanduser().resolve()
        if not root.is_dir():
            raise DeployError(f"{root} is not a directory: pass a run directory (the --out of `automodel run`)")
        record = _read_json(root / "run.json")
        if record is None:
            raise DeployError(f"{root} is not an AutoModel run directory (it has no run.json): pass the --out "
                              "folder of `automodel run`")
        meta_path = root / "data" / "meta.json"
        try:
            meta = PreparedMeta.model_validate_json(meta_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise DeployError(f"{meta_path} is missing or invalid ({type(exc).__name__}): the run stopped before its "
                              "data were prepared, so it has no model") from exc
        best = root / "best"
        missing = [n for n in ("checkpoint.pt", *COMPONENT_FILES.values()) if not (best / n).is_file()]
        if missing:
            raise DeployError(
                f"{root} has no best model yet ({', '.join(str(best / n) for n in missing)} missing): no attempt has "
                "finished with a score so far. Wait for the first attempt, or continue the run with "
                f"`automodel run DATA --out {root} --resume` (which also repairs a promotion cut by a kill)"
            )
        return cls(root, record, meta)

    @property
    def best_dir(self) -> Path:
        return self.root / "best"

    @property
    def checkpoint(self) -> Path:
        return self.best_dir / "checkpoint.pt"

    @property
    def classes(self) -> list[str]:
        return list(self.meta.classes)

    @property
    def device(self) -> str:
        """The device the run trained on: data components choose their input size by it."""
        return str(self.record.get("environment", {}).get("device", "cpu"))

    def snapshot_best(self, dst: Path, *, attempts: int = 3) -> Path:
        """Copy ``best/`` (components, checkpoint, metrics) to ``dst`` and return it.

        A running team may promote a new best at any moment (``best/`` is swapped whole); the copy
        is retried until ``best/ITERATION`` reads the same before and after it.

        Raises:
            DeployError: ``best/`` kept changing, or vanished.
        """
        names = ["checkpoint.pt", "metrics.json", *COMPONENT_FILES.values()]
        for _ in range(attempts):
            before = self._best_iteration()
            dst.mkdir(parents=True, exist_ok=True)
            try:
                for name in names:
                    if (self.best_dir / name).is_file():
                        shutil.copyfile(self.best_dir / name, dst / name)
            except FileNotFoundError:
                continue
            if before == self._best_iteration() and (dst / "checkpoint.pt").is_file():
                return dst
        raise DeployError(f"{self.best_dir} changed while it was being read (the run is promoting new models); "
                          "try again")

    def _best_iteration(self) -> str:
        try:
            return (self.best_dir / "ITERATION").read_text(encoding="utf-8").strip()
        except OSError:
            return ""

    def check_device(self, device: str | None) -> str:
        """The device jobs will use: ``device`` or the run's own.

        Raises:
            DeployError: a CUDA device on a machine where torch sees none.
        """
        chosen = device or self.device
        if chosen.startswith("cuda"):
            import torch

            if not torch.cuda.is_available():
                raise DeployError(
                    f"this run trained on {self.device} and torch sees no CUDA GPU here; pass --device cpu "
                    "(device= in Python). Data components may choose their input size by device: compare "
                    "the predictions with the run's before relying on them")
        return chosen

    def final(self) -> dict[str, Any]:
        """``final.json`` (empty while the run is unfinished)."""
        return _read_json(self.root / "final.json") or {}

    def best_metrics(self) -> dict[str, Any]:
        """``best/metrics.json``: the trusted validation scores of the best model."""
        return _read_json(self.best_dir / "metrics.json") or {}

    def history(self) -> list[dict[str, Any]]:
        """``history.jsonl``, one dict per attempt (torn lines skipped)."""
        path = self.root / "history.jsonl"
        if not path.is_file():
            return []
        out = []
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                value = json.loads(line)
            except ValueError:
                continue
            if isinstance(value, dict):
                out.append(value)
        return out

    def pretrained(self) -> PretrainedInfo:
        env = self.record.get("environment", {})
        return PretrainedInfo(hub_available=bool(env.get("pretrained", {}).get("hub")),
                              local=dict(self.record.get("local_weights", {})))

    def runner(self, data_dir: Path, *, executor: Executor | str | None = None, device: str | None = None,
               features_dir: Path | None = None) -> CandidateRunner:
        """A runner for jobs of this run's best model on the prepared images in ``data_dir``."""
        return CandidateRunner(
            data_dir,
            executor=executor,
            pretrained=self.pretrained(),
            forbidden_paths=[self.root / "private"],
            device=self.check_device(device),
            description=str(self.record.get("description", "")),
            features_dir=features_dir,
        )
