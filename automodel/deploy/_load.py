"""``automodel.load(RUN)``: a trained run as an object with ``predict(images)``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from automodel.deploy._export import ExportedModel, export_model
from automodel.deploy._images import ImageInput
from automodel.deploy._predict import Predictions, predict_images
from automodel.deploy._run import TrainedRun
from automodel.executors import Executor

__all__ = ["LoadedModel", "load"]


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


def load(run: str | Path, *, executor: Executor | str | None = None, device: str | None = None) -> LoadedModel:
    """The best model of ``run`` as a :class:`LoadedModel`; its code runs in executor jobs, never here."""
    return LoadedModel(run, executor=executor, device=device)
