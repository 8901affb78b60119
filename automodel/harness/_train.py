"""Train and score one candidate: build components, smoke-test, train under a budget."""

from __future__ import annotations

import copy
import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch

from automodel._io import atomic_open
from automodel.executors import OUT_DIR, checkpoint_name, predictions_name, val_predictions_name
from automodel.harness._job import HarnessJob, Infeasible, JobData, emit, parent_gone
from automodel.harness._loader import ComponentFailure
from automodel.interfaces import (
    DataRecipe,
    DataSpec,
    ModelSpec,
    PretrainedInfo,
    TrainRecipe,
    TrainSpec,
)

BOUNDARIES: dict[str, str] = {}
"""What crossed the component boundaries last (shape and dtype), written to ``error.json`` on a crash:
the evidence for blaming the file at fault rather than the file that raised."""


def _describe(value: Any) -> str:
    if torch.is_tensor(value):
        return f"{tuple(value.shape)} {str(value.dtype).replace('torch.', '')}"
    return type(value).__name__


class StepTimeout(TimeoutError):
    """A component call that did not return in time (an endless loop, most often)."""


@contextmanager
def time_limit(seconds: float, what: str) -> Iterator[None]:
    """Raise :class:`StepTimeout` inside the block after ``seconds`` (main thread, POSIX; else no limit)."""
    if seconds <= 0 or not hasattr(signal, "setitimer") or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum: int, frame: Any) -> None:
        raise StepTimeout(f"{what} did not finish within {seconds:.0f} s: look for an endless loop (a `while` whose "
                          "condition never changes, a loop over an iterator that never ends) or work that grows with "
                          "the data; build_training should only create the optimizer, the loss and the schedule")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def smoke_limit_s(time_budget_s: float) -> float:
    """How long building the training recipe and one optimizer step may take: a quarter of the budget, 10-60 s."""
    return max(10.0, min(60.0, 0.25 * time_budget_s))


@contextmanager
def owned_by(component: str, files: dict[str, Path]) -> Iterator[None]:
    """Attribute any exception in the block to ``component`` (or to the file that raised)."""
    try:
        yield
    except ComponentFailure:
        raise
    except Exception as exc:
        raise ComponentFailure(component, exc, files) from exc


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


@dataclass
class Split:
    """One split as an NCHW uint8 tensor (in memory) or an NHWC memmap (on disk)."""

    x: Any
    y: torch.Tensor | None
    in_memory: bool
    x_alt: torch.Tensor | None = None
    """Features only: a second view of each row (the mirrored image), drawn at random in training."""

    @classmethod
    def from_arrays(cls, x: np.ndarray, y: np.ndarray | None) -> Split:
        in_memory = not isinstance(x, np.memmap)
        xt: Any = torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2).contiguous() if in_memory else x
        yt = torch.from_numpy(np.asarray(y, dtype=np.int64)) if y is not None else None
        return cls(xt, yt, in_memory)

    @classmethod
    def from_features(cls, x: np.ndarray, y: np.ndarray | None, alt: np.ndarray | None = None) -> Split:
        yt = torch.from_numpy(np.asarray(y, dtype=np.int64)) if y is not None else None
        return cls(torch.from_numpy(x), yt, True, torch.from_numpy(alt) if alt is not None else None)

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def batch(self, idx: torch.Tensor, device: str, *, augment: bool = False) -> torch.Tensor:
        if self.x_alt is not None and augment:
            pick = torch.rand(len(idx)) < 0.5
            xb = torch.where(pick[:, None], self.x_alt[idx], self.x[idx])
            return xb.to(device, non_blocking=True)
        if self.in_memory:
            xb = self.x[idx]
        else:
            order = np.sort(idx.numpy())
            xb = torch.from_numpy(np.ascontiguousarray(self.x[order])).permute(0, 3, 1, 2)
        return xb.to(device, non_blocking=True)


def evaluate(
    model: torch.nn.Module, split: Split, recipe: DataRecipe, device: str, num_classes: int, amp: bool
) -> tuple[torch.Tensor, float]:
    """Class probabilities for a whole split, and its mean cross-entropy when labelled."""
    model.eval()
    probs = []
    bs = max(recipe.batch_size * 2, 64)
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
        for start in range(0, len(split), bs):
            idx = torch.arange(start, min(start + bs, len(split)))
            x = split.batch(idx, device)
            if not recipe.features:
                x = recipe.eval_transform(x)
            p = model(x).float().softmax(1)
            if recipe.tta_hflip and not recipe.features:
                p = (p + model(torch.flip(x, dims=[3])).float().softmax(1)) / 2
            probs.append(p.cpu())
    out = torch.cat(probs) if probs else torch.zeros(0, num_classes)
    loss = float("nan")
    if split.y is not None and len(out):
        loss = float(torch.nn.functional.nll_loss(out.clamp_min(1e-8).log(), split.y))
    return out, loss


class Candidate:
    """The three components built against one prepared dataset."""

    def __init__(self, job: HarnessJob, modules: dict[str, ModuleType], files: dict[str, Path], data: JobData):
        self.job, self.modules, self.files = job, modules, files
        self.device = resolve_device(job.device)
        self.meta = data.meta
        self.num_classes = int(self.meta.num_classes)
        if job.mode == "train":
            x, y = data.arrays("train")
            self.train = Split.from_arrays(x, y)
            counts = np.bincount(np.asarray(y), minlength=self.num_classes)
            self.class_counts = tuple(int(c) for c in counts)
        else:  # a predict or export job holds no training data: the specs describe it from the metadata
            self.train = Split.from_arrays(np.zeros((int(self.meta.counts.get("train", 0)), 1, 1, 1), np.uint8), None)
            self.class_counts = tuple(int(c) for c in self.meta.class_counts.get("train", []))
        spec = DataSpec(
            num_classes=self.num_classes,
            in_chans=int(self.meta.in_chans),
            stored_size=int(self.meta.stored_size),
            num_train=len(self.train),
            class_counts=self.class_counts,
            mean=tuple(self.meta.mean),
            std=tuple(self.meta.std),
            device=self.device,
            description=job.description,
        )
        with owned_by("data", files):
            recipe = modules["data"].build_data(spec)
            if not isinstance(recipe, DataRecipe):
                raise TypeError(f"build_data must return a DataRecipe, got {type(recipe).__name__}")
            if recipe.batch_size < 1 or recipe.input_size < 1:
                raise ValueError(f"batch_size and input_size must be positive: {recipe}")
        self.recipe = recipe
        feature_dim = 0
        if recipe.features:
            with owned_by("data", files):
                if job.mode == "train":
                    self.train = self.feature_split("train", data.arrays("train")[1])
                    feature_dim = int(self.train.x.shape[1])
                elif job.mode == "export":  # an export job holds no features: the backbone says its width
                    from automodel.features import BACKBONES, parse_feature_key

                    feature_dim = BACKBONES[parse_feature_key(str(recipe.features))[0]].dim
                else:  # a predict job has the features of its split only
                    feature_dim = int(self.feature_split(job.split, None).x.shape[1])
        mspec = ModelSpec(
            num_classes=self.num_classes,
            in_chans=recipe.out_chans,
            input_size=recipe.input_size,
            device=self.device,
            pretrained=PretrainedInfo(
                hub_available=job.hub_available,
                # Relative to the job directory (the working directory); absolute for the component.
                local={name: os.path.abspath(path) for name, path in job.local_weights.items()},
            ),
            num_train=len(self.train),
            time_budget_s=job.time_budget_s,
            feature_dim=feature_dim,
        )
        with owned_by("model", files):
            model = modules["model"].build_model(mspec)
            if not isinstance(model, torch.nn.Module):
                raise TypeError(f"build_model must return a torch.nn.Module, got {type(model).__name__}")
        self.model = model.to(self.device)
        if job.init_checkpoint is not None:
            self.warm_start(Path(job.init_checkpoint))

    def feature_split(self, split: str, y: np.ndarray | None) -> Split:
        """The cached features of ``split`` (train: with its mirrored view) as a Split."""
        from automodel.features import feature_keys, load_feature_split

        key = str(self.recipe.features)
        feature_keys(key)
        if self.job.features_dir is None:
            raise FileNotFoundError(f"the data recipe asks for features {key!r} but this job has no feature cache")
        root = Path(self.job.features_dir)
        x = load_feature_split(root, key, split)
        alt = None
        if split == "train" and self.recipe.feature_flip:
            try:
                alt = load_feature_split(root, key, "train_flip")
            except FileNotFoundError as exc:
                raise FileNotFoundError(
                    f"DataRecipe.feature_flip is True but the feature cache of {key!r} holds no mirrored training "
                    "images: data.py says HFLIP = False at module level, so they were not extracted. Return "
                    "feature_flip=HFLIP (or set HFLIP = True)."
                ) from exc
        return Split.from_features(x, y, alt)

    def split(self, data: Any, name: str) -> Split:
        """The validation or test split, as images or as cached features."""
        x, y = data.arrays(name)
        if self.recipe.features:
            with owned_by("data", self.files):
                return self.feature_split(name, y)
        return Split.from_arrays(x, y)

    def warm_start(self, path: Path) -> None:
        """Load the incumbent's weights wherever names and shapes match (a warm start)."""
        state = torch.load(path, map_location=self.device, weights_only=True)
        state = {k.removeprefix("module."): v for k, v in state.items() if k != "n_averaged"}
        own = self.model.state_dict()
        matched = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
        self.model.load_state_dict(matched, strict=False)
        self.warm_loaded = len(matched)
        emit("warm_start", tensors=len(matched), of=len(own), checkpoint=str(path))

    def transform_train(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        xb = self.train.batch(idx, self.device, augment=True)
        assert self.train.y is not None
        yb = torch.nn.functional.one_hot(self.train.y[idx], self.num_classes).float().to(self.device)
        BOUNDARIES.clear()
        BOUNDARIES["harness -> data.train_transform (stored images, NCHW)"] = _describe(xb)
        if self.recipe.features:
            return xb, yb
        with owned_by("data", self.files):
            x = self.recipe.train_transform(xb)
            BOUNDARIES["data.train_transform -> model (expected (B, C, H, W) float, "
                       f"C={self.recipe.out_chans}, H=W={self.recipe.input_size})"] = _describe(x)
            want = (self.recipe.out_chans, self.recipe.input_size, self.recipe.input_size)
            if torch.is_tensor(x) and (x.dim() != 4 or tuple(x.shape[1:]) != want):
                BOUNDARIES["suspect"] = (f"data: train_transform returned {tuple(x.shape)}, but the DataRecipe declares "
                                         f"(B, {want[0]}, {want[1]}, {want[2]}) (out_chans, input_size), which the "
                                         "model was built for")
            if not torch.is_tensor(x) or not x.is_floating_point() or x.dim() != 4:
                raise TypeError(f"train_transform must return a float (B,C,H,W) tensor, got {getattr(x, 'shape', type(x))}")
            if self.recipe.batch_mix is not None:
                x, yb = self.recipe.batch_mix(x, yb)
        return x, yb

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        BOUNDARIES["model.forward input"] = _describe(x)
        with owned_by("model", self.files):
            logits = self.model(x)
            BOUNDARIES[f"model.forward output (expected ({x.shape[0]}, {self.num_classes}))"] = _describe(logits)
            if not torch.is_tensor(logits) or logits.shape != (x.shape[0], self.num_classes):
                raise ValueError(
                    f"model returned {getattr(logits, 'shape', type(logits))}, expected ({x.shape[0]}, {self.num_classes})"
                )
        return logits

    def smoke(self, steps: int) -> float:
        """Forward+backward on a few batches with the weights restored after; seconds per step."""
        state = copy.deepcopy(self.model.state_dict())
        self.model.train()
        bs = min(self.recipe.batch_size, len(self.train))
        timings = []
        for i in range(steps + 1):
            t0 = time.perf_counter()
            x, y = self.transform_train(torch.randperm(len(self.train))[:bs])
            logits = self.forward(x)
            with owned_by("model", self.files):
                torch.nn.functional.cross_entropy(logits.float(), y).backward()
            self.model.zero_grad(set_to_none=True)
            if i:  # the first step pays for lazy initialisation
                timings.append(time.perf_counter() - t0)
        self.model.load_state_dict(state)
        # The fastest step measures the compute; slower ones mostly measure other load.
        return float(min(timings))

    def trial_step(self, recipe: TrainRecipe) -> None:
        """One optimizer step with the recipe (schedule, loss, step), weights and optimizer state restored after."""
        model_state = copy.deepcopy(self.model.state_dict())
        opt_state = copy.deepcopy(recipe.optimizer.state_dict())
        self.model.train()
        x, y = self.transform_train(torch.randperm(len(self.train))[: min(self.recipe.batch_size, len(self.train))])
        logits = self.forward(x)
        with owned_by("training", self.files):
            if recipe.lr_schedule is not None:
                float(recipe.lr_schedule(0))
            loss = recipe.loss_fn(logits, y)
            recipe.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            recipe.optimizer.step()
            recipe.optimizer.zero_grad(set_to_none=True)
        self.model.load_state_dict(model_state)
        recipe.optimizer.load_state_dict(opt_state)

    def build_training(self, est_step_s: float) -> TrainRecipe:
        steps = max(1, len(self.train) // self.recipe.batch_size)
        tspec = TrainSpec(
            num_classes=self.num_classes,
            num_train=len(self.train),
            steps_per_epoch=steps,
            batch_size=self.recipe.batch_size,
            device=self.device,
            time_budget_s=self.job.time_budget_s,
            est_step_s=est_step_s,
            class_counts=self.class_counts,
            max_epochs=self.job.max_epochs,
        )
        with owned_by("training", self.files):
            recipe = self.modules["training"].build_training(tspec, self.model)
            if not isinstance(recipe, TrainRecipe):
                raise TypeError(f"build_training must return a TrainRecipe, got {type(recipe).__name__}")
            if recipe.epochs < 1:
                raise ValueError(f"epochs must be >= 1, got {recipe.epochs}")
        return recipe


def _epoch_indices(cand: Candidate, balanced: bool, gen: torch.Generator) -> torch.Tensor:
    n = len(cand.train)
    if not balanced:
        return torch.randperm(n, generator=gen)
    assert cand.train.y is not None
    counts = torch.tensor(cand.class_counts, dtype=torch.float64).clamp(min=1)
    weights = (1.0 / counts)[cand.train.y]
    return torch.multinomial(weights, n, replacement=True, generator=gen)


def _save_checkpoint(model: torch.nn.Module, path: Path) -> None:
    with atomic_open(path, "wb") as f:
        torch.save(model.state_dict(), f)


def _save_predictions(probs: torch.Tensor, path: Path) -> None:
    """Class log-probabilities as float32 ``.npy``, renamed into place so a reader never sees half a file."""
    with atomic_open(path, "wb") as f:
        np.save(f, probs.clamp_min(1e-12).log().numpy().astype(np.float32), allow_pickle=False)


def _check_one_epoch_fits(cand: Candidate, est: float, steps: int, remaining_s: float) -> None:
    epoch_s = est * steps
    if epoch_s > remaining_s:
        params = sum(p.numel() for p in cand.model.parameters())
        raise Infeasible(
            f"One epoch needs about {epoch_s:.0f} s ({steps} steps x {est:.3f} s at batch size "
            f"{cand.recipe.batch_size}, input {cand.recipe.input_size}px, {params / 1e6:.1f}M parameters) but "
            f"only {max(remaining_s, 0):.0f} s of the {cand.job.time_budget_s:.0f} s budget are left: use a smaller "
            "model or input size (or frozen/cached features), or give this candidate a larger budget."
        )


def train(
    job: HarnessJob, job_dir: Path, modules: dict[str, ModuleType], files: dict[str, Path], data: JobData
) -> dict[str, Any]:
    """Train the candidate, writing validation predictions and weights per epoch and variant to ``out/``.

    Returns the harness's own report (``result.json``): timings and losses, never a score.

    Raises:
        Infeasible: one epoch does not fit in the budget (predicted after the smoke test, or seen).
    """
    t_start = time.perf_counter()
    torch.manual_seed(job.seed)
    cand = Candidate(job, modules, files, data)
    val = cand.split(data, "val")
    est = cand.smoke(job.smoke_steps)
    # The smoke test covers the training recipe too: built, and one optimizer step, under a short limit,
    # so an endless loop in build_training is a crash of training.py, not a timeout of the whole candidate.
    with owned_by("training", files), time_limit(smoke_limit_s(job.time_budget_s), "build_training and one optimizer step"):
        recipe = cand.build_training(est)
        cand.trial_step(recipe)
    model, opt = cand.model, recipe.optimizer
    use_amp = recipe.amp and cand.device.startswith("cuda")
    if recipe.channels_last and cand.device.startswith("cuda"):
        model = model.to(memory_format=torch.channels_last)
    ema = torch.optim.swa_utils.AveragedModel(
        model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(recipe.ema_decay), use_buffers=True
    ) if recipe.ema_decay else None
    epochs = min(recipe.epochs, job.max_epochs or recipe.epochs)
    bs = cand.recipe.batch_size
    steps_per_epoch = max(1, len(cand.train) // bs)
    params = sum(p.numel() for p in model.parameters())
    emit("smoke", ok=True, est_step_s=round(est, 5), epochs=epochs, steps_per_epoch=steps_per_epoch,
         batch_size=bs, input_size=cand.recipe.input_size, params=params, device=cand.device)
    _check_one_epoch_fits(cand, est, steps_per_epoch, t_start + job.time_budget_s - time.perf_counter())
    base_lrs = [g["lr"] for g in opt.param_groups]
    out = job_dir / OUT_DIR
    history: list[dict[str, Any]] = []
    gen = torch.Generator().manual_seed(job.seed)
    step, images, train_s = 0, 0, 0.0
    deadline = t_start + job.time_budget_s
    stopped_by_budget = False
    last_progress = time.perf_counter()
    for epoch in range(1, epochs + 1):
        model.train()
        t_epoch = time.perf_counter()
        order = _epoch_indices(cand, cand.recipe.balanced_sampling, gen)
        loss_sum, loss_n = 0.0, 0
        for b in range(steps_per_epoch):
            idx = order[b * bs:(b + 1) * bs]
            x, y = cand.transform_train(idx)
            if recipe.channels_last and cand.device.startswith("cuda"):
                x = x.contiguous(memory_format=torch.channels_last)
            if recipe.lr_schedule is not None:
                with owned_by("training", files):
                    mult = float(recipe.lr_schedule(step))
                for g, lr in zip(opt.param_groups, base_lrs, strict=True):
                    g["lr"] = lr * mult
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_amp):
                logits = cand.forward(x)
            with owned_by("training", files):
                loss = recipe.loss_fn(logits, y)
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"loss is {float(loss)} at epoch {epoch} step {b}: lower the learning rate")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if recipe.grad_clip:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.grad_clip)
                opt.step()
            if ema is not None:
                ema.update_parameters(model)
            loss_sum += float(loss.detach())
            loss_n += 1
            step += 1
            images += x.shape[0]
            now = time.perf_counter()
            if parent_gone():
                raise SystemExit("the process that started this candidate is gone; stopping")
            if now - last_progress >= job.progress_every_s:
                emit("progress", epoch=epoch, epochs=epochs, step=b + 1, steps=steps_per_epoch,
                     train_loss=round(loss_sum / loss_n, 4), elapsed_s=round(now - t_start, 1))
                last_progress = now
            if now > deadline:
                stopped_by_budget = True
                break
        train_s += time.perf_counter() - t_epoch
        if stopped_by_budget and epoch == 1 and loss_n < steps_per_epoch:
            raise Infeasible(
                f"The time budget of {job.time_budget_s:.0f} s ran out after {loss_n} of {steps_per_epoch} steps of "
                "the first epoch: a score now would be chance. Use a smaller model or input size, or a larger budget."
            )
        # With EMA both the averaged and the raw weights are kept: early in a short run the average
        # still remembers the random initialisation. The orchestrator scores both and picks.
        for which, variant_model in (("ema", ema.module if ema is not None else None), ("raw", model)):
            if variant_model is None:
                continue
            probs, _ = evaluate(variant_model, val, cand.recipe, cand.device, cand.num_classes, use_amp)
            _save_checkpoint(variant_model, out / checkpoint_name(epoch, which))
            _save_predictions(probs, out / val_predictions_name(epoch, which))
        record = {
            "epoch": epoch, "train_loss": round(loss_sum / max(loss_n, 1), 5), "lr": opt.param_groups[0]["lr"],
            "seconds": round(time.perf_counter() - t_epoch, 2), "steps": loss_n,
        }
        history.append(record)
        emit("epoch", epochs=epochs, **record)
        if stopped_by_budget:
            emit("budget", message=f"time budget of {job.time_budget_s:.0f}s reached in epoch {epoch}")
            break
    return {
        "epochs_run": len(history),
        "epochs_planned": epochs,
        "history": history,
        "stopped_by_budget": stopped_by_budget,
        "train_seconds": round(train_s, 2),
        "total_seconds": round(time.perf_counter() - t_start, 2),
        "images_per_s": round(images / train_s, 1) if train_s > 0 else 0.0,
        "est_step_s": est,
        "params": params,
        "input_size": cand.recipe.input_size,
        "batch_size": bs,
        "device": cand.device,
        "features": cand.recipe.features,
        "warm_start_tensors": getattr(cand, "warm_loaded", 0),
    }


def trained_candidate(
    job: HarnessJob, job_dir: Path, modules: dict[str, ModuleType], files: dict[str, Path], data: JobData
) -> Candidate:
    """The components built and the job's ``checkpoint.pt`` loaded (predict and export modes)."""
    checkpoint = job_dir / "checkpoint.pt"
    if not checkpoint.is_file():
        raise FileNotFoundError(f"{job.mode} mode needs checkpoint.pt in the job directory {job_dir}")
    cand = Candidate(job, modules, files, data)
    state = torch.load(checkpoint, map_location=cand.device, weights_only=True)
    state = {k.removeprefix("module."): v for k, v in state.items() if k != "n_averaged"}
    with owned_by("model", files):
        cand.model.load_state_dict(state)
    return cand


def predict(
    job: HarnessJob, job_dir: Path, modules: dict[str, ModuleType], files: dict[str, Path], data: JobData
) -> dict[str, Any]:
    """Write class log-probabilities for ``job.split`` with ``checkpoint.pt``; no labels are in this job."""
    cand = trained_candidate(job, job_dir, modules, files, data)
    images = cand.split(data, job.split)
    probs, _ = evaluate(cand.model, images, cand.recipe, cand.device, cand.num_classes, False)
    _save_predictions(probs, job_dir / OUT_DIR / predictions_name(job.split))
    return {"num_predictions": len(images), "split": job.split}
