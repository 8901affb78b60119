"""Decode a dataset once into ``.npy`` arrays, with its metadata, and load it back.

On-disk layout of ``out_dir`` (all written atomically; ``meta.json`` last)::

    train_x.npy  (N, S, S, C) uint8     train_y.npy  (N,) int64
    val_x.npy    (M, S, S, C) uint8     val_y.npy    (M,) int64
    test_x.npy   (T, S, S, C) uint8     test_ids.json  ids of the test rows, in order
    meta.json    PreparedMeta (classes, in_chans, stored_size, mean/std, profile, fingerprint)

Test labels, when known, go only to ``private_dir/test_labels.json``, never to ``out_dir``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import structlog
from pydantic import BaseModel

from automodel._io import atomic_open, atomic_write_json, atomic_write_text, durable_replace, fsync_path
from automodel.data._collect import Collected, DecodePool, choose_stored_size, decode_samples, scan_sizes
from automodel.data._decode import MAX_PIXELS
from automodel.data._errors import DataError, SkipReport
from automodel.data._layout import warn_layout
from automodel.data._profile import DatasetProfile, build_profile
from automodel.data._source import SPLITS, DatasetSource, Sample, SubmissionFormat, resolve_source
from automodel.data._split import stratified_split

if TYPE_CHECKING:
    from automodel.interfaces import DataSpec

__all__ = [
    "DEFAULT_MEMORY_BUDGET",
    "FORMAT_VERSION",
    "PreparedData",
    "PreparedMeta",
    "prepare_dataset",
    "profile_dataset",
    "source_fingerprint",
]

log = structlog.get_logger(__name__)

FORMAT_VERSION = 1
DEFAULT_MEMORY_BUDGET = 2 * 1024**3
"""Prepared arrays larger than this (bytes, all splits together) are memory-mapped."""
META_FILE = "meta.json"
TEST_IDS_FILE = "test_ids.json"
PRIVATE_LABELS_FILE = "test_labels.json"
_ROWS_PER_WRITE = 2048
TINY_SIDE = 4
"""Images with a shorter side under ``max(TINY_SIDE, stored_size / 8)`` pixels are reported as tiny."""


class PreparedMeta(BaseModel):
    """Everything about the prepared arrays except the pixels (``meta.json``)."""

    format_version: int = FORMAT_VERSION
    fingerprint: str
    source_kind: str
    source_spec: str
    classes: list[str]
    num_classes: int
    in_chans: int
    """1 (grayscale) or 3 (RGB)."""
    stored_size: int
    """Images are ``stored_size`` squares: shorter side resized, longer side centre-cropped."""
    counts: dict[str, int]
    """Rows per split (``train``, ``val``, ``test``)."""
    class_counts: dict[str, list[int]]
    """Per-class counts for ``train`` and ``val``, in class-index order."""
    mean: list[float]
    """Per-channel mean of the train images in [0, 1]."""
    std: list[float]
    seed: int
    val_fraction: float
    val_from_folder: bool
    test_labeled: bool
    """Whether the harness holds test labels (in the private directory)."""
    submission: SubmissionFormat | None = None
    profile: DatasetProfile

    def data_spec(self, device: str = "cpu", description: str = "") -> DataSpec:
        """The :class:`~automodel.interfaces._contracts.DataSpec` for the data component."""
        from automodel.interfaces import DataSpec

        return DataSpec(
            num_classes=self.num_classes,
            in_chans=self.in_chans,
            stored_size=self.stored_size,
            num_train=self.counts.get("train", 0),
            class_counts=tuple(self.class_counts.get("train", [])),
            mean=tuple(self.mean),
            std=tuple(self.std),
            device=device,
            description=description or self.profile.description,
        )


@dataclass
class PreparedData:
    """Prepared arrays on disk plus their metadata."""

    out_dir: Path
    meta: PreparedMeta
    mmap: bool = False
    from_cache: bool = False
    """True when :func:`prepare_dataset` reused existing arrays without decoding."""
    source_changed: str = ""
    """Why the arrays were kept although the source files changed (``keep_prepared``), else empty."""
    _arrays: dict[str, tuple[np.ndarray, np.ndarray | None]] = field(default_factory=dict, repr=False)

    @classmethod
    def load(cls, out_dir: Path, *, memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET) -> PreparedData:
        """Open a prepared directory; arrays are memory-mapped when larger than the budget.

        Raises:
            DataError: no or unreadable ``meta.json`` (run :func:`prepare_dataset` first).
        """
        out_dir = Path(out_dir)
        meta_path = out_dir / META_FILE
        try:
            meta = PreparedMeta.model_validate_json(meta_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise DataError(
                f"{str(meta_path)!r} is missing or invalid ({exc}); run prepare_dataset first."
            ) from exc
        total = sum(p.stat().st_size for p in out_dir.glob("*.npy"))
        return cls(out_dir=out_dir, meta=meta, mmap=total > memory_budget_bytes)

    def arrays(self, split: str) -> tuple[np.ndarray, np.ndarray | None]:
        """``(x (N,S,S,C) uint8, y (N,) int64 | None)``; ``y`` is None for ``test``.

        Raises:
            DataError: unknown split, or a split that this dataset does not have.
        """
        if split not in SPLITS:
            raise DataError(f"Unknown split {split!r}; expected one of {', '.join(SPLITS)}.")
        if split not in self._arrays:
            x_path = self.out_dir / f"{split}_x.npy"
            if not x_path.is_file():
                raise DataError(f"{str(x_path)!r} does not exist: this dataset has no {split} split.")
            y_path = self.out_dir / f"{split}_y.npy"
            if self.mmap:
                x = np.load(x_path, mmap_mode="r")
                y = None if split == "test" else np.load(y_path, mmap_mode="r")
            else:
                x = np.load(x_path)
                y = None if split == "test" else np.load(y_path)
            self._arrays[split] = (x, y)
        return self._arrays[split]

    @property
    def test_ids(self) -> list[str]:
        """Ids of the ``test_x`` rows, in order (empty without a test split)."""
        path = self.out_dir / TEST_IDS_FILE
        return list(json.loads(path.read_text(encoding="utf-8"))) if path.is_file() else []


def _tmp(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")


def _write_npy(path: Path, arr: np.ndarray) -> None:
    with atomic_open(path, "wb") as fh:
        np.save(fh, arr)


def _write_images(
    path: Path, buf: np.ndarray, rows: np.ndarray, in_chans: int, stats: bool
) -> tuple[list[float], list[float]]:
    """Write ``buf[rows]`` as ``(N,S,S,in_chans)`` in chunks; optionally per-channel mean/std."""
    n, size = len(rows), buf.shape[1]
    tmp = _tmp(path)
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(n, size, size, in_chans))
    total = np.zeros(in_chans)
    total_sq = np.zeros(in_chans)
    for start in range(0, n, _ROWS_PER_WRITE):
        block = buf[rows[start : start + _ROWS_PER_WRITE]]
        if in_chans == 1:
            block = np.rint(block.mean(axis=3, keepdims=True)).astype(np.uint8)
        out[start : start + len(block)] = block
        if stats:
            f = block.reshape(-1, in_chans).astype(np.float64) / 255.0
            total += f.sum(axis=0)
            total_sq += (f * f).sum(axis=0)
    out.flush()
    del out
    durable_replace(tmp, path)
    pixels = max(n * size * size, 1)
    mean = total / pixels
    std = np.sqrt(np.maximum(total_sq / pixels - mean * mean, 0.0))
    return [round(float(v), 6) for v in mean], [round(float(max(v, 1e-6)), 6) for v in std]


def source_fingerprint(source: DatasetSource, settings: dict[str, Any]) -> str:
    """Hash of the source's files (path, size, mtime), labels, arrays and the settings."""
    h = hashlib.blake2b(digest_size=16)
    head = {
        "v": FORMAT_VERSION,
        "kind": source.kind,
        "spec": source.spec,
        "classes": source.classes,
        "test_labeled": source.test_labeled,
        "val_folder": source.val is not None,
        "submission": source.submission.model_dump() if source.submission else None,
        **settings,
    }
    h.update(json.dumps(head, sort_keys=True, default=str).encode())
    for split in SPLITS:
        for s in source.split(split):
            stamp = ""
            if s.path is not None:
                try:
                    st = s.path.stat()
                    stamp = f"{st.st_size}:{st.st_mtime_ns}"
                except OSError:
                    stamp = "missing"
            h.update(f"{split}|{s.id}|{s.label}|{s.path}|{s.index}|{stamp}\n".encode())
    for name in sorted(source.arrays):
        arr = np.ascontiguousarray(source.arrays[name])
        h.update(f"{name}{arr.shape}".encode())
        h.update(arr.tobytes())
    return h.hexdigest()


def _check_dirs(out_dir: Path, private_dir: Path) -> None:
    if private_dir == out_dir or out_dir in private_dir.parents:
        raise DataError(
            f"private_dir {str(private_dir)!r} is inside out_dir {str(out_dir)!r}; test labels must "
            "stay out of what component code reads. Choose a private_dir outside out_dir."
        )


def _write_private_labels(private_dir: Path, source: DatasetSource, test_ids: list[str]) -> None:
    path = private_dir / PRIVATE_LABELS_FILE
    if not source.test_labeled:
        path.unlink(missing_ok=True)
        return
    private_dir.mkdir(parents=True, exist_ok=True)
    by_id = {s.id: s.label for s in source.test}
    index = {c: i for i, c in enumerate(source.classes)}
    labels = [by_id[i] for i in test_ids]
    atomic_write_json(
        path, {"ids": test_ids, "labels": labels, "targets": [index[str(lab)] for lab in labels]}
    )


def _complete_meta(out_dir: Path, has_test: bool) -> dict[str, Any] | None:
    """``meta.json`` of a complete prepared directory, else None."""
    try:
        meta = json.loads((out_dir / META_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    needed = ["train_x.npy", "train_y.npy", "val_x.npy", "val_y.npy"]
    if has_test:
        needed += ["test_x.npy", TEST_IDS_FILE]
    return meta if isinstance(meta, dict) and all((out_dir / n).is_file() for n in needed) else None


def prepare_dataset(
    source: DatasetSource | str | Path,
    out_dir: Path,
    *,
    private_dir: Path,
    seed: int = 0,
    val_fraction: float = 0.2,
    stored_size: int | None = None,
    memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET,
    workers: int = 2,
    max_pixels: int = MAX_PIXELS,
    keep_prepared: bool = False,
    **resolve_options: Any,
) -> PreparedData:
    """Decode every image once into ``.npy`` arrays in ``out_dir`` (see the module docstring).

    A second call with the same source files and settings reuses the arrays (fingerprint
    in ``meta.json``). Without a ``val`` folder, a seeded stratified ``val_fraction`` of
    train becomes the validation split. ``stored_size`` defaults to the rule of
    :func:`~automodel.data._collect.choose_stored_size`.

    Args:
        source: a resolved source or a spec for :func:`resolve_source` (with ``resolve_options``).
        out_dir: where the arrays and ``meta.json`` go (readable by component code).
        private_dir: where known test labels go; must not be inside ``out_dir``.
        workers: decoding processes (a pool is used only for larger datasets).
        keep_prepared: when ``out_dir`` already holds this source's arrays but its files changed
            since (vanished, rewritten, added), keep the arrays instead of decoding again, with a
            warning (``PreparedData.source_changed``): a resumed run goes on with the data its
            attempts were scored on.

    Raises:
        DataError: bad layout, fewer than two classes left after decoding, or misplaced dirs.
    """
    if not isinstance(source, DatasetSource):
        source = resolve_source(source, **resolve_options)
    out_dir, private_dir = Path(out_dir).expanduser().resolve(), Path(private_dir).expanduser().resolve()
    _check_dirs(out_dir, private_dir)
    if stored_size is not None and not 8 <= stored_size <= 1024:
        raise DataError(
            f"stored_size={stored_size} is out of range; use 8..1024 or None to choose from the data."
        )
    settings = {
        "seed": seed,
        "val_fraction": val_fraction,
        "stored_size": stored_size,
        "max_pixels": max_pixels,
    }
    fp = source_fingerprint(source, settings)
    existing = _complete_meta(out_dir, bool(source.test) and not keep_prepared)
    if existing is not None and existing.get("fingerprint") == fp:
        prepared = PreparedData.load(out_dir, memory_budget_bytes=memory_budget_bytes)
        prepared.from_cache = True
        _write_private_labels(private_dir, source, prepared.test_ids)
        log.info("data.prepare.cached", out_dir=str(out_dir), fingerprint=fp)
        return prepared
    if (
        keep_prepared
        and existing is not None
        and (existing.get("source_kind"), existing.get("source_spec"))
        == (
            source.kind,
            source.spec,
        )
    ):
        return _keep_changed(source, out_dir, private_dir, existing, memory_budget_bytes)
    started = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / META_FILE).unlink(missing_ok=True)  # arrays change below; meta.json is the commit mark
    fsync_path(out_dir)
    work = out_dir / f".work-{uuid.uuid4().hex[:8]}"
    work.mkdir()
    try:
        with DecodePool(workers) as pool:
            meta = _prepare(source, out_dir, private_dir, work, fp, seed, val_fraction, stored_size,
                            memory_budget_bytes, pool, max_pixels)  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)
    log.info(
        "data.prepare.done",
        out_dir=str(out_dir),
        counts=meta.counts,
        stored_size=meta.stored_size,
        in_chans=meta.in_chans,
        skipped=meta.profile.skipped,
        seconds=round(time.perf_counter() - started, 2),
    )
    return PreparedData.load(out_dir, memory_budget_bytes=memory_budget_bytes)


def _keep_changed(
    source: DatasetSource,
    out_dir: Path,
    private_dir: Path,
    existing: dict[str, Any],
    memory_budget_bytes: int,
) -> PreparedData:
    prepared = PreparedData.load(out_dir, memory_budget_bytes=memory_budget_bytes)
    now = {name: len(source.split(name)) for name in SPLITS}
    before = existing.get("counts", {})
    message = (
        f"the dataset {source.spec!r} changed since it was prepared in {str(out_dir)!r} (files vanished, were "
        f"rewritten or added; it now lists {now['train']} train, {now['val']} val and {now['test']} test files, "
        f"the prepared copy holds {before}). Kept the prepared copy, so every attempt is scored on the same "
        "data; start a new run to use the changed dataset."
    )
    log.warning("data.prepare.source_changed", message=message, out_dir=str(out_dir))
    prepared.from_cache = True
    prepared.source_changed = message
    if source.test_labeled and not (private_dir / PRIVATE_LABELS_FILE).is_file():
        if {s.id for s in source.test} >= set(prepared.test_ids):
            _write_private_labels(private_dir, source, prepared.test_ids)
        else:
            log.warning("data.prepare.test_labels_lost", message="test labels are missing; no test score")
    return prepared


def profile_dataset(
    source: DatasetSource | str | Path,
    *,
    seed: int = 0,
    val_fraction: float = 0.2,
    stored_size: int | None = None,
    workers: int = 2,
    **resolve_options: Any,
) -> DatasetProfile:
    """Profile a dataset without keeping the arrays (decodes everything in a temporary folder).

    Prefer ``prepare_dataset(...).meta.profile`` when the arrays are needed anyway.
    """
    import tempfile

    with tempfile.TemporaryDirectory(prefix="automodel-profile-") as tmp:
        prepared = prepare_dataset(
            source,
            Path(tmp) / "out",
            private_dir=Path(tmp) / "private",
            seed=seed,
            val_fraction=val_fraction,
            stored_size=stored_size,
            workers=workers,
            **resolve_options,
        )
        return prepared.meta.profile


def _check_class_sizes(
    source: DatasetSource, train_y: np.ndarray, val: Collected, skips: SkipReport, warnings: list[str]
) -> None:
    """Stop on classes too small to train and validate on; warn on classes absent from a val folder.

    Without a val folder a class needs 2 train images (one is cut for validation); with one, 1.

    Raises:
        DataError: naming every class below the minimum and its count.
    """
    need = 2 if source.val is None else 1
    per_class = np.bincount(train_y, minlength=len(source.classes)).tolist()
    small = [(c, n) for c, n in zip(source.classes, per_class, strict=True) if n < need]
    if small:
        shown = ", ".join(f"{c!r} ({n})" for c, n in small[:20]) + (" ..." if len(small) > 20 else "")
        why = (
            "one to train on and one to validate on"
            if need == 2
            else "the val folder holds the validation images"
        )
        where = (
            "Every class"
            if len(small) == len(source.classes)
            else f"{len(small)} of {len(source.classes)} classes"
        )
        skipped = f" Skipped files: {skips.as_dict()}." if skips.total else ""
        raise DataError(
            f"{where} of {source.spec!r} have fewer than {need} usable train image(s): {shown}. Each class needs "
            f"at least {need} ({why}). Add images to these classes, or remove them (their folders or their rows "
            f"in the labels CSV).{skipped}"
        )
    if source.val is not None:
        index = {c: i for i, c in enumerate(source.classes)}
        val_counts = np.bincount([index[str(s.label)] for s in val.samples], minlength=len(source.classes))
        missing = [c for c, n in zip(source.classes, val_counts.tolist(), strict=True) if n == 0]
        if missing:
            warn_layout(
                warnings,
                "data.prepare.classes_without_val_images",
                f"the val folder has no image of class(es) {missing[:20]}; their validation accuracy cannot be "
                "measured. Add val images for them, or remove the val folder to split val from train.",
                classes=missing,
            )


def _count_tiny(got: dict[str, Collected], size: int, warnings: list[str]) -> int:
    """Count images whose shorter side is tiny for the stored size; one warning sentence when any are."""
    limit = max(TINY_SIDE, size // 8)
    tiny = [(s, f) for c in got.values() for s, f in zip(c.samples, c.facts, strict=True)
            if min(f.width, f.height) < limit]  # fmt: skip
    if tiny:
        sample, fact = tiny[0]
        total = sum(len(c.samples) for c in got.values())
        warn_layout(
            warnings,
            "data.prepare.tiny_images",
            f"{len(tiny)} of {total} images are tiny (shorter side under {limit} px; e.g. "
            f"{sample.path or sample.id} at {fact.width}x{fact.height}). They were kept and upscaled to "
            f"{size}x{size}, where they carry almost no detail: check these files.",
            count=len(tiny),
        )
    return len(tiny)


def _prepare(
    source: DatasetSource,
    out_dir: Path,
    private_dir: Path,
    work: Path,
    fp: str,
    seed: int,
    val_fraction: float,
    stored_size: int | None,
    memory_budget_bytes: int,
    pool: DecodePool,
    max_pixels: int,
) -> PreparedMeta:
    skips = SkipReport()
    skips.merge(source.skips)
    todo: dict[str, list[Sample]] = {s: source.split(s) for s in SPLITS}
    if stored_size is None:
        sizes: list[tuple[int, int]] = []
        for name in SPLITS:
            todo[name], found = scan_sizes(source, todo[name], skips, pool=pool, max_pixels=max_pixels)
            sizes += found
        stored_size = choose_stored_size(sizes)
    size = stored_size
    in_ram = sum(len(v) for v in todo.values()) * size * size * 3 <= memory_budget_bytes

    def alloc(shape: tuple[int, ...]) -> np.ndarray:
        if in_ram:
            return np.empty(shape, dtype=np.uint8)
        return np.lib.format.open_memmap(
            work / f"{uuid.uuid4().hex}.npy", mode="w+", dtype=np.uint8, shape=shape
        )

    got: dict[str, Collected] = {
        name: decode_samples(source, todo[name], size, skips, pool=pool, max_pixels=max_pixels, alloc=alloc)
        for name in SPLITS
    }
    index = {c: i for i, c in enumerate(source.classes)}
    train_y_all = np.array([index[str(s.label)] for s in got["train"].samples], dtype=np.int64)
    present = sorted({source.classes[i] for i in train_y_all.tolist()})
    if len(present) < 2:
        raise DataError(
            f"After skipping unreadable files, {source.spec!r} has {len(present)} class(es) with train images "
            f"({present}); classification needs at least 2. Skipped: {skips.as_dict()}."
        )
    warnings = list(source.warnings)
    _check_class_sizes(source, train_y_all, got["val"], skips, warnings)

    if source.val is None:
        tr_rows, va_rows = stratified_split(train_y_all, val_fraction, seed)
        parts = {"train": (got["train"], tr_rows), "val": (got["train"], va_rows)}
    else:
        parts = {"train": (got["train"], np.arange(len(got["train"].samples))),
                 "val": (got["val"], np.arange(len(got["val"].samples)))}  # fmt: skip
    if got["test"].samples:
        parts["test"] = (got["test"], np.arange(len(got["test"].samples)))

    facts = [f for c in got.values() for f in c.facts]
    tiny = _count_tiny(got, size, warnings)
    in_chans = 1 if all(f.gray for f in facts) else 3
    counts: dict[str, int] = {}
    class_counts: dict[str, list[int]] = {}
    labels: dict[str, list[str | None]] = {}
    digests: dict[str, list[str]] = {}
    mean: list[float] = []
    std: list[float] = []
    for name, (col, rows) in parts.items():
        m, s = _write_images(out_dir / f"{name}_x.npy", col.x, rows, in_chans, stats=name == "train")
        if name == "train":
            mean, std = m, s
        kept = [col.samples[i] for i in rows.tolist()]
        counts[name] = len(kept)
        labels[name] = [smp.label for smp in kept]
        digests[name] = [col.facts[i].digest for i in rows.tolist()]
        if name != "test":
            y = np.array([index[str(smp.label)] for smp in kept], dtype=np.int64)
            _write_npy(out_dir / f"{name}_y.npy", y)
            class_counts[name] = np.bincount(y, minlength=len(source.classes)).tolist()
    test_ids = [smp.id for smp in got["test"].samples]
    if test_ids:
        atomic_write_json(out_dir / TEST_IDS_FILE, test_ids)
    else:
        for stale in ("test_x.npy", TEST_IDS_FILE):
            (out_dir / stale).unlink(missing_ok=True)
    _write_private_labels(private_dir, source, test_ids)

    profile = build_profile(
        source_kind=source.kind,
        source=source.spec,
        classes=source.classes,
        labels=labels,
        sizes=[(f.width, f.height) for f in facts],
        modes=[f.mode for f in facts],
        grays=[f.gray for f in facts],
        digests=digests,
        skipped=skips.as_dict(),
        test_labeled=source.test_labeled,
        val_from_folder=source.val is not None,
        stored_size=size,
        description=source.description,
        warnings=warnings,
        tiny_images=tiny,
    )
    meta = PreparedMeta(
        fingerprint=fp,
        source_kind=source.kind,
        source_spec=source.spec,
        classes=source.classes,
        num_classes=len(source.classes),
        in_chans=in_chans,
        stored_size=size,
        counts=counts,
        class_counts=class_counts,
        mean=mean,
        std=std,
        seed=seed,
        val_fraction=val_fraction,
        val_from_folder=source.val is not None,
        test_labeled=source.test_labeled,
        submission=source.submission,
        profile=profile,
    )
    atomic_write_text(out_dir / META_FILE, meta.model_dump_json(indent=1))
    return meta
