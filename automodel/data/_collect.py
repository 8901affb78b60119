"""Decode every sample of a source once, in a small process pool, into square arrays."""

from __future__ import annotations

import ctypes
import hashlib
import multiprocessing as mp
import os
import signal
import statistics
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import structlog

from automodel.data._decode import Decoded, Header, decode_array, decode_file, read_header
from automodel.data._errors import SkipReport
from automodel.data._source import DatasetSource, Sample

__all__ = [
    "POOL_MIN_ITEMS",
    "Collected",
    "DecodePool",
    "ImageFacts",
    "choose_stored_size",
    "decode_samples",
    "scan_sizes",
]

log = structlog.get_logger(__name__)

POOL_MIN_ITEMS = 1000
"""Below this many files the pool's start-up costs more than it saves."""
_CHUNK = 64
_PR_SET_PDEATHSIG = 1
MIN_STORED_SIZE = 8

Allocator = Callable[[tuple[int, ...]], np.ndarray]


@dataclass(frozen=True)
class ImageFacts:
    """What the profile needs to know about one source image."""

    width: int
    height: int
    mode: str
    gray: bool
    digest: str


@dataclass
class Collected:
    """The decoded images of one split, in sample order, failures removed."""

    x: np.ndarray
    """``(N, S, S, 3)`` uint8; gray images are replicated across the three channels."""
    samples: list[Sample] = field(default_factory=list)
    facts: list[ImageFacts] = field(default_factory=list)


def choose_stored_size(sizes: list[tuple[int, int]]) -> int:
    """The stored square side for these ``(width, height)`` sizes.

    All images the same size with the longer side <= 64: their shorter side (native size),
    at least 8 (1x1 images are not stored at 1x1, which no network can pool).
    Otherwise the median shorter side, capped at 160, rounded to a multiple of 8 (>= 16).
    """
    if not sizes:
        return 32
    if len(set(sizes)) == 1 and max(sizes[0]) <= 64:
        return max(MIN_STORED_SIZE, min(sizes[0]))
    median = statistics.median(min(w, h) for w, h in sizes)
    return int(max(16, min(160, round(median / 8) * 8)))


def _chunks(items: list[tuple[int, str]]) -> Iterator[list[tuple[int, str]]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


def _header_chunk(args: tuple[list[tuple[int, str]], int]) -> list[tuple[int, Header | tuple[str, str]]]:
    chunk, max_pixels = args
    return [(i, read_header(Path(p), max_pixels)) for i, p in chunk]


def _decode_chunk(
    args: tuple[list[tuple[int, str]], int, int],
) -> list[tuple[int, Decoded | tuple[str, str]]]:
    chunk, size, max_pixels = args
    return [(i, decode_file(Path(p), size, max_pixels)) for i, p in chunk]


def die_with_parent() -> None:
    """Pool worker initializer: on Linux, get SIGKILL when the parent dies.

    Without it, a ``kill -9`` of the orchestrator while it decodes leaves forked workers
    waiting forever on their task queue (and holding the orchestrator's stdout open).
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError) as exc:  # no prctl in this libc: the worker just lacks the guard
        log.info("data.pool.no_pdeathsig", error=str(exc))
        return
    if os.getppid() == 1:  # the parent died before the guard was set
        os._exit(1)


class DecodePool:
    """A process pool started on first use, shared by every pass of one preparation.

    ``fork`` is used when the process has a single thread (cheap start, as PyTorch's
    DataLoader does); otherwise ``forkserver``, which is safe next to threads.
    """

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = None

    def map(self, fn: Callable, jobs: list, n_items: int) -> Iterator:
        """Map ``fn`` over ``jobs`` in order, in the pool when there is enough work."""
        if self.workers <= 1 or n_items < POOL_MIN_ITEMS:
            yield from map(fn, jobs)
            return
        if self._pool is None:
            methods = mp.get_all_start_methods()
            method = "fork" if "fork" in methods and threading.active_count() == 1 else "forkserver"
            if method not in methods:
                method = "spawn"
            self._pool = ProcessPoolExecutor(
                max_workers=self.workers, mp_context=mp.get_context(method), initializer=die_with_parent
            )
        yield from self._pool.map(fn, jobs)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def __enter__(self) -> DecodePool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def scan_sizes(
    source: DatasetSource, samples: list[Sample], skips: SkipReport, *, pool: DecodePool, max_pixels: int
) -> tuple[list[Sample], list[tuple[int, int]]]:
    """Header-only pass: (samples that open, their sizes); unopenable files are counted skips."""
    sizes: dict[int, tuple[int, int]] = {}
    files = [(i, str(s.path)) for i, s in enumerate(samples) if s.path is not None]
    for i, s in enumerate(samples):
        if s.path is None:
            arr = source.arrays[s.split][s.index]
            sizes[i] = (int(arr.shape[1]), int(arr.shape[0]))
    jobs = [(chunk, max_pixels) for chunk in _chunks(files)]
    for results in pool.map(_header_chunk, jobs, len(files)):
        for i, res in results:
            if isinstance(res, Header):
                sizes[i] = (res.width, res.height)
            else:
                skips.add(res[0], samples[i].path or samples[i].id, res[1])
    kept = sorted(sizes)
    return [samples[i] for i in kept], [sizes[i] for i in kept]


def _array_results(
    source: DatasetSource, samples: list[Sample], size: int
) -> Iterator[tuple[int, Decoded | tuple[str, str]]]:
    for i, s in enumerate(samples):
        arr = source.arrays[s.split][s.index]
        if arr.shape[0] == size and arr.shape[1] == size and (arr.ndim == 2 or arr.shape[2] in (1, 3)):
            square = arr.reshape(size, size, -1)
            spread = square.max(axis=2).astype(np.int16) - square.min(axis=2)
            digest = hashlib.blake2b(square.tobytes(), digest_size=16).hexdigest()
            mode = "L" if square.shape[2] == 1 else "RGB"
            yield i, Decoded(square, size, size, mode, bool(spread.max() <= 3), digest)
        else:
            yield i, decode_array(arr, size)


def decode_samples(
    source: DatasetSource,
    samples: list[Sample],
    size: int,
    skips: SkipReport,
    *,
    pool: DecodePool,
    max_pixels: int,
    alloc: Allocator = np.empty,
) -> Collected:
    """Decode ``samples`` to ``(N, size, size, 3)``; failures become counted skips."""
    x = alloc((len(samples), size, size, 3))
    out = Collected(x=x)
    files = [(i, str(s.path)) for i, s in enumerate(samples) if s.path is not None]
    in_memory = [s for s in samples if s.path is None]

    def stream() -> Iterator[tuple[int, Decoded | tuple[str, str]]]:
        jobs = [(chunk, size, max_pixels) for chunk in _chunks(files)]
        for results in pool.map(_decode_chunk, jobs, len(files)):
            yield from results
        offset = len(files)
        for j, res in _array_results(source, in_memory, size):
            yield offset + j, res

    ordered = [samples[i] for i, _ in files] + in_memory
    for i, res in stream():
        sample = ordered[i]
        if isinstance(res, tuple):
            skips.add(res[0], sample.path or sample.id, res[1])
            continue
        x[len(out.samples)] = res.array  # (S,S,1) broadcasts to 3 channels
        out.samples.append(sample)
        out.facts.append(ImageFacts(res.width, res.height, res.mode, res.gray, res.digest))
    out.x = x[: len(out.samples)]
    return out
