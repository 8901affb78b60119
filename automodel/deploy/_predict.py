"""Predict new images with the best model of a run, in an executor job.

The images are decoded here (trusted code, the data layer's rules) into a prepared-data folder of
one ``test`` split; the run's best components and checkpoint then predict it in a harness job in
predict mode, under the same executor as training (the sandbox where one starts). When the best
model is a head on cached pretrained features, a features job extracts them first, as the run did.
Only class log-probabilities come back; the generated code never runs in this process.
"""

from __future__ import annotations

import csv
import hashlib
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import structlog

from automodel._io import atomic_open, atomic_write_json
from automodel.deploy._images import ImageBatch, ImageInput, Skipped, decode_images, expand_inputs
from automodel.deploy._run import DeployError, TrainedRun
from automodel.executors import ExecutionResult, Executor

__all__ = ["Predictions", "predict_images", "run_prediction_job"]

log = structlog.get_logger(__name__)

EventCallback = Callable[[dict[str, Any]], None]

CHUNK = 4096
"""Images decoded and predicted per job: memory stays bounded for any number of images."""


@dataclass
class Predictions:
    """Class probabilities for the images that could be read, in input order; what was skipped, and why."""

    names: list[str]
    classes: list[str]
    probabilities: np.ndarray
    """``(N, K)`` float32, rows summing to 1, columns in :attr:`classes` order."""
    skipped: list[Skipped] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.names)

    @property
    def indices(self) -> list[int]:
        return [int(i) for i in self.probabilities.argmax(1)] if len(self.names) else []

    @property
    def labels(self) -> list[str]:
        """The predicted class name of each image."""
        return [self.classes[i] for i in self.indices]

    @property
    def confidences(self) -> list[float]:
        return [float(p) for p in self.probabilities.max(1)] if len(self.names) else []

    def top_k(self, k: int) -> list[list[tuple[str, float]]]:
        """The ``k`` most probable classes of each image with their probabilities, best first."""
        k = max(1, min(int(k), len(self.classes)))
        order = np.argsort(-self.probabilities, axis=1, kind="stable")[:, :k]
        return [[(self.classes[j], float(row[j])) for j in idx] for row, idx in zip(self.probabilities, order, strict=True)]

    def table(self, top_k: int | None = None) -> tuple[list[str], list[list[str]]]:
        """Header and rows: ``file, label, confidence`` then one probability column per class
        (``prob_<class>``), or with ``top_k`` the ``k`` best as ``label_i, prob_i`` pairs."""
        header = ["file", "label", "confidence"]
        if top_k:
            k = max(1, min(int(top_k), len(self.classes)))
            for i in range(1, k + 1):
                header += [f"label_{i}", f"prob_{i}"]
            tops = self.top_k(k)
        else:
            header += [f"prob_{c}" for c in self.classes]
        rows = []
        for n, name in enumerate(self.names):
            row = [name, self.labels[n], f"{self.confidences[n]:.6f}"]
            if top_k:
                for label, p in tops[n]:
                    row += [label, f"{p:.6f}"]
            else:
                row += [f"{p:.6f}" for p in self.probabilities[n]]
            rows.append(row)
        return header, rows

    def to_csv(self, path: str | Path, *, top_k: int | None = None) -> Path:
        """Write :meth:`table` as CSV (atomically); returns the path."""
        header, rows = self.table(top_k)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_open(path, "w") as fh:
            writer = csv.writer(fh)
            writer.writerow(header)
            writer.writerows(rows)
        return path


def _softmax(log_probs: np.ndarray) -> np.ndarray:
    shifted = np.exp(log_probs - log_probs.max(axis=1, keepdims=True))
    return (shifted / shifted.sum(axis=1, keepdims=True)).astype(np.float32)


def _prepare_images(trained: TrainedRun, batch: ImageBatch, data_dir: Path) -> None:
    """A prepared-data folder with one ``test`` split: the run's metadata, these images, no labels."""
    data_dir.mkdir(parents=True, exist_ok=True)
    with atomic_open(data_dir / "test_x.npy", "wb") as fh:
        np.save(fh, batch.x, allow_pickle=False)
    digest = hashlib.blake2b(batch.x.tobytes(), digest_size=8).hexdigest()
    meta = trained.meta.model_copy(update={
        "counts": {**trained.meta.counts, "test": len(batch.names)},
        "test_labeled": False,
        "submission": None,
        "fingerprint": f"predict-{digest}",
    })
    atomic_write_json(data_dir / "meta.json", meta.model_dump(mode="json"))
    atomic_write_json(data_dir / "test_ids.json", list(batch.names))


def _job_failure(what: str, result: ExecutionResult) -> DeployError:
    err = result.error
    detail = f"{err.component}.py {err.error_type}: {err.message}" if err else "; ".join(result.log_tail[-5:])
    return DeployError(f"the {what} job ended with status {result.status}: {detail[:1500]}")


def run_prediction_job(
    trained: TrainedRun,
    batch: ImageBatch,
    workdir: Path,
    *,
    best: Path | None = None,
    executor: Executor | str | None = None,
    device: str | None = None,
    timeout_s: float = 900.0,
    on_event: EventCallback | None = None,
) -> np.ndarray:
    """Class log-probabilities ``(N, K)`` of the decoded ``batch``, computed in executor jobs under ``workdir``.

    ``best``: a copy of the run's ``best/`` to use (default: one is taken into ``workdir/best``).

    Raises:
        DeployError: a features or predict job failed (its status and error in the message).
    """
    workdir = Path(workdir).resolve()
    best = Path(best) if best is not None else trained.snapshot_best(workdir / "best")
    _prepare_images(trained, batch, workdir / "data")
    runner = trained.runner(workdir / "data", executor=executor, device=device, features_dir=workdir / "features")
    key, extraction = runner.ensure_features(best, workdir, on_event=on_event)
    if extraction is not None and not extraction.ok:
        raise _job_failure(f"feature extraction ({key})", extraction)
    result = runner.predict(best, best / "checkpoint.pt", workdir / "predict", split="test",
                            timeout_s=timeout_s, on_event=on_event)
    if not result.ok:
        raise _job_failure("predict", result)
    return np.load(workdir / "predict" / "test_log_probs.npy", allow_pickle=False)


def predict_images(
    run: str | Path | TrainedRun,
    images: Sequence[ImageInput] | str | Path,
    *,
    executor: Executor | str | None = None,
    device: str | None = None,
    workdir: str | Path | None = None,
    timeout_s: float = 900.0,
    on_event: EventCallback | None = None,
) -> Predictions:
    """Predict ``images`` with the best model of ``run`` (finished or not), in executor jobs.

    Args:
        run: a run directory (the ``--out`` of ``automodel run``) with a ``best/`` model.
        images: a folder, an image file, or a sequence of files, folders, uint8 arrays and PIL images.
        executor: where the model's code runs (default ``auto``: the sandbox where it starts, else local).
        device: overrides the run's device (the data component may choose its input size by device).
        workdir: keep the job folders (logs) here; by default a temporary folder is used and removed.

    Raises:
        DeployError: not a run with a best model, no readable image, or a failed job.
    """
    trained = run if isinstance(run, TrainedRun) else TrainedRun.open(run)
    given = [images] if isinstance(images, (str, os.PathLike)) else list(images)
    items, names, skipped = expand_inputs(given)
    if not items:
        shown = "; ".join(str(s) for s in skipped[:10])
        raise DeployError(f"no images to predict{': ' + shown if shown else ''}. Pass image files, folders of "
                          "images, uint8 arrays or PIL images")
    for skip in skipped:
        log.warning("image_skipped", image=skip.name, reason=skip.reason, detail=skip.detail[:200])
    trained.check_device(device)
    with tempfile.TemporaryDirectory(prefix="automodel-predict-") as tmp:
        root = Path(workdir) if workdir is not None else Path(tmp)
        best = trained.snapshot_best(root / "best")  # one model for every chunk, even if the run promotes meanwhile
        kept: list[str] = []
        parts: list[np.ndarray] = []
        for start in range(0, len(items), CHUNK):  # bounded memory: one job per chunk of images
            batch = decode_images(items[start:start + CHUNK], trained.meta.stored_size, trained.meta.in_chans,
                                  names=names[start:start + CHUNK])
            skipped += batch.skipped
            if not batch.names:
                continue
            parts.append(run_prediction_job(trained, batch, root / f"chunk-{start // CHUNK:04d}", best=best,
                                            executor=executor, device=device, timeout_s=timeout_s,
                                            on_event=on_event))
            kept += batch.names
    if not kept:
        shown = "; ".join(str(s) for s in skipped[:10])
        raise DeployError(f"none of the {len(items)} image(s) could be read: {shown}")
    log.info("predicted", run=str(trained.root), images=len(kept), skipped=len(skipped))
    log_probs = np.concatenate(parts).astype(np.float64)
    return Predictions(kept, trained.classes, _softmax(log_probs), skipped)
