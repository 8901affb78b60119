"""Run candidates as Ray tasks, on this machine or on a cluster (``pip install 'automodel[ray]'``).

Each request becomes one Ray task that asks for ``num_cpus`` / ``num_gpus`` (fractions
allowed) and, on whichever node Ray picks, runs the request with an ordinary executor
there (``inner``: by default ``auto``, the bubblewrap sandbox where it starts, else a
local process): the same command, sandbox, timeout, memory limit and kill of the whole
process tree as without Ray. The task is a streaming generator: events and output lines
reach the caller's callbacks while the child trains, then the typed
:class:`ExecutionResult` arrives.

Files: the request's ``workdir`` (log) and ``job_dir`` (``job.json`` and inputs in,
``out/`` and ``result.json`` back) must be where the caller reads them. When the worker
sees the caller's workdir (same host, or a shared filesystem: detected with a marker
file), it works in place. Otherwise it asks for the inputs, which the caller then sends
in the task's arguments; it runs the job at the same absolute paths on its node, and
everything the job wrote comes back in the task's return value and is written here.
Paths a job links to outside those directories (symlinked data, weights) must exist at
the same path on every node. ``ray`` is imported only when this executor is used.
"""

from __future__ import annotations

import contextlib
import inspect
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import structlog

from ._base import EventCallback, Executor, LineCallback, register_executor
from ._models import ComponentError, ExecutionRequest, ExecutionResult, ExecutorError
from ._parallel import IndexedEventCallback, IndexedLineCallback, run_threaded
from ._ray_worker import ray_task
from ._shipping import MARKER_PREFIX, Bundle, apply_bundle, make_bundle, request_roots

__all__ = ["RayExecutor", "ray_options"]

ShipMode = Literal["auto", "always", "never"]
_DRIVER_SLACK_S = 60.0
"""Beyond timeout + kill grace, how long the caller waits for a started task before killing its worker."""
_ISOLATING = frozenset({"sandbox", "docker"})

log = structlog.get_logger(__name__)


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise ExecutorError(
            "The ray executor needs the 'ray' package, which is not installed. "
            "Install it with: pip install 'automodel[ray]' (or pip install 'ray>=2.9')."
        ) from exc
    return ray


@register_executor("ray")
class RayExecutor(Executor):
    """Runs each candidate as a Ray task (see the module docstring).

    Args:
        address: the Ray cluster to use: ``None`` joins the runtime this process already
            started (``ray.init``) or else starts a local one (or joins ``RAY_ADDRESS``),
            ``"auto"`` an existing cluster on this host, ``"ray://HOST:10001"`` a remote one.
        num_cpus: CPUs each candidate asks for; Ray also sets its ``OMP_NUM_THREADS``.
        num_gpus: GPUs each candidate asks for; fractions share a GPU (``0.5``: two per GPU).
            Ray picks the GPUs and sets ``CUDA_VISIBLE_DEVICES``.
        resources: other Ray resources per candidate, e.g. ``{"accelerator_type:H100": 0.01}``.
        inner: the executor that runs the child on the worker: ``auto`` (the sandbox where
            bubblewrap starts on that node, else ``local``), ``sandbox``, ``docker``, ``local``.
        inner_options: keyword arguments of that executor (e.g. ``{"kill_grace_s": 1.0}``).
        reserve_memory: also ask Ray for ``memory_limit_mb`` of memory when a request has one.
        runtime_env: Ray runtime environment for the tasks (``env_vars``, ``pip``, ...).
        ship_files: ``auto`` (ship only to and from workers that do not see the workdir),
            ``always`` or ``never``.
        max_ship_mb: most file contents one task sends or returns; the rest stays put (logged).
        init_kwargs: passed to ``ray.init`` when this executor starts or joins the runtime.
    """

    def __init__(
        self,
        *,
        address: str | None = None,
        num_cpus: float = 1.0,
        num_gpus: float = 0.0,
        resources: dict[str, float] | None = None,
        inner: str = "auto",
        inner_options: dict[str, Any] | None = None,
        reserve_memory: bool = True,
        runtime_env: dict[str, Any] | None = None,
        ship_files: ShipMode = "auto",
        max_ship_mb: float = 1024.0,
        init_kwargs: dict[str, Any] | None = None,
    ) -> None:
        if num_cpus < 0 or num_gpus < 0 or (num_gpus > 1 and num_gpus != int(num_gpus)):
            raise ValueError(
                f"RayExecutor needs num_cpus >= 0 and num_gpus >= 0 (a fraction below 1 or a whole number); "
                f"got num_cpus={num_cpus}, num_gpus={num_gpus}."
            )
        if ship_files not in ("auto", "always", "never"):
            raise ValueError(f"ship_files must be 'auto', 'always' or 'never', got {ship_files!r}.")
        if max_ship_mb <= 0:
            raise ValueError(f"max_ship_mb must be > 0, got {max_ship_mb}.")
        if inner == self.name or inner == "ray":
            raise ValueError("RayExecutor(inner='ray') would nest Ray in Ray; use auto, sandbox, docker or local.")
        if inner != "auto" and inner not in _known_inner():
            raise ValueError(f"Unknown inner executor {inner!r}. Valid choices: auto, {', '.join(_known_inner())}.")
        self.address = address
        self.num_cpus = num_cpus
        self.num_gpus = num_gpus
        self.resources = dict(resources or {})
        self.inner = inner
        self.inner_options = dict(inner_options or {})
        self.reserve_memory = reserve_memory
        self.runtime_env = runtime_env
        self.ship_files: ShipMode = ship_files
        self.max_ship_mb = max_ship_mb
        self.init_kwargs = dict(init_kwargs or {})
        # Only a named sandbox is known to isolate: "auto" may fall back to local on some node.
        self.isolates_filesystem = inner in _ISOLATING
        self._lock = threading.Lock()
        self._remote: Any = None
        self._in_flight: dict[str, Any] = {}
        self._feasible: set[tuple[tuple[str, float], ...]] = set()
        self._unshared_seen = False

    # -- driver side -----------------------------------------------------------------

    def _connect(self) -> Any:
        ray = _import_ray()
        with self._lock:
            if not ray.is_initialized():
                kwargs = {"ignore_reinit_error": True, **self.init_kwargs}
                log.info("executor_ray_init", address=self.address)
                try:
                    ray.init(address=self.address, **kwargs)
                except (ConnectionError, RuntimeError, ValueError) as exc:
                    raise ExecutorError(
                        f"Cannot start or join the Ray runtime at address={self.address!r} ({exc}). "
                        "Start the cluster first (ray start --head), check the address, or pass address=None "
                        "for a local runtime."
                    ) from exc
            if self._remote is None:
                self._remote = ray.remote(ray_task)
        return ray

    def _task_resources(self, request: ExecutionRequest) -> dict[str, float]:
        wanted = {"CPU": float(self.num_cpus), "GPU": float(self.num_gpus), **self.resources}
        if self.reserve_memory and request.memory_limit_mb:
            wanted["memory"] = float(request.memory_limit_mb) * 2**20
        return {k: v for k, v in wanted.items() if v > 0}

    def _check_feasible(self, ray: Any, wanted: dict[str, float]) -> None:
        """Fail now, not never: Ray would queue a task no node can ever run."""
        key = tuple(sorted(wanted.items()))
        if key in self._feasible:
            return
        nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
        if any(all(res.get(k, 0.0) >= v for k, v in wanted.items()) for res in nodes):
            self._feasible.add(key)
            return
        offered = "; ".join(
            ", ".join(f"{k}={v:g}" for k, v in sorted(res.items()) if k in wanted) or "(none of them)"
            for res in nodes
        )
        raise ExecutorError(
            f"No node of the Ray cluster can run a candidate that asks for "
            f"{', '.join(f'{k}={v:g}' for k, v in sorted(wanted.items()))}; the nodes offer: {offered or 'no nodes'}. "
            "Lower num_cpus / num_gpus / resources (or the request's memory_limit_mb, or reserve_memory=False), "
            "or add nodes that have them."
        )

    def run(
        self,
        request: ExecutionRequest,
        on_event: EventCallback | None = None,
        on_line: LineCallback | None = None,
    ) -> ExecutionResult:
        """Run ``request`` as one Ray task and return how it ended; see :class:`Executor`.

        Raises:
            ExecutorError: Ray is missing or unreachable, no node can satisfy the resources,
                the worker died, or the inner executor could not start the child there.
        """
        ray = self._connect()
        self._check_feasible(ray, self._task_resources(request))
        try:
            request.workdir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ExecutorError(
                f"Cannot create workdir {request.workdir} ({exc}); pass a writable ExecutionRequest.workdir."
            ) from exc
        marker = self._mark(request.workdir)
        try:
            send = self.ship_files == "always" or (self.ship_files == "auto" and self._unshared_seen)
            outcome = self._submit(ray, request, marker, send, on_event, on_line)
            if outcome is None:  # the worker does not see our files: send them this time
                self._unshared_seen = True
                outcome = self._submit(ray, request, marker, True, on_event, on_line)
            if outcome is None:
                raise ExecutorError("The Ray worker asked for the job's files twice; see the Ray worker logs.")
            return outcome
        finally:
            marker.unlink(missing_ok=True)

    @staticmethod
    def _mark(workdir: Path) -> Path:
        """Write the file whose presence tells a worker that it sees this workdir."""
        marker = workdir / f"{MARKER_PREFIX}{uuid.uuid4().hex}"
        marker.write_text("the workdir is shared with the caller\n")
        return marker

    def _submit(
        self,
        ray: Any,
        request: ExecutionRequest,
        marker: Path,
        send_inputs: bool,
        on_event: EventCallback | None,
        on_line: LineCallback | None,
    ) -> ExecutionResult | None:
        """One task; ``None`` when its worker needs the inputs and none were sent."""
        limit = int(self.max_ship_mb * 2**20)
        inputs: Bundle | None = None
        if send_inputs:
            inputs = make_bundle(request_roots(request), limit_bytes=limit, links=True)
            if inputs["left"]:
                log.warning("executor_ray_inputs_not_shipped", files=inputs["left"], max_ship_mb=self.max_ship_mb)
        wanted = self._task_resources(request)
        options: dict[str, Any] = {
            "num_cpus": self.num_cpus,
            "num_gpus": self.num_gpus,
            "max_retries": 0,
            "num_returns": "streaming",
        }
        if "memory" in wanted:
            options["memory"] = wanted["memory"]
        if self.resources:
            options["resources"] = self.resources
        if self.runtime_env is not None:
            options["runtime_env"] = self.runtime_env
        settings = {
            "inner": self.inner,
            "inner_options": self.inner_options,
            "ship": self.ship_files,
            "max_ship_bytes": limit,
            "marker": marker.name,
            "lines": on_line is not None,
            "caller_cwd": str(Path.cwd()),
            "gpus_from_ray": self.num_gpus > 0,
        }
        submitted = time.monotonic()
        gen = self._remote.options(**options).remote(request.model_dump(mode="json"), settings, inputs)
        key = uuid.uuid4().hex
        with self._lock:
            self._in_flight[key] = gen
        try:
            return self._follow(ray, gen, request, submitted, on_event, on_line)
        finally:
            with self._lock:
                self._in_flight.pop(key, None)

    def _follow(
        self,
        ray: Any,
        gen: Any,
        request: ExecutionRequest,
        submitted: float,
        on_event: EventCallback | None,
        on_line: LineCallback | None,
    ) -> ExecutionResult | None:
        """Relay the task's stream to the callbacks until its result arrives."""
        deadline: float | None = None
        node = ""
        warned_queue = False
        finished = False
        try:
            while True:
                ready, _ = ray.wait([gen], timeout=0.5)
                now = time.monotonic()
                if not ready:
                    if deadline is not None and now > deadline:
                        log.error("executor_ray_worker_unresponsive", node=node, timeout_s=request.timeout_s)
                        ray.cancel(gen, force=True)
                        finished = True
                        return _lost_worker_result(request, now - submitted)
                    if deadline is None and not warned_queue and now - submitted > 30:
                        log.warning("executor_ray_queued", waited_s=round(now - submitted),
                                    resources=self._task_resources(request))
                        warned_queue = True
                    continue
                try:
                    item = ray.get(next(gen))
                except StopIteration:
                    finished = True
                    raise ExecutorError("The Ray task ended without sending its result (see the Ray worker logs).") from None
                kind = item["kind"]
                if kind == "started":
                    node = item["node"]
                    deadline = now + request.timeout_s + item["kill_grace_s"] + _DRIVER_SLACK_S
                    log.info("executor_started", executor=self.name, inner=item["inner"], node=node,
                             worker_pid=item["pid"], shared_workdir=item["shared"],
                             queued_s=round(now - submitted, 2), argv=request.argv)
                elif kind == "need_inputs":
                    finished = True
                    log.info("executor_ray_workdir_not_shared", node=item["node"], workdir=str(request.workdir))
                    return None
                elif kind == "event":
                    _call(on_event, item["event"])
                elif kind == "line":
                    _call(on_line, item["line"])
                elif kind == "error":
                    finished = True
                    raise ExecutorError(f"On Ray node {node or '?'}: {item['message']}")
                elif kind == "result":
                    finished = True
                    return self._finish(request, item, node, submitted)
        except ray.exceptions.OutOfMemoryError as exc:
            finished = True
            return _ray_oom_result(request, time.monotonic() - submitted, str(exc))
        except ray.exceptions.RayError as exc:
            finished = True
            raise ExecutorError(
                f"The Ray task for {request.workdir} failed ({type(exc).__name__}: {str(exc)[:500]}). "
                "Check that automodel (same version) is installed on every Ray worker and see the Ray logs."
            ) from exc
        finally:
            if not finished:  # interrupted (Ctrl-C) or a callback raised: stop the candidate
                with contextlib.suppress(Exception):
                    ray.cancel(gen)

    def _finish(self, request: ExecutionRequest, item: dict[str, Any], node: str, submitted: float) -> ExecutionResult:
        result = ExecutionResult.model_validate(item["result"])
        bundle: Bundle = item["bundle"]
        if bundle["files"]:
            apply_bundle(request_roots(request), {"files": bundle["files"]})  # files only: never links
        if bundle["left"]:
            log.warning("executor_ray_files_left_on_worker", node=node, files=bundle["left"],
                        max_ship_mb=self.max_ship_mb)
        log.info("executor_finished", executor=self.name, node=node, status=result.status,
                 duration_s=round(result.duration_s, 2),
                 overhead_s=round(time.monotonic() - submitted - result.duration_s, 2),
                 shipped_files=len(bundle["files"]))
        return result

    def cancel_running(self) -> None:
        """Cancel every task this executor is following; their workers end the children."""
        ray = _import_ray()
        with self._lock:
            running = list(self._in_flight.values())
        for gen in running:
            with contextlib.suppress(Exception):
                ray.cancel(gen)

    def run_many(
        self,
        requests: Sequence[ExecutionRequest],
        *,
        max_parallel: int | None = None,
        on_event: IndexedEventCallback | None = None,
        on_line: IndexedLineCallback | None = None,
        gpus: Sequence[str] | None = None,
    ) -> list[ExecutionResult]:
        """Submit all requests (Ray queues them by resources); see :meth:`Executor.run_many`.

        Raises:
            ValueError: ``gpus`` was given; Ray assigns GPUs itself (use ``num_gpus``).
            ExecutorError: as for :meth:`run`, after every other request ended.
        """
        if gpus is not None:
            raise ValueError(
                "The ray executor assigns GPUs itself; set RayExecutor(num_gpus=...) per candidate instead of gpus=."
            )
        return run_threaded(
            self, requests, max_parallel=max_parallel, on_event=on_event, on_line=on_line,
            on_interrupt=self.cancel_running,
        )


def ray_options(section: Mapping[str, Any] | None = None, **overrides: Any) -> dict[str, Any]:
    """:class:`RayExecutor` keyword arguments: a backend config's ``ray:`` section, then the run's
    settings (``overrides``; ``None`` means not set).

    Raises:
        ValueError: an unknown key (the message lists the valid ones) or a value the executor refuses.
    """
    valid = [name for name in inspect.signature(RayExecutor.__init__).parameters if name != "self"]
    options = dict(section or {})
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(f"ray: unknown option(s) {', '.join(unknown)}; valid options: {', '.join(valid)} (docs/ray.md).")
    options.update({k: v for k, v in overrides.items() if v is not None})
    for key in ("num_cpus", "num_gpus", "max_ship_mb"):
        if key in options and (isinstance(options[key], bool) or not isinstance(options[key], int | float)):
            raise ValueError(f"ray: {key} must be a number, got {options[key]!r}.")
    RayExecutor(**options)  # checks the values; connects to nothing
    return options


def _known_inner() -> list[str]:
    from ._base import list_executors

    return [name for name in list_executors() if name != "ray"]


def _call(callback: Callable[[Any], None] | None, arg: Any) -> None:
    if callback is None:
        return
    try:
        callback(arg)
    except Exception:
        # As with the local executor, a broken observer must not stop the run.
        log.warning("executor_callback_failed", callback=repr(callback), exc_info=True)


def _lost_worker_result(request: ExecutionRequest, duration: float) -> ExecutionResult:
    return ExecutionResult(
        status="timeout",
        returncode=None,
        duration_s=duration,
        error=ComponentError(
            component="harness",
            error_type="Timeout",
            message=f"The Ray worker did not report back within the time budget of {request.timeout_s:g} s "
            "(plus grace) and was killed. Train for less time, or check the worker node.",
        ),
        log_path=request.log_path,
    )


def _ray_oom_result(request: ExecutionRequest, duration: float, detail: str) -> ExecutionResult:
    return ExecutionResult(
        status="oom",
        returncode=None,
        duration_s=duration,
        error=ComponentError(
            component="harness",
            error_type="OutOfMemoryError",
            message="Ray killed the worker because its node ran out of memory. Lower the batch size, input "
            f"size, DataLoader workers or model size, or run fewer candidates per node. Ray: {detail[:300]}",
        ),
        log_path=request.log_path,
    )
