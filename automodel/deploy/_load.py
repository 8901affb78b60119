"""``automodel.load(PATH)``: a trained run, or an exported model, as an object with ``predict(images)``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from automodel.deploy._export import ExportedModel, export_model, read_spec
from automodel.deploy._images import ImageInput, decode_images, expand_inputs
from automodel.deploy._predict import Predictions, predict_images
from automodel.deploy._run import DeployError, TrainedRun
from automodel.executors import Executor

__all__ = ["ExportedClassifier", "LoadedModel", "load"]


class LoadedModel:
    """The best model of a run directory, ready to predict.

    Nothing of the run's generated code is imported here: every :meth:`predict` call decodes the
    images in this process (the data layer's trusted code) and runs the model in an executor job
    (``python -m automodel.harness`` in predict mode, in the bubblewrap sandbox where one starts),
    exactly as the run scored its test split. A call therefore costs a process start (about 2-5 s);
    batch your images. For in-process inference, export the model (:meth:`export`) and load the
    ONNX or TorchScript file instead.

    Args:
        run: a run directory (finished or not) with a ``best/`` model.
        executor: where the model's code runs (``auto``, ``sandbox``, ``docker``, ``local``, ``ray``).
        device: overrides the device the run trained on.

    Raises:
        DeployError: ``run`` is not a run directory with a best model.
    """

    def __init__(self, run: str | Path, *, executor: Executor | str | None = None, device: str | None = None):
        self.run = TrainedRun.open(run)
        self.executor = executor
        self.device = device

    def __repr__(self) -> str:
        return f"LoadedModel({str(self.run.root)!r}, classes={len(self.classes)})"

    @property
    def classes(self) -> list[str]:
        """Class names, in the order of the probability columns."""
        return self.run.classes

    @property
    def input_size(self) -> int:
        """Images are squared to this side before the model's own preprocessing (the run's stored size)."""
        return int(self.run.meta.stored_size)

    def predict(self, images: Sequence[ImageInput] | ImageInput, *, timeout_s: float = 900.0) -> Predictions:
        """Class probabilities for ``images`` (files, folders, uint8 arrays or PIL images), in an executor job.

        Unreadable inputs are listed in ``Predictions.skipped`` with their reason.

        Raises:
            DeployError: no input could be read, or the job failed.
        """
        many = images if isinstance(images, Sequence) and not isinstance(images, (str, bytes)) else [images]
        return predict_images(self.run, list(many), executor=self.executor, device=self.device, timeout_s=timeout_s)

    def export(self, fmt: str = "onnx", *, out: str | Path | None = None) -> ExportedModel:
        """Export to ONNX or TorchScript with a model card (an executor job too); see :func:`export_model`."""
        return export_model(self.run, fmt, out=out, executor=self.executor, device=self.device)


class ExportedClassifier:
    """An exported model (a folder written by ``automodel export``), run in this process.

    The file is a traced graph (ONNX, run by ONNX Runtime, or TorchScript), not the run's Python
    code; images are decoded with the data layer's rules (:func:`to_model_input`) first.

    Raises:
        DeployError: the folder has no ``model.json`` or its model file is missing.
    """

    def __init__(self, folder: str | Path):
        self.folder = Path(folder).expanduser().resolve()
        try:
            self.spec = read_spec(self.folder)
        except (OSError, ValueError) as exc:
            raise DeployError(f"{self.folder} is not an export folder (model.json unreadable: {exc})") from exc
        self.path = self.folder / str(self.spec["file"])
        if not self.path.is_file():
            raise DeployError(f"{self.path} is missing: export the run again (`automodel export RUN --out {self.folder}`)")
        self._session: Any = None

    def __repr__(self) -> str:
        return f"ExportedClassifier({str(self.path)!r}, classes={len(self.classes)})"

    @property
    def classes(self) -> list[str]:
        return [str(c) for c in self.spec["classes"]]

    def _run(self, x: np.ndarray) -> np.ndarray:
        if self.spec["format"] == "onnx":
            if self._session is None:
                import onnxruntime

                self._session = onnxruntime.InferenceSession(str(self.path), providers=["CPUExecutionProvider"])
            return np.asarray(self._session.run(None, {"images": x})[0])
        import torch

        if self._session is None:
            self._session = torch.jit.load(str(self.path), map_location="cpu").eval()
        with torch.no_grad():
            return np.asarray(self._session(torch.from_numpy(x)).numpy())

    def predict(self, images: Sequence[ImageInput] | ImageInput, *, batch_size: int = 256) -> Predictions:
        """Class probabilities for ``images`` (files, uint8 arrays or PIL images; folders are expanded)."""
        many = images if isinstance(images, Sequence) and not isinstance(images, (str, bytes)) else [images]
        items, names, skipped = expand_inputs(list(many))
        inp = self.spec["input"]
        kept: list[str] = []
        parts: list[np.ndarray] = []
        for start in range(0, len(items), batch_size):
            batch = decode_images(items[start:start + batch_size], int(inp["height"]), int(inp["channels"]),
                                  names=names[start:start + batch_size])
            skipped += batch.skipped
            if batch.names:
                parts.append(self._run(np.ascontiguousarray(batch.x.transpose(0, 3, 1, 2))).astype(np.float32))
                kept += batch.names
        if not kept:
            shown = "; ".join(str(s) for s in skipped[:10])
            raise DeployError(f"none of the {len(many)} input(s) could be read: {shown}")
        return Predictions(kept, self.classes, np.concatenate(parts), skipped)


def load(run: str | Path, *, executor: Executor | str | None = None,
         device: str | None = None) -> LoadedModel | ExportedClassifier:
    """A run directory as a :class:`LoadedModel` (its code runs in executor jobs, never here), or an
    export folder (with ``model.json``) as an :class:`ExportedClassifier` (the traced file, run here)."""
    if (Path(run).expanduser() / "model.json").is_file():
        return ExportedClassifier(run)
    return LoadedModel(run, executor=executor, device=device)
