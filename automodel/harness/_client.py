"""The trusted side of the harness: build a job directory, run it in an executor, score what comes back.

A job directory (layout in :mod:`automodel.executors`' protocol) holds only what the job
needs: for training the train images and labels, the validation *images*, the component
files and the local weights; for prediction the images of one split, the components and
the checkpoint. Data and weights are linked in (hard links where the filesystem allows,
else symlinks) and listed as read-only paths for sandboxed executors. Validation and test
labels stay here: :class:`~automodel.executors.ValidationScorer` scores the predictions the
candidate writes, and nothing the candidate reports about itself becomes a score.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from automodel._io import atomic_open, open_regular
from automodel.data import PreparedData
from automodel.executors import (
    COMPONENTS_DIR,
    DATA_DIR,
    GUARD_ENV,
    JOB_FILE,
    OUT_DIR,
    WEIGHTS_DIR,
    ComponentError,
    ExecutionRequest,
    ExecutionResult,
    Executor,
    HarnessJob,
    ValidationScorer,
    export_name,
    predictions_name,
    read_predictions,
    resolve_executor,
    write_json_atomic,
)
from automodel.interfaces import COMPONENT_FILES, PretrainedInfo, read_knobs

__all__ = ["CandidateRunner", "PredictionError", "copy_components", "declared_features"]

FEATURES_SUBDIR = "features"
"""Feature sets in a job directory (``features/KEY/``); ``out/features/`` in a features job."""
JOB_SUBDIR = "job"
"""The candidate's job directory inside the trusted ``workdir`` of a train or predict call."""
_TRUSTED_KEYS = frozenset({"val_accuracy", "val_loss", "best_val_accuracy", "per_class_val_accuracy", "confused_pairs",
                           "weights"})


def copy_components(src: Path, dst: Path) -> None:
    """Copy the three component files from ``src`` into ``dst`` (created)."""
    dst.mkdir(parents=True, exist_ok=True)
    for name in COMPONENT_FILES.values():
        if not (src / name).is_file():
            raise FileNotFoundError(
                f"{src / name} is missing: a candidate needs data.py, model.py and training.py "
                f"(start from automodel/interfaces/reference/)"
            )
        shutil.copyfile(src / name, dst / name)


class PredictionError(RuntimeError):
    """A predict job failed; ``result`` says how (crash, timeout, invalid predictions)."""

    def __init__(self, result: ExecutionResult) -> None:
        self.result = result
        detail = result.error.message if result.error else ""
        super().__init__(f"the predict job ended with status {result.status}: {detail}"[:1000])


def _is_under(path: Path, roots: list[Path]) -> bool:
    real = os.path.realpath(path)
    return any(real == r or real.startswith(r + os.sep) for r in (os.path.realpath(p) for p in roots))


class CandidateRunner:
    """Runs candidates of one prepared dataset through an executor, and scores them here.

    Args:
        data_dir: a folder written by :func:`automodel.data.prepare_dataset`.
        executor: where candidates run: an :class:`Executor`, a registered name, or ``None``/``"auto"``
            (the bubblewrap sandbox where it can start, else a local subprocess).
        pretrained: which pretrained weights component code may load.
        forbidden_paths: held-out data (test labels, the raw dataset): never linked into a job, and
            refused by the in-process honest-mistake guard under executors that do not isolate files.
        device: ``"auto"``, ``"cpu"`` or ``"cuda[:N]"``.
        memory_limit_mb: kill a candidate whose processes use more than this.
        grace_s: seconds beyond the training budget before the executor kills it
            (model building, smoke test and the last evaluation take time too).
        features_dir: the run's cache of pretrained features (written by features jobs; a train job
            sees the train and validation features of each set, a predict job those of its split).
        env: extra environment of every job (e.g. the ``CUDA_VISIBLE_DEVICES`` of this candidate's GPU).
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        executor: Executor | str | None = None,
        pretrained: PretrainedInfo | None = None,
        forbidden_paths: list[Path] | None = None,
        device: str = "auto",
        memory_limit_mb: int | None = None,
        grace_s: float = 120.0,
        description: str = "",
        max_epochs: int | None = None,
        threads: int = 0,
        features_dir: Path | None = None,
        env: dict[str, str] | None = None,
    ):
        self.data_dir = Path(data_dir)
        self.executor = resolve_executor(executor)
        self.pretrained = pretrained or PretrainedInfo()
        self.forbidden_paths = list(forbidden_paths or [])
        self.device = device
        self.memory_limit_mb = memory_limit_mb
        self.grace_s = grace_s
        self.description = description
        self.max_epochs = max_epochs
        self.threads = threads
        self.features_dir = Path(features_dir) if features_dir is not None else None
        self.env = dict(env or {})
        self._data: PreparedData | None = None

    @property
    def data(self) -> PreparedData:
        if self._data is None:
            self._data = PreparedData.load(self.data_dir)
        return self._data

    # -- job directories -------------------------------------------------------------------------

    def _link(self, src: Path, dst: Path, readonly: list[Path]) -> None:
        """Put ``src`` at ``dst`` without copying; record what a sandbox must show read-only."""
        if _is_under(src, self.forbidden_paths):
            raise ValueError(f"{src} is held-out data and may not be given to a candidate")
        try:
            os.link(src, dst)
            readonly.append(dst)  # the job dir is writable: bind the link itself read-only on top
        except OSError:
            os.symlink(os.path.realpath(src), dst)
            readonly.append(Path(os.path.realpath(src)))

    def _prepare(
        self, components_dir: Path, workdir: Path, job: HarnessJob, data_files: list[str],
        checkpoint: Path | None = None, feature_splits: tuple[str, ...] = (), init_checkpoint: Path | None = None,
    ) -> tuple[Path, list[Path]]:
        job_dir = workdir / JOB_SUBDIR
        if job_dir.exists():
            shutil.rmtree(job_dir)
        (job_dir / COMPONENTS_DIR).mkdir(parents=True)
        for name in COMPONENT_FILES.values():  # a missing file is the harness's to report, attributed
            if (components_dir / name).is_file():
                shutil.copyfile(components_dir / name, job_dir / COMPONENTS_DIR / name)
        readonly: list[Path] = []
        (job_dir / DATA_DIR).mkdir()
        shutil.copyfile(self.data_dir / "meta.json", job_dir / DATA_DIR / "meta.json")
        for name in data_files:
            self._link(self.data_dir / name, job_dir / DATA_DIR / name, readonly)
        weights: dict[str, str] = {}
        for model_name, path in self.pretrained.local.items():
            src = Path(path)
            if not src.is_file():
                continue  # the model component reports a missing weight file itself
            (job_dir / WEIGHTS_DIR).mkdir(exist_ok=True)
            rel = f"{WEIGHTS_DIR}/{len(weights)}_{src.name}"
            self._link(src, job_dir / rel, readonly)
            weights[model_name] = rel
        if checkpoint is not None:
            self._link(checkpoint, job_dir / "checkpoint.pt", readonly)
        update: dict[str, Any] = {"local_weights": weights}
        if init_checkpoint is not None:
            self._link(init_checkpoint, job_dir / "init.pt", readonly)
            update["init_checkpoint"] = "init.pt"
        if feature_splits and self._link_features(job_dir / FEATURES_SUBDIR, feature_splits, readonly):
            update["features_dir"] = FEATURES_SUBDIR
        (job_dir / OUT_DIR).mkdir()
        job.model_copy(update=update).write(job_dir / JOB_FILE)
        return job_dir, readonly

    def _link_features(self, dst: Path, splits: tuple[str, ...], readonly: list[Path]) -> bool:
        """Link the given splits of every extracted feature set (no labels are in the cache)."""
        if self.features_dir is None or not self.features_dir.is_dir():
            return False
        linked = False
        for set_dir in sorted(p for p in self.features_dir.iterdir() if p.is_dir()):
            if not (set_dir / "meta.json").is_file():
                continue  # an extraction that did not finish
            (dst / set_dir.name).mkdir(parents=True)
            shutil.copyfile(set_dir / "meta.json", dst / set_dir.name / "meta.json")
            for split in splits:
                if (set_dir / f"{split}.npy").is_file():
                    self._link(set_dir / f"{split}.npy", dst / set_dir.name / f"{split}.npy", readonly)
                    linked = True
        return linked

    def _job(self, time_budget_s: float, **kw: Any) -> HarnessJob:
        return HarnessJob(
            time_budget_s=time_budget_s,
            device=self.device,
            hub_available=self.pretrained.hub_available,
            description=self.description,
            max_epochs=self.max_epochs,
            threads=self.threads,
            **kw,
        )

    def _request(self, workdir: Path, job_dir: Path, readonly: list[Path], timeout_s: float) -> ExecutionRequest:
        env = {"HF_HUB_OFFLINE": "1"} if not self.pretrained.hub_available else {}
        env.update(self.env)
        if not self.executor.isolates_filesystem and self.forbidden_paths:
            env[GUARD_ENV] = os.pathsep.join(str(Path(p).resolve()) for p in self.forbidden_paths)
        return ExecutionRequest(
            argv=[sys.executable, "-m", "automodel.harness", "--job", str(job_dir / JOB_FILE)],
            workdir=workdir,
            job_dir=job_dir,
            cwd=job_dir,
            readonly_paths=readonly,
            timeout_s=timeout_s,
            memory_limit_mb=self.memory_limit_mb,
            env=env,
            gpus=not self.device.startswith("cpu"),
        )

    @staticmethod
    def _clean(job_dir: Path) -> None:
        """Drop the inputs and the unused checkpoints of a finished job (its log and report stay)."""
        for sub in (DATA_DIR, WEIGHTS_DIR, FEATURES_SUBDIR):
            shutil.rmtree(job_dir / sub, ignore_errors=True)
        for name in ("checkpoint.pt", "init.pt"):
            (job_dir / name).unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            for path in (job_dir / OUT_DIR).iterdir():  # scored already: the numbers are in metrics.json
                if path.suffix in (".pt", ".npy") or path.is_symlink():
                    path.unlink()

    # -- train -----------------------------------------------------------------------------------

    def train(
        self,
        components_dir: Path,
        workdir: Path,
        *,
        time_budget_s: float,
        seed: int = 0,
        init_checkpoint: Path | None = None,
        on_event: Callable[[dict[str, Any]], None] | None = None,
    ) -> ExecutionResult:
        """Train one candidate and score it here.

        ``workdir`` receives the log, the trusted ``metrics.json`` and the best ``checkpoint.pt``;
        the candidate itself only sees ``workdir/job``. ``result.result`` is the trusted metrics.
        ``init_checkpoint``: warm start from these weights (loaded where names and shapes match).
        """
        workdir = Path(workdir).resolve()
        workdir.mkdir(parents=True, exist_ok=True)
        for stale in ("metrics.json", "checkpoint.pt"):
            (workdir / stale).unlink(missing_ok=True)
        job = self._job(time_budget_s, seed=seed)
        job_dir, readonly = self._prepare(
            Path(components_dir), workdir, job, ["train_x.npy", "train_y.npy", "val_x.npy"],
            feature_splits=("train", "train_flip", "val"),
            init_checkpoint=Path(init_checkpoint) if init_checkpoint is not None else None,
        )
        labels = np.load(self.data_dir / "val_y.npy", allow_pickle=False)
        scorer = ValidationScorer(job_dir / OUT_DIR, labels, int(self.data.meta.num_classes))
        relayed: list[dict[str, Any]] = []
        lock = threading.Lock()

        def relay(event: dict[str, Any]) -> None:
            # Whatever numbers the candidate puts in its events, the ones passed on are ours.
            clean = {k: v for k, v in event.items() if k not in _TRUSTED_KEYS}
            if event.get("event") == "epoch":
                scorer.update()
                mine = [s for (e, _), s in scorer.scores.items() if e == event.get("epoch")]
                if mine:
                    top = max(mine, key=lambda s: s.accuracy)
                    clean.update(val_accuracy=round(top.accuracy, 5), val_loss=round(top.loss, 5))
            with lock:
                relayed.append(clean)
            if on_event is not None:
                on_event(clean)

        request = self._request(workdir, job_dir, readonly, time_budget_s + self.grace_s)
        try:
            result = self.executor.run(request, on_event=relay)
            result = self._score(result, scorer, workdir)
        finally:
            self._clean(job_dir)
        return result.model_copy(update={"events": relayed})

    def _score(self, result: ExecutionResult, scorer: ValidationScorer, workdir: Path) -> ExecutionResult:
        if not result.ok:
            return result.model_copy(update={"result": None})
        scorer.update()
        metrics = scorer.metrics(result.result or {}, list(self.data.meta.classes))
        checkpoint = workdir / "checkpoint.pt"
        if metrics is None or not scorer.take_best_checkpoint(checkpoint):
            error = ComponentError(
                component="harness",
                error_type="NoPredictions",
                message="The candidate finished without valid validation predictions and their checkpoint in "
                f"out/ ({', '.join(scorer.rejected) or 'none written'}), so it has no score.",
            )
            return result.model_copy(update={"status": "crashed", "result": None, "error": error})
        metrics["checkpoint"] = str(checkpoint)
        write_json_atomic(workdir / "metrics.json", metrics)
        return result.model_copy(update={"result": metrics})

    # -- predict ---------------------------------------------------------------------------------

    def predict(
        self,
        components_dir: Path,
        checkpoint: Path,
        workdir: Path,
        *,
        split: str = "test",
        timeout_s: float = 600.0,
        on_event: Callable[[dict[str, Any]], None] | None = None,
    ) -> ExecutionResult:
        """Predict ``split`` with a trained candidate in a job that sees only those images and the weights.

        ``workdir`` receives ``predictions.json`` (``pred`` and ``confidence`` per row, computed here from
        the candidate's log-probabilities) and ``{split}_log_probs.npy``. Scoring them is the caller's.
        """
        if split not in ("val", "test"):
            raise ValueError(f"split must be 'val' or 'test', got {split!r}")
        workdir = Path(workdir).resolve()
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "predictions.json").unlink(missing_ok=True)
        job = self._job(1.0, mode="predict", split=split)
        job_dir, readonly = self._prepare(
            Path(components_dir), workdir, job, [f"{split}_x.npy"], checkpoint=Path(checkpoint), feature_splits=(split,)
        )
        request = self._request(workdir, job_dir, readonly, timeout_s)
        try:
            result = self.executor.run(request, on_event=on_event)
            if not result.ok:
                return result.model_copy(update={"result": None})
            rows = int(self.data.meta.counts.get(split, 0))
            dir_fd = os.open(job_dir / OUT_DIR, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
            try:
                scores = read_predictions(Path(predictions_name(split)), rows, int(self.data.meta.num_classes),
                                          dir_fd=dir_fd)
            finally:
                os.close(dir_fd)
        finally:
            self._clean(job_dir)
        if scores is None:
            error = ComponentError(component="harness", error_type="NoPredictions",
                                   message=f"The predict job wrote no valid {predictions_name(split)} "
                                   f"({rows} rows x {self.data.meta.num_classes} classes expected).")
            return result.model_copy(update={"status": "crashed", "result": None, "error": error})
        np.save(workdir / f"{split}_log_probs.npy", scores.astype(np.float32), allow_pickle=False)
        shifted = np.exp(scores - scores.max(axis=1, keepdims=True))
        probs = shifted / shifted.sum(axis=1, keepdims=True)
        out = {"pred": probs.argmax(1).tolist(), "confidence": [round(float(p), 4) for p in probs.max(1)]}
        write_json_atomic(workdir / "predictions.json", out)
        return result.model_copy(update={"result": {"num_predictions": rows, "split": split}})

    def predict_split(self, candidate_dir: Path, split: str = "test", *, workdir: Path | None = None) -> np.ndarray:
        """Log-probabilities ``(rows, classes)`` of ``split`` from the candidate in ``candidate_dir``.

        ``candidate_dir`` holds the three component files and ``checkpoint.pt`` (e.g. the run's ``best/``).

        Raises:
            PredictionError: the predict job failed (its :class:`ExecutionResult` is attached).
        """
        candidate_dir = Path(candidate_dir)
        workdir = Path(workdir) if workdir is not None else candidate_dir.parent / f"predict_{split}"
        result = self.predict(candidate_dir, candidate_dir / "checkpoint.pt", workdir, split=split)
        if not result.ok:
            raise PredictionError(result)
        return np.load(workdir / f"{split}_log_probs.npy", allow_pickle=False)

    # -- export ----------------------------------------------------------------------------------

    def export(
        self,
        components_dir: Path,
        checkpoint: Path,
        workdir: Path,
        *,
        fmt: str = "onnx",
        timeout_s: float = 600.0,
        on_event: Callable[[dict[str, Any]], None] | None = None,
    ) -> ExecutionResult:
        """Trace a trained candidate with its preprocessing into one model file, in a job.

        The job sees the components, the checkpoint, the weight files and the dataset's metadata
        (no images, no labels). On success the file is copied out of the job into ``workdir``
        (``workdir / export_name(fmt)``, a regular file, never a link) and ``result.result`` is the
        harness's report (input and output description, its own check of the file).
        """
        name = export_name(fmt)
        workdir = Path(workdir).resolve()
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / name).unlink(missing_ok=True)
        job = self._job(1.0, mode="export", export_format=fmt)
        job_dir, readonly = self._prepare(Path(components_dir), workdir, job, [], checkpoint=Path(checkpoint))
        request = self._request(workdir, job_dir, readonly, timeout_s)
        try:
            result = self.executor.run(request, on_event=on_event)
            if result.ok and not _copy_out(job_dir / OUT_DIR, name, workdir / name):
                error = ComponentError(component="harness", error_type="NoExport",
                                       message=f"The export job finished without a regular file out/{name}.")
                result = result.model_copy(update={"status": "crashed", "error": error})
        finally:
            self._clean(job_dir)
            shutil.rmtree(job_dir / OUT_DIR, ignore_errors=True)
        return result

    # -- features --------------------------------------------------------------------------------

    def extract_features(
        self,
        key: str,
        workdir: Path,
        *,
        timeout_s: float = 1800.0,
        flip: bool = True,
        on_event: Callable[[dict[str, Any]], None] | None = None,
    ) -> ExecutionResult:
        """Extract the pretrained feature set ``key`` into the run's feature cache (``flip``: with the
        mirrored training images).

        Trusted code only (no component is imported), still run as an executor job: it sees the
        images, the weights and its own output folder, and the set is moved into the cache here.
        """
        if self.features_dir is None:
            raise ValueError("this runner has no features_dir; pass features_dir= to CandidateRunner")
        self.features_dir.mkdir(parents=True, exist_ok=True)
        workdir = Path(workdir).resolve()
        workdir.mkdir(parents=True, exist_ok=True)
        images = [f"{s}_x.npy" for s in ("train", "val", "test") if (self.data_dir / f"{s}_x.npy").is_file()]
        # PreparedData.arrays reads labels beside the images: this trusted job may have the train and
        # validation labels (the cache it writes holds features only).
        labels = [f"{s}_y.npy" for s in ("train", "val") if (self.data_dir / f"{s}_y.npy").is_file()]
        job = self._job(1.0, mode="features", features_key=key, features_flip=flip)
        job_dir, readonly = self._prepare(workdir, workdir, job, images + labels)
        request = self._request(workdir, job_dir, readonly, timeout_s)
        try:
            result = self.executor.run(request, on_event=on_event)
            produced = job_dir / OUT_DIR / FEATURES_SUBDIR
            if result.ok and produced.is_dir():
                for set_dir in produced.iterdir():
                    if set_dir.is_dir() and not set_dir.is_symlink():
                        target = self.features_dir / set_dir.name
                        shutil.rmtree(target, ignore_errors=True)
                        shutil.move(str(set_dir), str(target))
        finally:
            self._clean(job_dir)
        return result

    def ensure_features(
        self,
        components_dir: Path,
        workdir: Path,
        *,
        timeout_s: float = 1800.0,
        on_event: Callable[[dict[str, Any]], None] | None = None,
    ) -> tuple[str | None, ExecutionResult | None]:
        """Extract the feature set that ``components_dir/data.py`` names (``FEATURES = "..."``), once.

        The mirrored training images are extracted too unless the component says ``HFLIP = False``
        (a recipe that does not flip never reads them); a set cached without them is extracted
        again for a component that flips.

        Returns the key (None when the data component uses images) and the extraction
        result (None when the set was already cached). ``timeout_s`` bounds the extraction
        (a run passes what is left of its clock, so an extraction never runs past the budget).
        """
        from automodel.features import feature_keys, features_ready

        knobs = _data_knobs(Path(components_dir) / "data.py")  # read once, never run
        spec = _features_of(knobs)
        if not spec or self.features_dir is None:
            return spec, None
        flip = _flip_of(knobs)
        fingerprint = json.loads((self.data_dir / "meta.json").read_text(encoding="utf-8")).get("fingerprint", "")
        done: ExecutionResult | None = None
        deadline = time.monotonic() + timeout_s
        for key in feature_keys(spec):  # several sets joined by "+": each is extracted once
            if features_ready(self.features_dir, key, fingerprint, flip=flip):
                continue
            if on_event is not None:
                on_event({"event": "features", "key": key,
                          "message": f"extracting pretrained features {key} (once per run)"})
            result = self.extract_features(key, Path(workdir) / f"features-{key.replace('@', '-')}",
                                           timeout_s=max(1.0, deadline - time.monotonic()), flip=flip,
                                           on_event=on_event)
            if done is not None:
                result = result.model_copy(update={"duration_s": done.duration_s + result.duration_s})
            done = result
            if not result.ok:
                break
        return spec, done


_MAX_EXPORT_BYTES = 8 * 1024**3


def _copy_out(out_dir: Path, name: str, dst: Path) -> bool:
    """Copy the regular file ``out_dir/name`` (links refused, size capped) to ``dst``; whether it was there."""
    try:
        dir_fd = os.open(out_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        fd = open_regular(name, dir_fd=dir_fd)
    finally:
        os.close(dir_fd)
    if fd is None:
        return False
    with os.fdopen(fd, "rb") as src:
        st = os.fstat(src.fileno())  # a regular file (open_regular): only its size is left to check
        if st.st_size > _MAX_EXPORT_BYTES or st.st_size == 0:
            return False
        with atomic_open(dst, "wb") as out:
            shutil.copyfileobj(src, out, 1024 * 1024)
    return True


def _data_knobs(data_py: Path) -> dict[str, Any]:
    try:
        return read_knobs(Path(data_py).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _features_of(knobs: dict[str, Any]) -> str | None:
    value = knobs.get("FEATURES")
    return (value.strip() or None) if isinstance(value, str) else None


def declared_features(data_py: Path) -> str | None:
    """The module-level ``FEATURES = "..."`` string of a data component, if any (read, never run)."""
    return _features_of(_data_knobs(data_py))


def _flip_of(knobs: dict[str, Any]) -> bool:
    return knobs.get("HFLIP") is not False  # only a recipe that never flips goes without the mirrored view


def declared_flip(data_py: Path) -> bool:
    """False only when a data component says ``HFLIP = False`` at module level (read, never run)."""
    return _flip_of(_data_knobs(data_py))
