"""Where a candidate runs: one interface, one request type, one result type.

``create_executor("local")`` gives a :class:`LocalExecutor`; others register with
:func:`register_executor`. A failing candidate is an :class:`ExecutionResult`, never
an exception; :class:`ExecutorError` means the executor itself failed.
"""

from ._base import EventCallback, Executor, LineCallback, create_executor, list_executors, register_executor
from ._local import ERROR_FILE, OOM_ERROR_TYPES, RESULT_FILE, LocalExecutor
from ._models import ComponentError, ExecutionRequest, ExecutionResult, ExecutionStatus, ExecutorError
from ._output import EVENT_PREFIX

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
    "LineCallback",
    "LocalExecutor",
    "create_executor",
    "list_executors",
    "register_executor",
]
