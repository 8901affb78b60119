"""Runs one candidate pipeline in its own process, and scores it outside that process.

``python -m automodel.harness --job JOB_DIR/job.json`` (started by an executor) imports the
three component files, smoke-tests them on a few batches, trains under a wall-clock budget,
and writes validation log-probabilities and weights per epoch and variant (or, in predict
mode, the log-probabilities of one split; in export mode, the trained model with its
preprocessing as one ONNX or TorchScript file) into its job directory; progress goes to stdout as
``@@AM {json}`` lines. :class:`CandidateRunner` is the trusted side: it builds the job
directory (no validation or test labels in it), runs it through an executor, and scores
the predictions here. The protocol itself is defined once, in :mod:`automodel.executors`.
"""

from automodel.harness._client import (
    CandidateRunner,
    PredictionError,
    copy_components,
    declared_features,
    declared_flip,
)
from automodel.harness._job import ERROR_EXIT_CODE, EVENT_PREFIX, HarnessJob, emit, write_json_atomic

__all__ = [
    "ERROR_EXIT_CODE",
    "EVENT_PREFIX",
    "CandidateRunner",
    "HarnessJob",
    "PredictionError",
    "copy_components",
    "declared_features",
    "declared_flip",
    "emit",
    "write_json_atomic",
]
