"""Where a candidate runs: one interface, one request type, one result type; and the trusted scorer.

``create_executor(name)`` builds a registered executor: ``local`` (a plain subprocess, not a
security boundary), ``sandbox`` (bubblewrap) and ``docker``; :func:`resolve_executor` also
accepts ``"auto"`` (the sandbox where it starts, else ``local``); ``ray`` runs each candidate as a
Ray task (``pip install 'automodel[ray]'``) with one of those on the worker.
``Executor.run_many`` runs several candidates at once, and :func:`resolve_gpus` turns ``--gpus``
into one ``CUDA_VISIBLE_DEVICES`` slot per candidate. A failing candidate is an
:class:`ExecutionResult`, never an exception; :class:`ExecutorError` means the executor itself
failed. The harness protocol (job spec, job directory layout, file names, events) is defined
here once, for both sides; :class:`ValidationScorer` computes every score outside the candidate.
"""

from ._base import EventCallback, Executor, LineCallback, create_executor, list_executors, register_executor
from ._docker import DEFAULT_IMAGE, DockerExecutor, docker_problem, import_local_image
from ._gpus import GpuSlots, candidate_gpus, gpu_envs, parse_gpus, resolve_gpus, visible_gpus
from ._local import OOM_ERROR_TYPES, LocalExecutor
from ._models import ComponentError, ExecutionRequest, ExecutionResult, ExecutionStatus, ExecutorError
from ._parallel import IndexedEventCallback, IndexedLineCallback
from ._protocol import (
    COMPONENTS_DIR,
    DATA_DIR,
    ERROR_EXIT_CODE,
    ERROR_FILE,
    EVENT_PREFIX,
    EXPORT_FORMATS,
    GUARD_ENV,
    INFEASIBLE_ERROR_TYPE,
    JOB_FILE,
    OUT_DIR,
    PARENT_ENV,
    RESULT_FILE,
    WEIGHTS_DIR,
    HarnessJob,
    checkpoint_name,
    emit,
    export_name,
    parse_event,
    parse_val_name,
    predictions_name,
    val_predictions_name,
    write_json_atomic,
)
from ._ray import RayExecutor, ray_options
from ._sandbox import SandboxExecutor, bwrap_problem, python_paths
from ._scorer import (
    CONFUSED_PAIRS_TOP,
    EpochScore,
    ValidationScorer,
    confused_pairs,
    read_predictions,
    score_log_probs,
)
from ._select import DEFAULT_EXECUTOR, resolve_executor

__all__ = [
    "COMPONENTS_DIR",
    "CONFUSED_PAIRS_TOP",
    "DATA_DIR",
    "DEFAULT_EXECUTOR",
    "DEFAULT_IMAGE",
    "ERROR_EXIT_CODE",
    "ERROR_FILE",
    "EVENT_PREFIX",
    "EXPORT_FORMATS",
    "GUARD_ENV",
    "INFEASIBLE_ERROR_TYPE",
    "JOB_FILE",
    "OOM_ERROR_TYPES",
    "OUT_DIR",
    "PARENT_ENV",
    "RESULT_FILE",
    "WEIGHTS_DIR",
    "ComponentError",
    "DockerExecutor",
    "EpochScore",
    "EventCallback",
    "ExecutionRequest",
    "ExecutionResult",
    "ExecutionStatus",
    "Executor",
    "ExecutorError",
    "GpuSlots",
    "HarnessJob",
    "IndexedEventCallback",
    "IndexedLineCallback",
    "LineCallback",
    "LocalExecutor",
    "RayExecutor",
    "SandboxExecutor",
    "ValidationScorer",
    "bwrap_problem",
    "candidate_gpus",
    "checkpoint_name",
    "confused_pairs",
    "create_executor",
    "docker_problem",
    "emit",
    "export_name",
    "gpu_envs",
    "import_local_image",
    "list_executors",
    "parse_event",
    "parse_gpus",
    "parse_val_name",
    "predictions_name",
    "python_paths",
    "ray_options",
    "read_predictions",
    "register_executor",
    "resolve_executor",
    "resolve_gpus",
    "score_log_probs",
    "val_predictions_name",
    "visible_gpus",
    "write_json_atomic",
]
