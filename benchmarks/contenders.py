"""The contenders, each given one dataset, one seed and one wall-clock budget; each returns one record.

* ``automodel``: the whole team with the offline expert (:func:`automodel.run.run_team`).
* ``automodel-no-zero-shot``: the same, first candidate = the reference recipe (ablation).
* ``automodel+description``: the same, told what the labels mean (ablation, orientation task).
* ``reference``: the reference recipe alone, one candidate trained for the whole budget.
* ``naive``: a one-shot script (``benchmarks/naive/``) trained for the whole budget.
* ``random`` / ``tpe``: search over the expert's knobs (:mod:`benchmarks.search`).

Every contender is scored once on the same privately held test labels, by the harness's
own predict mode. Records hold only measured numbers.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from automodel.experts import get_knobs
from automodel.harness import copy_components
from automodel.interfaces import COMPONENTS, REFERENCE_DIR
from automodel.workspace import Workspace, open_workspace
from benchmarks.datasets import BenchDataset, resolve

__all__ = ["CONTENDERS", "Job", "run_job", "score_test", "train_budget_schedule"]

NAIVE_DIR = Path(__file__).resolve().parent / "naive"
CONTENDERS = ("automodel", "reference", "naive", "random", "tpe", "automodel-no-zero-shot", "automodel+description")
CANDIDATE_OVERHEAD_S = 25.0
"""What AutoModel reserves per candidate beyond its training budget; the searches use the same rule."""
MIN_CANDIDATE_S = 10.0


@dataclass(frozen=True)
class Job:
    """One contender on one dataset with one seed."""

    dataset: str
    contender: str
    seed: int
    budget_s: float
    """Total wall-clock seconds (the team's / the search's clock; single candidates train this long)."""
    candidate_s: float
    """Training seconds per candidate for the iterating contenders."""
    out_root: str
    device: str = "cpu"
    full: bool = False
    threads: int = 0
    """torch threads per candidate (0 = the harness default, all cores)."""

    @property
    def name(self) -> str:
        return f"{self.dataset}__{self.contender}__s{self.seed}"


def train_budget_schedule(remaining_s: float, candidate_s: float) -> float | None:
    """Training seconds for the next candidate under AutoModel's own rule, or None when the budget is spent."""
    if remaining_s < MIN_CANDIDATE_S + CANDIDATE_OVERHEAD_S:
        return None
    return max(5.0, min(candidate_s, remaining_s - CANDIDATE_OVERHEAD_S))


def score_test(ws: Workspace, components: Path, checkpoint: Path, workdir: Path) -> float | None:
    """Test accuracy of one trained candidate (None when prediction fails)."""
    result = ws.runner().predict(components, checkpoint, workdir)
    if not result.ok:
        return None
    preds = json.loads((workdir / "predictions.json").read_text())["pred"]
    targets = json.loads((ws.store.private_dir / "test_labels.json").read_text())["targets"]
    return round(sum(int(p == t) for p, t in zip(preds, targets, strict=True)) / len(targets), 5)


def _load() -> float:
    return round(os.getloadavg()[0], 2)


def _description(ds: BenchDataset, job: Job) -> str:
    if job.contender == "automodel+description":
        return str(ds.info.get("description_when_told", ds.description))
    return ds.description


def _workspace(ds: BenchDataset, job: Job, out: Path) -> Workspace:
    return open_workspace(ds.spec, out, description=_description(ds, job), device=job.device, seed=job.seed)


def _single(ds: BenchDataset, job: Job, out: Path, components: Path) -> dict[str, Any]:
    """One candidate trained for the whole budget, then scored."""
    ws = _workspace(ds, job, out)
    workdir = out / "candidate"
    copy_components(components, workdir)
    t0 = time.time()
    result = ws.runner().train(workdir, workdir, time_budget_s=job.budget_s, seed=job.seed)
    rec: dict[str, Any] = {"attempts": 1, "valid_attempts": 0, "search_s": round(time.time() - t0, 1),
                           "best_knobs": {c: get_knobs((workdir / f"{c}.py").read_text()) for c in COMPONENTS}}
    if not (result.ok and result.result):
        rec["error"] = f"{result.status}: {result.error.message if result.error else ''}"[:300]
        return rec
    m = result.result
    rec.update(valid_attempts=1, first_val_accuracy=m["val_accuracy"], best_val_accuracy=m["val_accuracy"],
               images_per_s=m.get("images_per_s"), epochs_run=m.get("epochs_run"),
               test_accuracy=score_test(ws, workdir, Path(m["checkpoint"]), out / "final"))
    return rec


def _automodel(ds: BenchDataset, job: Job, out: Path) -> dict[str, Any]:
    """The whole team, time-bound (the attempt cap is set far above what the budget allows)."""
    from rich.console import Console

    from automodel.run import RunOptions, run_team

    opts = RunOptions(data=ds.spec, out=out, description=_description(ds, job), iterations=1000,
                      time_budget_s=job.budget_s, candidate_budget_s=job.candidate_s, device=job.device,
                      seed=job.seed, zero_shot=job.contender != "automodel-no-zero-shot", threads=job.threads)
    log = io.StringIO()
    t0 = time.time()
    final = run_team(opts, console=Console(file=log, width=200, highlight=False))
    (out / "console.txt").write_text(log.getvalue())
    rec: dict[str, Any] = {k: final.get(k) for k in ("attempts", "valid_attempts", "first_val_accuracy",
                                                     "best_val_accuracy", "best_iteration", "test_accuracy")}
    rec["search_s"] = round(time.time() - t0, 1)
    ips = []
    for metrics in sorted((out / "iterations").glob("*/metrics.json")):
        m = json.loads(metrics.read_text())
        if m.get("images_per_s"):
            ips.append(float(m["images_per_s"]))
    rec["images_per_s"] = round(sum(ips) / len(ips), 1) if ips else None
    run = json.loads((out / "run.json").read_text())
    rec["design"] = run.get("design", {}).get("decisions", {})
    first = sorted((out / "iterations").glob("*/data.py"))
    rec["first_knobs"] = {"data": get_knobs(first[0].read_text())} if first else None
    rec["best_knobs"] = {c: get_knobs((out / "best" / f"{c}.py").read_text()) for c in COMPONENTS
                         if (out / "best" / f"{c}.py").is_file()}
    rec["history"] = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines() if line]
    return rec


def run_job(job: Job) -> dict[str, Any]:
    """Run one job from scratch (its run directory is wiped first); return its record."""
    if job.threads:
        # Every candidate's harness reads OMP_NUM_THREADS (two 2-thread jobs on 2 cores thrash).
        os.environ["OMP_NUM_THREADS"] = str(job.threads)
    ds = resolve(job.dataset, full=job.full)
    out = Path(job.out_root) / job.name
    shutil.rmtree(out, ignore_errors=True)
    rec: dict[str, Any] = {"job": asdict(job), "dataset_summary": ds.summary, "description": _description(ds, job),
                           "load_before": _load(), "started": time.time()}
    t0 = time.time()
    try:
        if job.contender.startswith("automodel"):
            rec.update(_automodel(ds, job, out))
        elif job.contender == "reference":
            rec.update(_single(ds, job, out, REFERENCE_DIR))
        elif job.contender == "naive":
            rec.update(_single(ds, job, out, NAIVE_DIR))
        elif job.contender in ("random", "tpe"):
            from benchmarks.search import run_search

            ws = _workspace(ds, job, out)
            rec.update(run_search(ws, out, sampler=job.contender, budget_s=job.budget_s,
                                  candidate_s=job.candidate_s, seed=job.seed, schedule=train_budget_schedule,
                                  score=score_test))
        else:
            raise ValueError(f"unknown contender {job.contender!r}")
    except Exception as exc:  # noqa: BLE001 - a failed contender is a row in the table, not a crash
        rec["error"] = f"{type(exc).__name__}: {exc}"[:500]
    rec["wall_s"] = round(time.time() - t0, 1)
    rec["load_after"] = _load()
    rec["run_dir"] = str(out)
    return rec
