"""Run the team end to end: prepare, loop under the budget, save state, score the best once."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import json
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from autogen_agentchat.base import TaskResult
from autogen_agentchat.conditions import ExternalTermination
from autogen_agentchat.messages import BaseChatMessage, StructuredMessage, ThoughtEvent
from rich.console import Console

from automodel._console import EventPrinter
from automodel.config import load_backend_config, make_clients
from automodel.data import flip_change_rate
from automodel.harness import write_json_atomic
from automodel.messages import (
    AnalystFeedback,
    ComponentCode,
    ExecutionError,
    HistoryEntry,
    RunReport,
    TechnicalDesign,
)
from automodel.report import write_report
from automodel.roles import forget_context, open_context
from automodel.store import RunStore
from automodel.team import build_team, task_text
from automodel.workspace import Workspace, open_workspace

__all__ = ["RunOptions", "finalize", "prepare_run", "run_team", "run_team_async"]

log = structlog.get_logger(__name__)


@dataclass
class RunOptions:
    """Everything ``automodel run`` accepts."""

    data: str
    out: Path
    description: str = ""
    config: Path | None = None
    iterations: int = 6
    """Attempts after the first pipeline."""
    time_budget_s: float = 900.0
    candidate_budget_s: float | None = None
    target: float | None = None
    device: str = "auto"
    seed: int = 0
    val_fraction: float = 0.2
    id_col: str | None = None
    label_col: str | None = None
    weights_dir: str | None = None
    max_train: int | None = None
    resume: bool = False
    zero_shot: bool = True
    max_repairs: int = 2
    token_budget: int | None = None
    max_cost_usd: float | None = None
    """Spend cap for priced backends; once spent, the offline expert plays their turns."""
    """Total LLM tokens (prompt + completion) before the team stops; None for no limit."""
    memory_limit_mb: int | None = None
    max_epochs: int | None = None
    max_test: int | None = None
    threads: int = 0
    """CPU threads per candidate (0: all this process may use)."""


def prepare_run(opts: RunOptions) -> RunStore:
    """Prepare the data and write ``run.json`` (on resume: keep it, only refresh the session)."""
    out = Path(opts.out)
    store = RunStore(out)
    existing = store.read_run()
    if opts.resume and not existing:
        raise FileNotFoundError(f"--resume: {out}/run.json does not exist; start the run without --resume")
    if not opts.resume and existing and store.history():
        raise FileExistsError(f"{out} already holds a run; pass --resume to continue it, or choose another --out")
    options: dict[str, Any] = {k: v for k, v in (("max_train", opts.max_train), ("max_test", opts.max_test)) if v}
    ws = open_workspace(opts.data, out, description=opts.description, device=opts.device, seed=opts.seed,
                        val_fraction=opts.val_fraction, id_col=opts.id_col, label_col=opts.label_col,
                        weights_dir=opts.weights_dir, keep_prepared=opts.resume, **options)
    if opts.resume:
        store.update_run(status="running", sessions=int(existing.get("sessions", 1)) + 1)
        forget_context(out)
        return store
    backends = load_backend_config(opts.config)
    budget_share = opts.candidate_budget_s or max(20.0, 0.8 * opts.time_budget_s / (opts.iterations + 1) - 25.0)
    env = ws.env.as_context(budget_share)
    store.update_run(
        status="running",
        created=time.time(),
        sessions=1,
        data=str(opts.data),
        description=ws.description,
        profile={**ws.data.meta.profile.model_dump(mode="json"), "num_train": int(ws.data.meta.counts.get("train", 0)),
                 "in_chans": ws.data.meta.in_chans, "hflip_change_rate": round(_flip_rate(ws), 3)},
        environment=env,
        local_weights=dict(ws.env.pretrained.local),
        held_out=[str(p) for p in ws.held_out],
        zero_shot=opts.zero_shot,
        backends=backends.describe(),
        config_file=str(opts.config) if opts.config else None,
        budget={
            "max_attempts": opts.iterations + 1,
            "time_budget_s": opts.time_budget_s,
            "candidate_budget_s": budget_share,
            "candidate_overhead_s": 25.0,
            "min_candidate_s": 10.0,
            "target": opts.target,
            "max_repairs": opts.max_repairs,
            "token_budget": opts.token_budget,
            "max_cost_usd": opts.max_cost_usd,
            "memory_limit_mb": opts.memory_limit_mb,
            "max_epochs": opts.max_epochs,
            "threads": opts.threads,
        },
        elapsed_before_s=0.0,
    )
    forget_context(out)
    return store


def _flip_rate(ws: Workspace) -> float:
    x, y = ws.data.arrays("train")
    assert y is not None
    return flip_change_rate(x, y, ws.data.meta.num_classes)


class _MessagePrinter:
    """One line per team message: who speaks and what it says."""

    def __init__(self, console: Console):
        self.console = console

    def __call__(self, item: Any) -> None:
        if isinstance(item, ThoughtEvent):
            self.console.print(f"    [dim]{item.source}: {item.content[:200]}[/]")
            return
        if not isinstance(item, BaseChatMessage):
            return
        who = f"[bold cyan]{item.source:>17}[/]"
        if not isinstance(item, StructuredMessage):
            self.console.print(f"{who} {item.to_text()[:200]}")
            return
        c = item.content
        if isinstance(c, TechnicalDesign):
            text = f"design ({c.author}): {c.summary}"
            for r in c.rationale[:4]:
                text += f"\n{'':>18}- {r}"
        elif isinstance(c, ComponentCode):
            text = f"{c.component}.py [{c.phase}] {c.change[:160]}"
        elif isinstance(c, ExecutionError):
            text = f"[red]#{c.iteration} {c.status} in {c.component}.py: {c.error_type}: {c.message[:160]}[/] (repair {c.repair_attempt}/{c.max_repairs})"
        elif isinstance(c, RunReport):
            acc = f"val {c.val_accuracy:.4f}" if c.val_accuracy is not None else c.error[:140]
            color = {"improved": "green", "discarded": "yellow"}.get(c.status, "red")
            text = f"[{color}]#{c.iteration} {c.status}[/]: {acc}; best {c.best_val_accuracy} ({c.seconds:.0f}s)"
        elif isinstance(c, HistoryEntry):
            text = f"[dim]{c.summary[:240]}[/]"
        elif isinstance(c, AnalystFeedback):
            text = f"-> {c.target}: {c.diagnosis[:120]} Change: {c.change[:120]}"
        else:
            text = str(c)[:200]
        self.console.print(f"{who} {text}")


async def run_team_async(opts: RunOptions, *, console: Console | None = None) -> dict[str, Any]:
    """Run (or resume) the team until its budget ends; then score the best once."""
    console = console or Console(highlight=False)
    store = prepare_run(opts)
    ctx = open_context(store.root)
    run = store.read_run()
    console.print(f"[bold]AutoModel[/] run in {store.root} ({'resumed' if opts.resume else 'new'}); "
                  f"backends: {', '.join(sorted(set(run.get('backends', {}).values())))}")
    env = run["environment"]
    console.print(f"device {env['device']}, pretrained weights: hub={env['pretrained']['hub']} "
                  f"local={env['pretrained']['local']}; budget {run['budget']['time_budget_s']:.0f}s, "
                  f"{run['budget']['max_attempts']} attempts, {run['budget']['candidate_budget_s']:.0f}s per candidate")
    printer = EventPrinter(console, prefix="    ")
    ctx.on_event.append(printer)
    ctx.session_start = time.time()
    backends = load_backend_config(Path(run["config_file"]) if run.get("config_file") else None)
    external = ExternalTermination()
    team = build_team(store.root, make_clients(backends), external=external, pause_after_each_attempt=True,
                      fallback_to_expert=backends.fallback_to_expert, max_retries=backends.max_retries,
                      request_timeout_s=backends.request_timeout_s, backoff_s=backends.backoff_s)
    task: str | None = task_text(run)
    saved = store.load_team_state()
    if opts.resume and saved:
        await team.load_state(saved)
        task = None
        console.print(f"resuming after attempt {len(store.history())} (best {store.best_val_accuracy()})")
    elif opts.resume:
        task = task_text(run, resume=store.best_dir.exists())
    loop = asyncio.get_running_loop()
    interrupted = {"count": 0}

    def on_sigint() -> None:
        interrupted["count"] += 1
        if interrupted["count"] > 1:
            raise KeyboardInterrupt
        console.print("[yellow]stopping after the current step (Ctrl-C again to abort)...[/]")
        external.set()

    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGINT, on_sigint)
    show = _MessagePrinter(console)
    stop_reason = ""
    try:
        while True:
            result: TaskResult | None = None
            async for item in team.run_stream(task=task, output_task_messages=task is not None):
                if isinstance(item, TaskResult):
                    result = item
                else:
                    show(item)
            task = None
            await _save(store, team, ctx)
            stop_reason = (result.stop_reason or "") if result else ""
            if "attempt recorded" in stop_reason and "budget:" not in stop_reason and not external.terminated:
                continue
            break
    finally:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.remove_signal_handler(signal.SIGINT)
        ctx.on_event.remove(printer)
    console.print(f"[bold]team stopped[/]: {stop_reason or 'interrupted'}")
    final = await asyncio.to_thread(finalize, store, console=console)
    store.update_run(status="done" if not external.terminated else "stopped", stop_reason=stop_reason)
    write_report(store)
    console.print(f"report: {store.root / 'report.md'}")
    return final


async def _save(store: RunStore, team: Any, ctx: Any) -> None:
    state = await team.save_state()
    store.save_team_state(json.loads(json.dumps(state, default=str)))
    ctx.run = store.update_run(elapsed_before_s=ctx.elapsed_s())
    ctx.session_start = time.time()


def run_team(opts: RunOptions, *, console: Console | None = None) -> dict[str, Any]:
    """Synchronous wrapper of :func:`run_team_async`."""
    return asyncio.run(run_team_async(opts, console=console))


def finalize(store: RunStore, *, console: Console | None = None) -> dict[str, Any]:
    """Score the best candidate once: test accuracy when labels are held, ``submission.csv`` when asked.

    Writes ``final.json``; returns it.
    """
    console = console or Console(highlight=False)
    ctx = open_context(store.root)
    metrics = store.best_metrics()
    history = store.history()
    first_ok = next((a for a in history if a.val_accuracy is not None), None)
    final: dict[str, Any] = {
        "attempts": len(history),
        "valid_attempts": sum(a.val_accuracy is not None for a in history),
        "first_val_accuracy": first_ok.val_accuracy if first_ok else None,
        "best_val_accuracy": metrics["val_accuracy"] if metrics else None,
        "best_iteration": int((store.best_dir / "ITERATION").read_text()) if metrics else None,
        "elapsed_s": round(ctx.elapsed_s(), 1),
    }
    if metrics is None:
        console.print("[red]no candidate produced a valid score; nothing to evaluate[/]")
        write_json_atomic(store.root / "final.json", final)
        return final
    data = ctx.data()
    if data.test_ids:
        workdir = store.root / "final"
        result = ctx.runner().predict(store.best_dir, store.best_dir / "checkpoint.pt", workdir)
        if not result.ok:
            final["test_error"] = f"{result.status}: {result.error.message if result.error else ''}"
            console.print(f"[red]scoring the best candidate failed: {final['test_error']}[/]")
        else:
            preds = json.loads((workdir / "predictions.json").read_text())["pred"]
            classes = data.meta.classes
            labels_path = store.private_dir / "test_labels.json"
            if labels_path.is_file():
                private = json.loads(labels_path.read_text())
                targets = private["targets"]
                correct = [p == t for p, t in zip(preds, targets, strict=True)]
                final["test_accuracy"] = round(sum(correct) / len(correct), 5)
                per_class = {}
                for k, name in enumerate(classes):
                    idx = [i for i, t in enumerate(targets) if t == k]
                    if idx:
                        per_class[name] = round(sum(correct[i] for i in idx) / len(idx), 4)
                final["per_class_test_accuracy"] = per_class
                final["test_size"] = len(targets)
            sub = data.meta.submission
            if sub is not None:
                by_id = dict(zip(data.test_ids, preds, strict=True))
                tmp = store.root / ".submission.csv.tmp"
                with open(tmp, "w", newline="", encoding="utf-8") as f:
                    writer = csv.writer(f)
                    writer.writerow([sub.id_col, sub.label_col])
                    for i in sub.ids:
                        if i in by_id:
                            writer.writerow([i, classes[by_id[i]]])
                tmp.replace(store.root / "submission.csv")
                final["submission"] = str(store.root / "submission.csv")
    write_json_atomic(store.root / "final.json", final)
    console.print(
        f"[bold green]best validation accuracy {final['best_val_accuracy']:.4f}[/] (attempt {final['best_iteration']}, "
        f"first {final['first_val_accuracy']})"
        + (f"; [bold]test accuracy {final['test_accuracy']:.4f}[/]" if "test_accuracy" in final else "")
        + (f"; submission: {final['submission']}" if "submission" in final else "")
    )
    return final
