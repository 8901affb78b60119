"""Optuna over the reference recipe's knobs, configured as an expert would configure it.

* **Trial 1 is the reference recipe** (``study.enqueue_trial``): the search starts from the
  default it must beat.
* **A cost-filtered space**: a sampled configuration whose predicted cost (images x
  ms per image from a cost model, calibrated by the measured epochs of earlier trials)
  does not fit ``MIN_EPOCHS`` epochs into one trial's share is rejected before it runs
  (told to Optuna as failed, no time spent), so no trial is an untrained model.
* **Per-epoch reports, early stopping**: every epoch's validation accuracy reaches
  ``trial.report`` live (the harness's ``epoch`` events); a Hyperband pruner
  (successive halving in brackets, ``reduction_factor`` 3) stops weak trials, whose harness
  process is then ended.
* **Infeasible is not a score**: a trial that did not complete one epoch is failed,
  never a chance-level value.
* Sampler: random (the ``optuna`` row) or TPE (``optuna-tpe``, 10 random start-up trials;
  the table keeps its row only where it ran at least ``TPE_MIN_TRIALS`` trials, else it is
  random search again).

Each trial trains for at most ``TRIAL_SHARE`` of the budget (epochs sized to that by the
reference training component), and never past the contender's deadline. The best
completed trial by validation accuracy is the final model.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
from pathlib import Path
from typing import Any

from automodel.experts import reference_source, set_knobs
from automodel.interfaces import COMPONENTS
from automodel.workspace import Workspace
from benchmarks.clock import Clock, pids_running

__all__ = [
    "MIN_EPOCHS", "TPE_MIN_TRIALS", "TRIAL_SHARE", "cost_ms", "fits", "reference_params", "run_optuna", "stop_job",
    "suggest",
]

TRIAL_SHARE = 0.25
"""Longest training of one trial, as a share of the contender's budget."""
MIN_EPOCHS = 3
"""A configuration must fit this many epochs into one trial's share (cost model) to be tried."""
TPE_MIN_TRIALS = 20
TPE_STARTUP = 10
RESERVE_S = 8.0
"""Seconds per trial beyond its training budget: process start, smoke test, last evaluation."""
MAX_REJECTIONS_IN_A_ROW = 50
"""After this many cost-rejected samples in a row, a trial's share doubles (up to what is left)."""


def _knob_space(stored: int, photo: bool) -> dict[str, list[Any]]:
    sizes = [0, 64, 96, 112, 128] if photo else [0, 32, 48, 64]
    return {
        "AUGMENT": ["auto", "light", "crop_flip", "rrc", "trivial"],
        "HFLIP": [True, False],
        "MIXUP": [0.0, 0.2],
        "ERASING": [0.0, 0.25],
        "INPUT_SIZE": [s for s in sizes if s <= max(stored, 32)],
        "WIDTH": [0, 16, 24, 32, 48, 64],
        "LABEL_SMOOTHING": [0.0, 0.1],
        "SCHEDULE": ["cosine", "onecycle", "constant"],
        "EMA_DECAY": [0.0, 0.998],
    }


def reference_params(pretrained: bool) -> dict[str, Any]:
    """The reference recipe's own values of every searched knob (trial 1)."""
    return {"AUGMENT": "auto", "HFLIP": True, "MIXUP": 0.0, "ERASING": 0.0, "INPUT_SIZE": 0, "WIDTH": 0,
            "DROPOUT": 0.1, "LR": 1e-3 if pretrained else 3e-3, "WEIGHT_DECAY": 0.05, "LABEL_SMOOTHING": 0.1,
            "SCHEDULE": "cosine", "EMA_DECAY": 0.0}


def suggest(trial: Any, stored: int, photo: bool) -> dict[str, dict[str, Any]]:
    """One point of the search space, as knobs per component."""
    space = _knob_space(stored, photo)
    p = {k: trial.suggest_categorical(k, v) for k, v in space.items()}
    p["DROPOUT"] = trial.suggest_float("DROPOUT", 0.0, 0.5)
    p["LR"] = trial.suggest_float("LR", 1e-4, 1e-2, log=True)
    p["WEIGHT_DECAY"] = trial.suggest_float("WEIGHT_DECAY", 5e-3, 0.1, log=True)
    data = {k: p[k] for k in ("AUGMENT", "HFLIP", "MIXUP", "ERASING", "INPUT_SIZE")}
    model = {"WIDTH": p["WIDTH"], "DROPOUT": p["DROPOUT"]}
    training = {k: p[k] for k in ("LR", "WEIGHT_DECAY", "LABEL_SMOOTHING", "SCHEDULE", "EMA_DECAY")}
    return {"data": data, "model": model, "training": training}


def cost_ms(knobs: dict[str, dict[str, Any]], stored: int, chans: int, *, cuda: bool, weights: bool) -> float:
    """Predicted fwd+bwd milliseconds per training image on 2 CPU cores, mirroring the reference's ``auto`` choices.

    Small CNN: (1.6 + 0.0022 w^2) (s/32)^2 (x1.1 for RGB); EfficientNet-Lite0: 40 (s/128)^2;
    ResNet-18 (what ``auto`` picks for large inputs without weights): 60 (s/128)^2.
    The figures are this machine's measurements; :func:`run_optuna` rescales them by measured epochs.
    """
    size = int(knobs["data"]["INPUT_SIZE"]) or (max(stored, 28) if stored <= 64 else min(stored, 224 if cuda else 128))
    out_chans = 3 if size > 64 else chans
    if weights and size >= 64 and out_chans == 3:
        return 40.0 * (size / 128) ** 2
    if size <= 64 and not cuda:
        width = int(knobs["model"]["WIDTH"]) or 32
        return (1.6 + 0.0022 * width * width) * (size / 32) ** 2 * (1.1 if out_chans == 3 else 1.0)
    return 60.0 * (size / 128) ** 2


def fits(cost: float, n_train: int, trial_s: float, scale: float) -> bool:
    """Whether ``MIN_EPOCHS`` epochs of ``cost`` ms/image fit into ``trial_s`` training seconds."""
    return MIN_EPOCHS * n_train * cost * scale / 1000 <= 0.9 * trial_s


def _write_candidate(folder: Path, knobs: dict[str, dict[str, Any]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for component in COMPONENTS:
        source, applied = set_knobs(reference_source(component), knobs.get(component, {}))
        missing = set(knobs.get(component, {})) - set(applied)
        if missing:
            raise KeyError(f"{component}.py of the reference recipe has no knobs {sorted(missing)}")
        (folder / f"{component}.py").write_text(source, encoding="utf-8")


def stop_job(job_file: Path | str) -> None:
    """End the harness process that runs ``job_file`` (a pruned trial)."""
    for pid in pids_running(str(job_file)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)


def run_optuna(ws: Workspace, out: Path, clock: Clock, *, sampler: str, seed: int, threads: int = 0) -> dict[str, Any]:
    """Search until the clock's budget is spent; returns the record's fields and the best trial's folder/checkpoint."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    chosen: optuna.samplers.BaseSampler
    if sampler == "tpe":
        chosen = optuna.samplers.TPESampler(seed=seed, n_startup_trials=TPE_STARTUP)
    else:
        chosen = optuna.samplers.RandomSampler(seed=seed)
    study = optuna.create_study(direction="maximize", sampler=chosen,
                                pruner=optuna.pruners.HyperbandPruner(min_resource=1, reduction_factor=3))
    meta = ws.data.meta
    stored, chans, n_train = int(meta.stored_size), int(meta.in_chans), int(meta.counts.get("train", 0))
    cuda = ws.env.cuda
    weights = ws.env.pretrained.hub_available or "efficientnet_lite0" in ws.env.pretrained.local
    photo = stored >= 64 and chans == 3
    study.enqueue_trial(reference_params(pretrained=photo and weights))
    trial_s = TRIAL_SHARE * clock.budget_s
    scale = 1.0  # measured / predicted seconds per image: set by the first trial that trains, then averaged
    calibrated = False
    trials: list[dict[str, Any]] = []
    rejected = in_a_row = 0
    grown_to: list[float] = []
    best: dict[str, Any] | None = None
    train_total = 0.0
    while True:
        remaining = clock.remaining()
        train_s = min(trial_s, remaining - RESERVE_S)
        if train_s < 5.0:
            break
        trial = study.ask()
        knobs = suggest(trial, stored, photo)
        cost = cost_ms(knobs, stored, chans, cuda=cuda, weights=weights)
        if trial.number > 0 and not fits(cost, n_train, train_s, scale):
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            rejected += 1
            in_a_row += 1
            if in_a_row >= MAX_REJECTIONS_IN_A_ROW:
                # Almost nothing fits 3 epochs into a trial's share on this machine: fewer, longer trials.
                grown = min(clock.remaining() - RESERVE_S, 2 * trial_s)
                if grown <= trial_s + 1.0:
                    break
                trial_s, in_a_row = grown, 0
                grown_to.append(round(trial_s, 1))
            continue
        in_a_row = 0
        number = len(trials) + 1
        folder = out / "trials" / f"{number:03d}"
        _write_candidate(folder, knobs)
        curve: list[dict[str, Any]] = []
        state = {"pruned": False, "steps_per_epoch": None}
        job_file = folder / "job.json"

        def on_event(ev: dict[str, Any], trial: Any = trial, curve: list[dict[str, Any]] = curve,
                     state: dict[str, Any] = state, job_file: Path = job_file) -> None:
            if ev.get("event") == "smoke":
                state["steps_per_epoch"] = ev.get("steps_per_epoch")
            if ev.get("event") != "epoch" or state["pruned"]:
                return
            curve.append({k: ev.get(k) for k in ("epoch", "val_accuracy", "train_loss", "seconds", "steps")})
            trial.report(float(ev["val_accuracy"]), int(ev["epoch"]))
            if trial.should_prune():
                state["pruned"] = True
                stop_job(job_file)

        runner = ws.runner(grace_s=max(1.0, clock.remaining() - train_s), threads=threads)
        result = runner.train(folder, folder, time_budget_s=train_s, seed=seed, on_event=on_event)
        m = result.result if result.ok and result.result else None
        steps = state["steps_per_epoch"]
        full_epochs = [c for c in curve if steps and c.get("steps") == steps]
        # Seconds per full epoch, also from an epoch the budget cut short (scaled by its steps).
        epoch_s = [float(c["seconds"]) * steps / int(c["steps"]) for c in curve if steps and c.get("steps") and c.get("seconds")]
        train_total += sum(float(c.get("seconds") or 0.0) for c in curve)
        if epoch_s:
            measured = min(epoch_s) / (n_train * cost / 1000)
            scale = measured if not calibrated else 0.5 * (scale + measured)
            calibrated = True
        outcome: str
        if state["pruned"]:
            outcome = "pruned"
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        elif getattr(result, "status", "") == "infeasible" or not full_epochs:
            outcome = "infeasible" if result.ok or result.status == "infeasible" else result.status
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        elif m is None:
            outcome = result.status
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        else:
            outcome = "complete"
            study.tell(trial, float(m["val_accuracy"]))
        val = float(m["val_accuracy"]) if outcome == "complete" and m else None
        entry = {"trial": number, "outcome": outcome, "val_accuracy": val, "epochs": len(curve),
                 "train_budget_s": round(train_s, 1), "seconds": round(result.duration_s, 1),
                 "predicted_ms_per_image": round(cost * scale, 2), "curve": curve, "knobs": knobs,
                 "error": (result.error.message[:200] if result.error and outcome not in ("pruned", "complete") else "")}
        trials.append(entry)
        if val is not None and m is not None and (best is None or val > best["val_accuracy"]):
            if best is not None:
                (Path(best["folder"]) / "checkpoint.pt").unlink(missing_ok=True)
            best = {**entry, "folder": str(folder), "checkpoint": m["checkpoint"]}
        else:
            (folder / "checkpoint.pt").unlink(missing_ok=True)
    clock.stop()
    (out / "trials.json").write_text(json.dumps(trials, indent=1, default=str))
    counts = {k: sum(t["outcome"] == k for t in trials) for k in ("complete", "pruned", "infeasible")}
    rec: dict[str, Any] = {
        "attempts": len(trials),
        "valid_attempts": counts["complete"],
        "outcomes": {**counts, "failed": len(trials) - sum(counts.values()), "rejected_by_cost_model": rejected},
        "first_val_accuracy": trials[0]["val_accuracy"] if trials else None,
        "best_val_accuracy": best["val_accuracy"] if best else None,
        "best_iteration": best["trial"] if best else None,
        "best_knobs": best["knobs"] if best else None,
        "train_s": round(train_total, 2),
        "settings": {"sampler": sampler, "pruner": "hyperband(min_resource=1, reduction_factor=3)",
                     "trial_share": TRIAL_SHARE, "trial_s_grown_to": grown_to, "min_epochs": MIN_EPOCHS, "first_trial": "reference recipe",
                     "tpe_startup_trials": TPE_STARTUP if sampler == "tpe" else None},
        "history": trials,
    }
    if best is not None:
        rec["final"] = {"folder": best["folder"], "checkpoint": best["checkpoint"]}
    return rec
