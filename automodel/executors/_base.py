"""The executor interface and its registry."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from ._models import ExecutionRequest, ExecutionResult
from ._parallel import IndexedEventCallback, IndexedLineCallback, run_threaded

__all__ = [
    "EventCallback",
    "Executor",
    "LineCallback",
    "create_executor",
    "list_executors",
    "register_executor",
]

EventCallback = Callable[[dict[str, Any]], None]
"""Called with each ``@@AM`` event as it arrives."""
LineCallback = Callable[[str], None]
"""Called with each output line (events included, without the newline) as it arrives."""


class Executor(ABC):
    """Runs one candidate command somewhere and reports how it went.

    Implementations return an :class:`ExecutionResult` for every failure of the child
    (crash, timeout, out of memory) and raise :class:`ExecutorError` only for their own.
    """

    name: str = ""
    isolates_filesystem: bool = False
    """Whether the child sees only the system, the Python environment, its job directory and
    ``ExecutionRequest.readonly_paths`` (and no network): a security boundary. ``False`` for ``local``."""

    @abstractmethod
    def run(
        self,
        request: ExecutionRequest,
        on_event: EventCallback | None = None,
        on_line: LineCallback | None = None,
    ) -> ExecutionResult:
        """Run ``request.argv`` to completion, timeout or memory limit.

        Raises:
            ExecutorError: the executor could not start or supervise the child.
        """

    def run_many(
        self,
        requests: Sequence[ExecutionRequest],
        *,
        max_parallel: int | None = None,
        on_event: IndexedEventCallback | None = None,
        on_line: IndexedLineCallback | None = None,
        gpus: Sequence[str] | None = None,
    ) -> list[ExecutionResult]:
        """Run several requests at once (one thread and one child each); results in request order.

        ``gpus`` are ``CUDA_VISIBLE_DEVICES`` slots (:func:`resolve_gpus`), one per running
        request. See :func:`automodel.executors._parallel.run_threaded`.

        Raises:
            ExecutorError: the executor failed for some request (after all others ended).
        """
        return run_threaded(
            self, requests, max_parallel=max_parallel, on_event=on_event, on_line=on_line, gpus=gpus
        )


_E = TypeVar("_E", bound=type[Executor])
_REGISTRY: dict[str, type[Executor]] = {}


def register_executor(name: str) -> Callable[[_E], _E]:
    """Class decorator that makes an executor available to :func:`create_executor`."""

    def decorate(cls: _E) -> _E:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"Executor {name!r} is already registered by {_REGISTRY[name].__qualname__}.")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return decorate


def list_executors() -> list[str]:
    """Names accepted by :func:`create_executor`, sorted."""
    return sorted(_REGISTRY)


def create_executor(name: str, **kwargs: Any) -> Executor:
    """Build a registered executor by name, passing ``kwargs`` to its constructor.

    Raises:
        ValueError: ``name`` is not registered; the message lists the valid names.
    """
    try:
        cls = _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"Unknown executor {name!r}. Valid choices: {', '.join(list_executors()) or '(none)'}; "
            "register new ones with @register_executor(name)."
        ) from None
    return cls(**kwargs)
