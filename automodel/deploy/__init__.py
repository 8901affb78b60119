"""Use a trained run: predict new images, export the best model, load it from Python.

``predict_images(RUN, IMAGES)`` (``automodel predict``) and ``export_model(RUN, "onnx")``
(``automodel export``) run the run's generated code as executor jobs, never in this process:
predict decodes the images here with the data layer's rules and runs the best model in a
harness job in predict mode; export traces preprocessing, model and softmax into an ONNX or
TorchScript file in a job in export mode and writes ``model.json`` and ``model_card.md`` beside
it. :func:`load` wraps a run as an object with ``predict(images)`` (``automodel.load``), or an
export folder as an in-process ONNX Runtime / TorchScript classifier with the same method.
:func:`to_model_input` makes the uint8 batch an exported model takes from image files.
"""

from automodel.deploy._export import ExportedModel, export_model, read_spec
from automodel.deploy._images import (
    ImageBatch,
    ImageInput,
    Skipped,
    decode_images,
    find_images,
    to_model_input,
)
from automodel.deploy._load import ExportedClassifier, LoadedModel, load
from automodel.deploy._predict import Predictions, predict_images, run_prediction_job
from automodel.deploy._run import DeployError, TrainedRun

__all__ = [
    "DeployError",
    "ExportedClassifier",
    "ExportedModel",
    "ImageBatch",
    "ImageInput",
    "LoadedModel",
    "Predictions",
    "Skipped",
    "TrainedRun",
    "decode_images",
    "export_model",
    "find_images",
    "load",
    "predict_images",
    "read_spec",
    "run_prediction_job",
    "to_model_input",
]
