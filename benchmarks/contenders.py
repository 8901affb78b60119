"""The contenders, each given one prepared dataset, one seed and one wall-clock budget; each returns one record.

Every job starts from the same shared, already decoded data (hard-linked into its run
directory), and its :class:`~benchmarks.clock.Clock` starts right then. The clock stops when
the contender's final model is chosen; then the benchmark predicts the test images with
it (same code, same private labels for everyone) and keeps each image's prediction.

* ``automodel``: ``python -m automodel.cli run DATA --time-budget B --out DIR --seed S``, the
  command a user types, CLI defaults otherwise; its clock stops at its "team stopped" line.
* ``reference``: the reference recipe, one harness training for the whole budget.
* ``finetune``: the best single fixed recipe: pretrained EfficientNet-Lite0 fine-tuned at
  128 px (224 on a GPU) with the settings the offline expert's Architect uses for photos,
  one training for the whole budget (photo datasets only: RGB, stored >= 64 px).
* ``probe``: frozen EfficientNet-Lite0 features at 224 px + logistic regression (:mod:`benchmarks.probe`).
* ``naive``: a one-shot script (``benchmarks/naive/``) trained through the same harness.
* ``optuna`` / ``optuna-tpe``: :mod:`benchmarks.search`.
* Ablations (orientation task): ``automodel+description`` (told what the labels mean),
  ``automodel-no-flip-check`` and ``automodel+description-no-flip-check`` (the run setting
  ``flip_check`` off, CLI ``--no-flip-check``), ``automodel-no-zero-shot``.
* ``automodel-paper``: the same CLI with ``--strategy paper`` (the paper's loop: equal shares,
  every attempt from scratch), to compare it with the default budgeted loop at equal clock.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from automodel.experts import get_knobs, set_knobs
from automodel.harness import copy_components
from automodel.interfaces import COMPONENTS, REFERENCE_DIR
from automodel.workspace import Workspace, open_workspace
from benchmarks.clock import Clock, tree_cpu_s
from benchmarks.datasets import BenchDataset, Prepared, link_prepared

__all__ = ["ABLATIONS", "CONTENDERS", "FINETUNE_KNOBS", "Job", "cli_supports", "grade_predictions", "run_dir_facts", "run_job"]

NAIVE_DIR = Path(__file__).resolve().parent / "naive"
REPO = Path(__file__).resolve().parent.parent
CONTENDERS = ("automodel", "reference", "finetune", "probe", "naive", "optuna", "optuna-tpe")
ABLATIONS = ("automodel+description", "automodel-no-flip-check", "automodel+description-no-flip-check",
             "automodel-no-zero-shot", "automodel-paper", "automodel-k2")
FINETUNE_KNOBS: dict[str, dict[str, Any]] = {
    "data": {"INPUT_SIZE": 128, "AUGMENT": "rrc", "BATCH_SIZE": 32},
    "model": {"ARCH": "efficientnet_lite0", "PRETRAINED": True, "DROPOUT": 0.2},
    "training": {"LR": 1e-3, "WEIGHT_DECAY": 0.02, "LABEL_SMOOTHING": 0.1, "WARMUP_EPOCHS": 0.5},
}
"""The offline expert Architect's photo recipe (CPU); on a GPU the input is 224 px and the batch 128."""
SINGLE_RESERVE_S = 5.0
SINGLE_RESERVE_SHARE = 0.05
"""A single training's harness budget is B - (5 s + 5% of B): process start, smoke test and last evaluation."""


@dataclass(frozen=True)
class Job:
    """One contender on one dataset with one seed and one budget."""

    dataset: str
    contender: str
    seed: int
    budget_s: float
    out_root: str
    device: str = "auto"
    full: bool = False
    threads: int = 0
    """CPU threads per job (0: all; passed to ``automodel run --threads`` only when set)."""

    @property
    def name(self) -> str:
        return f"{self.dataset}__{self.contender}__b{self.budget_s:.0f}__s{self.seed}"


def cli_supports(flag: str) -> bool:
    """Whether ``automodel run`` of this checkout accepts ``flag``."""
    from automodel.cli import build_parser

    with contextlib.redirect_stderr(io.StringIO()):
        try:
            build_parser().parse_args(["run", "demo", flag])
        except SystemExit:
            return False
    return True


def _score(ws: Workspace, components: Path, checkpoint: Path, workdir: Path) -> dict[str, Any]:
    """Predict the test images with a trained candidate; accuracy and per-image correctness."""
    result = ws.runner().predict(components, checkpoint, workdir)
    if not result.ok:
        return {"score_error": f"{result.status}: {result.error.message[:200] if result.error else ''}"}
    preds = json.loads((workdir / "predictions.json").read_text())["pred"]
    return grade_predictions(preds, ws.store.private_dir)


def grade_predictions(preds: list[int], private_dir: Path) -> dict[str, Any]:
    """Accuracy and a 0/1 string of per-image correctness against the privately held test labels."""
    targets = json.loads((private_dir / "test_labels.json").read_text())["targets"]
    correct = [int(p == t) for p, t in zip(preds, targets, strict=True)]
    return {"test_accuracy": round(sum(correct) / len(correct), 5), "test_size": len(correct),
            "test_predictions": [int(p) for p in preds], "test_correct": "".join(map(str, correct))}


def _metrics_fields(m: dict[str, Any], steps_per_epoch: int | None) -> dict[str, Any]:
    history = m.get("history") or []
    first_full = bool(history) and (steps_per_epoch is None or history[0].get("steps") == steps_per_epoch)
    return {"epochs_run": m.get("epochs_run"), "epochs_planned": m.get("epochs_planned"),
            "train_s": m.get("train_seconds"), "images_per_s": m.get("images_per_s"),
            "infeasible": not first_full, "curve": history}


def _single(ws: Workspace, job: Job, out: Path, clock: Clock, components: Path,
            knobs: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """One harness training for the whole budget; the final model is its best epoch."""
    workdir = out / "candidate"
    copy_components(components, workdir)
    for component, values in (knobs or {}).items():
        path = workdir / f"{component}.py"
        text, applied = set_knobs(path.read_text(), values)
        if set(values) - set(applied):
            raise KeyError(f"{path} has no knobs {sorted(set(values) - set(applied))}")
        path.write_text(text)
    train_s = max(5.0, clock.remaining() - SINGLE_RESERVE_S - SINGLE_RESERVE_SHARE * clock.budget_s)
    events: dict[str, Any] = {"epochs": []}

    def on_event(ev: dict[str, Any]) -> None:
        if ev.get("event") == "smoke":
            events["smoke"] = ev
        elif ev.get("event") == "epoch":
            events["epochs"].append({k: ev.get(k) for k in ("epoch", "val_accuracy", "train_loss", "seconds", "steps")})

    # Killed at the deadline plus a tenth of the budget; what it saved by then still counts.
    runner = ws.runner(grace_s=max(5.0, clock.remaining() - train_s + 0.1 * clock.budget_s), threads=job.threads)
    result = runner.train(workdir, workdir, time_budget_s=train_s, seed=job.seed, on_event=on_event)
    clock.stop()
    rec: dict[str, Any] = {"attempts": 1, "harness_budget_s": round(train_s, 1), "status": result.status,
                           "settings": {c: get_knobs((workdir / f"{c}.py").read_text()) for c in COMPONENTS}}
    steps = (events.get("smoke") or {}).get("steps_per_epoch")
    if result.ok and result.result:
        m = result.result
    elif events["epochs"] and (workdir / "checkpoint.pt").is_file():
        # Stopped at the deadline after at least one epoch: its best checkpoint is its final model.
        curve = events["epochs"]
        m = {"val_accuracy": max(float(c["val_accuracy"]) for c in curve), "history": curve, "epochs_run": len(curve),
             "train_seconds": round(sum(float(c.get("seconds") or 0) for c in curve), 2),
             "checkpoint": str(workdir / "checkpoint.pt")}
        rec["stopped_at_deadline"] = True
    else:
        rec.update(valid_attempts=0, train_s=round(sum(float(c.get("seconds") or 0) for c in events["epochs"]), 2),
                   error=f"{result.status}: {result.error.message if result.error else ''}"[:300])
        return rec
    fields = _metrics_fields(m, steps)
    rec.update(fields, valid_attempts=0 if fields["infeasible"] else 1, first_val_accuracy=m["val_accuracy"],
               best_val_accuracy=m["val_accuracy"])
    if fields["infeasible"]:
        rec["error"] = "infeasible: not one full epoch fitted into the budget"
        return rec
    rec.update(_score(ws, workdir, Path(m["checkpoint"]), out / "final"))
    return rec


def _automodel_flags(contender: str, ds: BenchDataset) -> list[str]:
    flags: list[str] = []
    if "+description" in contender:
        flags += ["--description", str(ds.info.get("description_when_told", ds.description))]
    if "no-flip-check" in contender:
        flags.append("--no-flip-check")
    if "no-zero-shot" in contender:
        flags.append("--no-zero-shot")
    if contender.endswith("-paper"):
        flags += ["--strategy", "paper"]
    if contender.endswith("-k2"):
        flags += ["--parallel", "2"]  # two candidates at once, one thread each (issue 14's K=1 vs K=2)
    return flags


def _end_with_parent() -> None:
    """In the child before exec (Linux): SIGTERM when the benchmark job dies, so no run outlives a killed benchmark."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def _automodel(ds: BenchDataset, job: Job, out: Path, clock: Clock) -> dict[str, Any]:
    """``automodel run`` as a user runs it, in a child process; the benchmark keeps the clock."""
    flags = _automodel_flags(job.contender, ds)
    if "--no-flip-check" in flags and not cli_supports("--no-flip-check"):
        clock.stop()
        return {"error": "skipped: this checkout's 'automodel run' has no --no-flip-check yet (the lead's run "
                         "setting flip_check); rerun once main has it"}
    argv = [sys.executable, "-m", "automodel.cli", "run", ds.spec, "--time-budget", f"{job.budget_s:g}",
            "--out", str(out), "--seed", str(job.seed), *flags]
    if job.threads:
        argv += ["--threads", str(job.threads)]
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True,
                            start_new_session=True, cwd=str(REPO), preexec_fn=_end_with_parent)
    lines: list[str] = []
    stopped: dict[str, float] = {}

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(f"[{clock.elapsed():7.1f}] {line.rstrip()}")
            if "team stopped" in line and "wall" not in stopped:
                stopped["cpu"] = tree_cpu_s(proc.pid)
                stopped["wall"] = clock.elapsed()
                clock.stop(extra_cpu_s=stopped["cpu"])

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    soft = clock.t0 + job.budget_s + max(15.0, 0.1 * job.budget_s)
    hard = clock.t0 + 2 * job.budget_s + 120.0
    interrupted = killed = False
    while proc.poll() is None:
        now = time.monotonic()
        if now > soft and not interrupted and "wall" not in stopped:
            proc.send_signal(signal.SIGINT)  # the CLI stops after its current step and still scores its best
            interrupted = True
        if now > hard:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            killed = True
        time.sleep(0.2)
    reader.join(timeout=5)
    (out / "console.txt").write_text("\n".join(lines) + "\n")
    clock.stop()  # no "team stopped" line: the process's end is the final model's time
    rec: dict[str, Any] = {"argv": [Path(argv[0]).name, *argv[1:]], "returncode": proc.returncode,
                           "interrupted_at_budget": interrupted, "killed": killed}
    final_path = out / "final.json"
    final = json.loads(final_path.read_text()) if final_path.is_file() else {}
    rec.update({k: final.get(k) for k in ("attempts", "valid_attempts", "first_val_accuracy", "best_val_accuracy",
                                          "best_iteration")})
    rec["self_reported_elapsed_s"] = final.get("elapsed_s")
    history = [json.loads(x) for x in (out / "history.jsonl").read_text().splitlines() if x.strip()] \
        if (out / "history.jsonl").is_file() else []
    rec["history"] = history
    rec.update(run_dir_facts(out))
    run = json.loads((out / "run.json").read_text()) if (out / "run.json").is_file() else {}
    rec["run_budget"] = run.get("budget")
    rec["design"] = run.get("design", {}).get("decisions") if isinstance(run.get("design"), dict) else None
    pred_path = out / "final" / "predictions.json"
    if pred_path.is_file() and (out / "private" / "test_labels.json").is_file():
        rec.update(grade_predictions(json.loads(pred_path.read_text())["pred"], out / "private"))
    elif not final:
        rec["error"] = f"no final.json (exit {proc.returncode}); see console.txt"
    return rec


def run_dir_facts(out: Path) -> dict[str, Any]:
    """Per-attempt facts read from the run directory: training seconds, infeasible attempts, flip settings."""
    train_s, infeasible, hflip = 0.0, 0, []
    meta_path = out / "data" / "meta.json"
    n_train = int(json.loads(meta_path.read_text())["counts"].get("train", 0)) if meta_path.is_file() else 0
    for folder in sorted((out / "iterations").glob("*")):
        data_py = folder / "data.py"
        if data_py.is_file():
            hflip.append(get_knobs(data_py.read_text()).get("HFLIP"))
        mpath = folder / "metrics.json"
        if mpath.is_file():
            m = json.loads(mpath.read_text())
            train_s += float(m.get("train_seconds") or 0.0)
            history = m.get("history") or []
            steps = max(1, n_train // int(m.get("batch_size") or 1)) if n_train else None
            # Not one full epoch: the attempt's score is that of an untrained model (infeasible plan).
            if not history or (steps is not None and int(history[0].get("steps") or 0) < steps):
                infeasible += 1
    fixed = next((i + 1 for i, h in enumerate(hflip) if h is False), None)
    return {"train_s": round(train_s, 2), "infeasible_attempts": infeasible, "hflip_per_attempt": hflip,
            "attempts_until_flips_fixed": fixed}


def _probe(ws: Workspace, job: Job, out: Path, clock: Clock) -> dict[str, Any]:
    from benchmarks.probe import BudgetSpent, run_probe

    try:
        rec, predict = run_probe(ws.data, clock, threads=job.threads, device=ws.env.device)
    except BudgetSpent as exc:
        clock.stop()
        return {"attempts": 1, "valid_attempts": 0, "error": f"over budget: {exc}"}
    x_test, _ = ws.data.arrays("test")
    rec.update(grade_predictions(predict(x_test), ws.store.private_dir))
    return rec


def _optuna(ws: Workspace, job: Job, out: Path, clock: Clock) -> dict[str, Any]:
    from benchmarks.search import run_optuna

    rec = run_optuna(ws, out, clock, sampler="tpe" if job.contender == "optuna-tpe" else "random", seed=job.seed,
                     threads=job.threads)
    final = rec.pop("final", None)
    if final:
        rec.update(_score(ws, Path(final["folder"]), Path(final["checkpoint"]), out / "final"))
    else:
        rec["error"] = "no trial completed an epoch within the budget"
    return rec


def run_job(job: Job, prepared: Prepared) -> dict[str, Any]:
    """Run one job in a fresh run directory; return its record (errors are fields, not exceptions)."""
    import shutil

    from benchmarks.provenance import git_state, machine

    out = Path(job.out_root) / job.name
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    link_prepared(prepared, out)
    ds = prepared.dataset
    rec: dict[str, Any] = {"job": asdict(job), "dataset_summary": ds.summary, "git": git_state(),
                           "machine_before": machine(), "started": time.time(),
                           "prepared": {"seconds": prepared.seconds, "test_ids_hash": prepared.test_ids_hash,
                                        "test_size": prepared.test_size}}
    if job.threads:
        os.environ["OMP_NUM_THREADS"] = str(job.threads)
    clock = Clock(job.budget_s)
    try:
        if job.contender.startswith("automodel"):
            rec.update(_automodel(ds, job, out, clock))
        else:
            ws = open_workspace(ds.spec, out, device=job.device, seed=job.seed)
            rec["device"] = ws.env.device
            if job.contender == "reference":
                rec.update(_single(ws, job, out, clock, REFERENCE_DIR))
            elif job.contender == "naive":
                rec.update(_single(ws, job, out, clock, NAIVE_DIR))
            elif job.contender == "finetune":
                knobs = {k: dict(v) for k, v in FINETUNE_KNOBS.items()}
                if ws.env.cuda:
                    knobs["data"].update(INPUT_SIZE=224, BATCH_SIZE=128)
                rec.update(_single(ws, job, out, clock, REFERENCE_DIR, knobs))
            elif job.contender == "probe":
                rec.update(_probe(ws, job, out, clock))
            elif job.contender in ("optuna", "optuna-tpe"):
                rec.update(_optuna(ws, job, out, clock))
            else:
                raise ValueError(f"unknown contender {job.contender!r}; choose from {CONTENDERS + ABLATIONS}")
    except Exception as exc:  # noqa: BLE001 - a failed contender is a row in the table, not a crash
        clock.stop()
        rec["error"] = f"{type(exc).__name__}: {exc}"[:500]
    rec["clock"] = clock.summary()
    rec["machine_after"] = machine()
    rec["run_dir"] = str(out)
    return rec
