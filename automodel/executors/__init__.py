"""Where a candidate runs: one interface, one request type, one result type.

``create_executor("local")`` gives a :class:`LocalExecutor`, ``create_executor("ray")`` a
:class:`RayExecutor` (needs ``pip install 'automodel[ray]'``); others register with
:func:`register_executor`. ``Executor.run_many`` runs several candidates at once;
:func:`resolve_gpus` turns ``--gpus`` into one ``CUDA_VISIBLE_DEVICES`` slot per candidate.
A failing candidate is an :class:`ExecutionResult`, never an exception; :class:`ExecutorError`
means the executor itself failed.
"""

from ._base import EventCallback, Executor, LineCallback, create_executor, list_executors, register_executor
from ._gpus import GpuSlots, gpu_envs, parse_gpus, resolve_gpus, visible_gpus
from ._local import ERROR_FILE, OOM_ERROR_TYPES, RESULT_FILE, LocalExecutor
from ._models import ComponentError, ExecutionRequest, ExecutionResult, ExecutionStatus, ExecutorError
from ._output import EVENT_PREFIX
from ._parallel import IndexedEventCallback, IndexedLineCallback
from ._ray import RayExecutor

__all__ = [
    "ERROR_FILE",
    "EVENT_PREFIX",
    "OOM_ERROR_TYPES",
    "RESULT_FILE",
    "ComponentError",
    "EventCallback",
    "ExecutionRequest",
    "ExecutionResult",
    "ExecutionStatus",
    "Executor",
    "ExecutorError",
    "GpuSlots",
    "IndexedEventCallback",
    "IndexedLineCallback",
    "LineCallback",
    "LocalExecutor",
    "RayExecutor",
    "create_executor",
    "gpu_envs",
    "list_executors",
    "parse_gpus",
    "register_executor",
    "resolve_gpus",
    "visible_gpus",
]
