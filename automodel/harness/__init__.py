"""Runs one candidate pipeline in its own process.

``python -m automodel.harness --job job.json`` imports the three component files,
smoke-tests them on a few batches, trains under a wall-clock budget with validation
every epoch, and writes ``metrics.json``, ``checkpoint.pt`` and ``result.json`` (or
``error.json`` attributed to the failing component). Progress goes to stdout as
``@@AM {json}`` lines. Use an executor (:mod:`automodel.executors`) to start it.
"""

from automodel.harness._client import CandidateRunner, copy_components, declared_features
from automodel.harness._job import ERROR_EXIT_CODE, EVENT_PREFIX, HarnessJob, emit, write_json_atomic

__all__ = ["ERROR_EXIT_CODE", "EVENT_PREFIX", "CandidateRunner", "copy_components", "declared_features", "HarnessJob", "emit", "write_json_atomic"]
