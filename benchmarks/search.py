"""Random search and Optuna TPE over the knobs the offline expert turns.

Each trial sets knobs of the reference recipe (:func:`automodel.experts.set_knobs`) and
trains one candidate through :class:`automodel.harness.CandidateRunner`, on the same
clock rule as AutoModel (a candidate starts only while ``min + overhead`` seconds remain,
and gets ``min(candidate_s, remaining - overhead)`` training seconds); a trial still
running when the whole budget is spent is killed and counts as a failed attempt. The best trial by
validation accuracy is scored once on the test split. Neither search is seeded with the
reference defaults: both start from scratch, and differ only in the sampler.

Needs ``optuna`` (the ``bench`` extra).
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from automodel.experts import reference_source, set_knobs
from automodel.interfaces import COMPONENTS
from automodel.workspace import Workspace

__all__ = ["TPE_STARTUP_TRIALS", "run_search", "suggest_knobs"]

TPE_STARTUP_TRIALS = 3
"""Random trials before TPE models the results (Optuna's default of 10 exceeds most budgets here)."""


def suggest_knobs(trial: Any, stored_size: int) -> dict[str, dict[str, Any]]:
    """One point of the search space: the knobs the offline expert's architect and analyst turn.

    ``ARCH`` stays ``"auto"``: the reference's cost-aware choice (a small CNN on CPU up to 64 px,
    pretrained EfficientNet-Lite0 for photos when weights exist). Searching it on 2 CPU cores
    mostly buys ResNet-18 trials that cannot finish a single epoch in the budget.
    """
    sizes = [0, 32, 48, 64] + ([96] if stored_size >= 96 else [])
    data = {
        "AUGMENT": trial.suggest_categorical("AUGMENT", ["light", "crop_flip", "rrc", "trivial"]),
        "HFLIP": trial.suggest_categorical("HFLIP", [True, False]),
        "MIXUP": trial.suggest_categorical("MIXUP", [0.0, 0.2]),
        "ERASING": trial.suggest_categorical("ERASING", [0.0, 0.25]),
        "INPUT_SIZE": trial.suggest_categorical("INPUT_SIZE", sizes),
        "TTA_HFLIP": trial.suggest_categorical("TTA_HFLIP", [False, True]),
    }
    model = {
        "WIDTH": trial.suggest_categorical("WIDTH", [16, 24, 32, 48, 64]),
        "DROPOUT": trial.suggest_float("DROPOUT", 0.0, 0.5),
    }
    training = {
        "LR": trial.suggest_float("LR", 3e-4, 1e-2, log=True),
        "WEIGHT_DECAY": trial.suggest_float("WEIGHT_DECAY", 5e-3, 0.1, log=True),
        "LABEL_SMOOTHING": trial.suggest_categorical("LABEL_SMOOTHING", [0.0, 0.1]),
        "SCHEDULE": trial.suggest_categorical("SCHEDULE", ["cosine", "onecycle", "constant"]),
        "EMA_DECAY": trial.suggest_categorical("EMA_DECAY", [0.0, 0.998]),
    }
    return {"data": data, "model": model, "training": training}


def _write_candidate(folder: Path, knobs: dict[str, dict[str, Any]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for component in COMPONENTS:
        source, applied = set_knobs(reference_source(component), knobs.get(component, {}))
        missing = set(knobs.get(component, {})) - set(applied)
        if missing:
            raise KeyError(f"{component}.py of the reference recipe has no knobs {sorted(missing)}")
        (folder / f"{component}.py").write_text(source, encoding="utf-8")


def run_search(
    ws: Workspace,
    out: Path,
    *,
    sampler: str,
    budget_s: float,
    candidate_s: float,
    seed: int,
    schedule: Callable[[float, float], float | None],
    score: Callable[[Workspace, Path, Path, Path], float | None],
) -> dict[str, Any]:
    """Search until the budget is spent; score the best trial on test; return the record's fields."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if sampler == "tpe":
        chosen: optuna.samplers.BaseSampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=TPE_STARTUP_TRIALS)
    else:
        chosen = optuna.samplers.RandomSampler(seed=seed)
    study = optuna.create_study(direction="maximize", sampler=chosen)
    stored = ws.data.meta.stored_size
    t0 = time.time()
    trials: list[dict[str, Any]] = []
    best: dict[str, Any] | None = None
    while (train_s := schedule(budget_s - (time.time() - t0), candidate_s)) is not None:
        trial = study.ask()
        knobs = suggest_knobs(trial, stored)
        folder = out / "trials" / f"{trial.number + 1:03d}"
        _write_candidate(folder, knobs)
        # Killed when the whole budget is spent (a slow configuration may not overrun the contender's clock).
        remaining = budget_s - (time.time() - t0)
        runner = ws.runner(grace_s=max(10.0, remaining - train_s))
        result = runner.train(folder, folder, time_budget_s=train_s, seed=seed)
        m = result.result if result.ok and result.result else None
        val = float(m["val_accuracy"]) if m else None
        entry = {"trial": trial.number + 1, "status": result.status, "val_accuracy": val, "train_budget_s": round(train_s, 1),
                 "seconds": round(result.duration_s, 1), "images_per_s": m.get("images_per_s") if m else None,
                 "knobs": knobs, "error": (result.error.message[:200] if result.error else "") if not m else ""}
        trials.append(entry)
        if val is None:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            continue
        study.tell(trial, val)
        assert m is not None
        if best is None or val > best["val_accuracy"]:
            if best is not None:
                (Path(best["folder"]) / "checkpoint.pt").unlink(missing_ok=True)
            best = {**entry, "folder": str(folder), "checkpoint": m["checkpoint"]}
        else:
            (folder / "checkpoint.pt").unlink(missing_ok=True)
    search_s = round(time.time() - t0, 1)
    (out / "trials.json").write_text(json.dumps(trials, indent=1, default=str))
    valid = [t for t in trials if t["val_accuracy"] is not None]
    ips = [float(t["images_per_s"]) for t in valid if t["images_per_s"]]
    rec: dict[str, Any] = {
        "attempts": len(trials),
        "valid_attempts": len(valid),
        "first_val_accuracy": trials[0]["val_accuracy"] if trials else None,
        "best_val_accuracy": best["val_accuracy"] if best else None,
        "best_iteration": best["trial"] if best else None,
        "images_per_s": round(sum(ips) / len(ips), 1) if ips else None,
        "search_s": search_s,
        "best_knobs": best["knobs"] if best else None,
        "history": trials,
    }
    if best is not None:
        final = out / "final"
        shutil.rmtree(final, ignore_errors=True)
        rec["test_accuracy"] = score(ws, Path(best["folder"]), Path(best["checkpoint"]), final)
    return rec
