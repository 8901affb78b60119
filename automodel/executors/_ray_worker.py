"""The worker side of the Ray executor: one Ray task runs one request with an ordinary executor.

The task is a streaming generator (see :func:`ray_task`); the caller's side is
:mod:`automodel.executors._ray`. This module is imported on every Ray worker, so it
needs ``automodel`` installed there, and imports ``ray`` only inside the task.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ._base import Executor, create_executor
from ._models import ExecutionRequest, ExecutionResult
from ._parallel import end_child_sessions
from ._sandbox import bwrap_problem
from ._select import resolve_executor
from ._shipping import Bundle, apply_bundle, make_bundle, remove_bundle, request_roots, snapshot

__all__ = ["ray_task"]


def _inner_executor(settings: dict[str, Any]) -> Executor:
    """The executor that runs the child on this node, chosen here (bubblewrap may differ per node)."""
    if settings["inner"] == "auto" and not settings["inner_options"]:
        return resolve_executor("auto")
    if settings["inner"] == "auto":
        name = "sandbox" if bwrap_problem() is None else "local"
        return create_executor(name, **settings["inner_options"])
    return create_executor(settings["inner"], **settings["inner_options"])


def ray_task(
    request_data: dict[str, Any], settings: dict[str, Any], inputs: Bundle | None
) -> Iterator[dict[str, Any]]:
    """The Ray task: run the request with the inner executor, streaming what happens.

    Yields ``need_inputs`` (and stops) when this node does not see the caller's workdir
    and no inputs came; else ``started``, then ``event`` / ``line`` items while the child
    runs, then one ``result`` (or ``error``) item.
    """
    import ray

    request = ExecutionRequest.model_validate(request_data)
    roots = request_roots(request)
    node = ray.util.get_node_ip_address()
    shared = (request.workdir / settings["marker"]).is_file()
    ship = settings["ship"] == "always" or (settings["ship"] == "auto" and not shared)
    if ship and inputs is None:
        yield {"kind": "need_inputs", "node": node}
        return
    created = [r for r in roots if not r.exists()]
    # Shared and shipping anyway (ship_files="always"): the inputs are already here.
    materialised = apply_bundle(roots, inputs) if ship and not shared and inputs is not None else []
    before = snapshot(roots) if ship else {}
    if request.cwd is None and Path(settings["caller_cwd"]).is_dir():
        request = request.model_copy(update={"cwd": Path(settings["caller_cwd"])})
    if settings["gpus_from_ray"] and "CUDA_VISIBLE_DEVICES" in request.env:
        # Ray chose this task's GPUs and set them in the worker's environment; they win.
        env = {k: v for k, v in request.env.items() if k != "CUDA_VISIBLE_DEVICES"}
        request = request.model_copy(update={"env": env})
    try:
        executor = _inner_executor(settings)
    except Exception as exc:  # e.g. sandbox named but bubblewrap missing on this node
        yield {"kind": "error", "message": f"{type(exc).__name__}: {exc}"}
        return
    grace = float(getattr(executor, "kill_grace_s", 3.0))
    yield {"kind": "started", "node": node, "pid": os.getpid(), "shared": shared, "inner": executor.name,
           "kill_grace_s": grace}

    items: queue.Queue[dict[str, Any]] = queue.Queue()
    outcome: dict[str, Any] = {}

    def work() -> None:
        try:
            outcome["result"] = executor.run(
                request,
                on_event=lambda e: items.put({"kind": "event", "event": e}),
                on_line=(lambda line: items.put({"kind": "line", "line": line})) if settings["lines"] else None,
            )
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=work, name="automodel-ray-candidate", daemon=True)
    thread.start()
    try:
        while thread.is_alive() or not items.empty():
            try:
                yield items.get(timeout=0.1)
            except queue.Empty:
                continue
    finally:
        if thread.is_alive():  # cancelled (KeyboardInterrupt from ray.cancel): end the child now
            end_child_sessions(grace_s=grace)
            thread.join(timeout=30)
    if "error" in outcome:
        failure = outcome["error"]
        yield {"kind": "error", "message": f"{type(failure).__name__}: {failure}"}
        return
    result: ExecutionResult = outcome["result"]
    bundle: Bundle = {"files": {}, "links": {}, "left": []}
    if ship:
        # What the run wrote or changed goes back; the caller already has the rest.
        bundle = make_bundle(roots, limit_bytes=int(settings["max_ship_bytes"]), links=False, unchanged=before)
        # The worker's copy goes; the caller's own files (shared workdir) stay.
        remove_bundle([*bundle["files"], *materialised], created)
    yield {"kind": "result", "result": result.model_dump(mode="json"), "bundle": bundle}
