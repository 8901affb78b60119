"""Which GPUs of this host candidates may use, and one ``CUDA_VISIBLE_DEVICES`` per candidate.

``--gpus`` accepts ``all``, a count (``2``: the first two visible GPUs; ``0``: none) or a
comma-separated list of ids (``0,1``; a single id is written ``1,``). Ids are the ones
*this* process sees: when it already runs under ``CUDA_VISIBLE_DEVICES=2,3``, id ``0``
is physical GPU ``2``, and the child gets ``CUDA_VISIBLE_DEVICES=2``. An id listed twice
(``0,0,1,1``) is a GPU that two candidates share. Nothing here imports CUDA unless the
visible GPUs must be counted; no device index is hard-coded.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager

__all__ = ["CUDA_ENV", "GpuSlots", "candidate_gpus", "gpu_envs", "parse_gpus", "resolve_gpus", "visible_gpus"]

CUDA_ENV = "CUDA_VISIBLE_DEVICES"
_FORMS = "'all', a count such as '2' ('0' for none), or ids such as '0,1' (one id: '1,')"


def _torch_device_count() -> int:
    import torch

    return int(torch.cuda.device_count())


def visible_gpus(
    environ: Mapping[str, str] | None = None, *, count: Callable[[], int] | None = None
) -> list[str]:
    """The GPUs this process sees, as the values a child's ``CUDA_VISIBLE_DEVICES`` takes.

    Position ``i`` of the list is what torch calls ``cuda:i`` here. Under an inherited
    ``CUDA_VISIBLE_DEVICES`` its entries are returned as they are (ids or UUIDs; CUDA
    stops at the first ``-1``); otherwise ``count()`` (default: torch's device count)
    GPUs numbered from 0.
    """
    env = os.environ if environ is None else environ
    inherited = env.get(CUDA_ENV)
    if inherited is not None:
        entries: list[str] = []
        for entry in (part.strip() for part in inherited.split(",")):
            if not entry or entry.startswith("-"):
                break
            entries.append(entry)
        return entries
    return [str(i) for i in range((count or _torch_device_count)())]


def parse_gpus(spec: str | int | Sequence[int] | None, *, available: int) -> list[int]:
    """Turn a ``--gpus`` value into ids of visible GPUs (indices ``0 .. available-1``).

    ``None``, ``""``, ``"none"``, ``"cpu"`` and a count of 0 mean no GPU (an empty list).

    Raises:
        ValueError: the form is not one of the accepted ones, an id is not visible, or the
            count is larger than the number of visible GPUs; the message says which are.
    """
    if spec is None:
        return []
    if isinstance(spec, bool):
        raise ValueError(f"--gpus got a boolean ({spec}); use {_FORMS}.")
    if isinstance(spec, int):
        return _first(spec, available)
    if not isinstance(spec, str):
        return _check_ids([int(i) for i in spec], available, str(list(spec)))
    text = spec.strip().lower()
    if text in ("", "none", "cpu"):
        return []
    if text == "all":
        return list(range(available))
    if "," not in text:
        if not text.isdigit():
            raise ValueError(f"--gpus {spec!r} is not understood; use {_FORMS}.")
        return _first(int(text), available)
    parts = [p.strip() for p in text.split(",")]
    if parts[-1] == "":
        parts = parts[:-1]  # "1," is the single id 1
    if not parts or not all(p.isdigit() for p in parts):
        raise ValueError(f"--gpus {spec!r} is not a list of GPU ids; use {_FORMS}.")
    return _check_ids([int(p) for p in parts], available, spec)


def _first(count: int, available: int) -> list[int]:
    if count < 0:
        raise ValueError(f"--gpus {count} is negative; use {_FORMS}.")
    if count > available:
        raise ValueError(
            f"--gpus {count} asks for {count} GPUs but this process sees {available}; "
            f"use at most {available}, or 'all'."
        )
    return list(range(count))


def _check_ids(ids: list[int], available: int, spec: str) -> list[int]:
    bad = [i for i in ids if not 0 <= i < available]
    if bad:
        valid = ", ".join(map(str, range(available))) or "none (no GPU is visible)"
        raise ValueError(
            f"--gpus {spec}: GPU id(s) {', '.join(map(str, bad))} not visible to this process; "
            f"valid ids: {valid}. Ids count the GPUs this process sees (after its own {CUDA_ENV})."
        )
    return ids


def resolve_gpus(
    spec: str | int | Sequence[int] | None,
    environ: Mapping[str, str] | None = None,
    *,
    count: Callable[[], int] | None = None,
) -> list[str]:
    """``--gpus`` as the ``CUDA_VISIBLE_DEVICES`` value of each GPU slot (see :func:`parse_gpus`)."""
    visible = visible_gpus(environ, count=count)
    return [visible[i] for i in parse_gpus(spec, available=len(visible))]


def candidate_gpus(
    gpus: str | int | Sequence[int] | None,
    device: str = "auto",
    environ: Mapping[str, str] | None = None,
    *,
    count: Callable[[], int] | None = None,
) -> list[str] | None:
    """The GPU slots a run's candidates spread over, from ``--gpus`` and ``--device``.

    ``--gpus`` (see :func:`parse_gpus`) gives the slots; without it, ``--device cuda:N`` is the
    single-candidate form of the same choice (the one slot of GPU ``N``), and any other device
    leaves the environment alone (``None``). Candidate ``i`` of a round takes slot ``i`` modulo
    their number (:func:`gpu_envs`) and sees its GPU as ``cuda`` (``cuda:0``).

    Raises:
        ValueError: both are given and disagree (``--device cpu`` or ``cuda:N`` with ``--gpus``),
            or a GPU is not visible; the message says what to use instead.
    """
    dev = (device or "auto").strip().lower()
    if gpus is not None and str(gpus).strip() != "":
        if dev == "cpu" or (dev.startswith("cuda:") and dev != "cuda:"):
            raise ValueError(
                f"--gpus {gpus} and --device {device} both choose where candidates run; give --gpus with "
                "--device auto (or cuda) for several candidates, or --device cuda:N alone for one GPU."
            )
        return resolve_gpus(gpus, environ, count=count)
    if dev.startswith("cuda:"):
        index = dev.split(":", 1)[1]
        if not index.isdigit():
            raise ValueError(f"--device {device!r} is not understood; use cpu, cuda or cuda:N (N a GPU id).")
        return resolve_gpus(f"{int(index)},", environ, count=count)
    return None


def gpu_envs(slots: Sequence[str], k: int) -> list[dict[str, str]]:
    """The environment of each of ``k`` candidates started at once: one GPU each, round robin.

    With no slots every candidate gets ``CUDA_VISIBLE_DEVICES=""`` (no GPU at all).
    """
    if k < 0:
        raise ValueError(f"gpu_envs needs k >= 0 candidates, got {k}.")
    if not slots:
        return [{CUDA_ENV: ""} for _ in range(k)]
    return [{CUDA_ENV: slots[i % len(slots)]} for i in range(k)]


class GpuSlots:
    """A thread-safe pool of GPU slots: a candidate holds one while it runs.

    Each entry of ``slots`` is one place for one candidate (list a GPU twice for two
    candidates on it). :meth:`hold` waits until a slot is free, so more candidates than
    slots simply queue.
    """

    def __init__(self, slots: Sequence[str]) -> None:
        if not slots:
            raise ValueError(
                "GpuSlots needs at least one GPU slot; to run without a GPU, pass no slots to the "
                f"executor and set {CUDA_ENV}='' in the request env instead."
            )
        self._free = list(slots)
        self._cond = threading.Condition()

    @contextmanager
    def hold(self) -> Iterator[dict[str, str]]:
        """Wait for a free slot; yields the env that pins a child to it, frees it on exit."""
        with self._cond:
            self._cond.wait_for(lambda: bool(self._free))
            slot = self._free.pop(0)
        try:
            yield {CUDA_ENV: slot}
        finally:
            with self._cond:
                self._free.append(slot)
                self._cond.notify()
