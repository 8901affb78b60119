"""Run the team end to end: prepare, loop under the budget, save state, score the best once."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time
from pathlib import Path
from typing import Any

import structlog
from autogen_agentchat.base import TaskResult
from autogen_agentchat.conditions import ExternalTermination
from rich.console import Console

from automodel._console import Display, PlainDisplay
from automodel._environment import agent_errors_to_log
from automodel.budget import StopReason, budget_use
from automodel.config import ConfigError, load_backend_config, make_clients
from automodel.data import flip_change_rate
from automodel.executors import candidate_gpus, ray_options
from automodel.harness import write_json_atomic
from automodel.report import write_report
from automodel.runtime import Run, forget_run, open_run
from automodel.settings import RunSettings, SettingsError
from automodel.store import RunStore
from automodel.submission import preflight_run, write_submission
from automodel.team import AutoModelTeam, build_team, stop_reason_of, task_text
from automodel.workspace import Workspace, open_workspace

__all__ = ["RunOptions", "RunSettings", "finalize", "prepare_run", "run_team", "run_team_async"]

log = structlog.get_logger(__name__)


RunOptions = RunSettings
"""The settings of ``automodel run`` (kept under its first name; see :class:`automodel.settings.RunSettings`)."""


def prepare_run(opts: RunSettings) -> RunStore:
    """Prepare the data and write ``run.json`` (on resume: keep its settings, only refresh the session).

    Raises:
        FileNotFoundError: ``--resume`` without a run there.
        FileExistsError: a new run into a directory that already holds one.
        SettingsError: ``--resume`` of a run written by another version.
    """
    out = Path(opts.out)
    store = RunStore(out)
    existing = store.read_run()
    if opts.resume and not existing:
        raise FileNotFoundError(f"--resume: {out}/run.json does not exist; start the run without --resume")
    if not opts.resume and existing and store.history():
        raise FileExistsError(f"{out} already holds a run; pass --resume to continue it, or choose another --out")
    settings = RunSettings.from_run_record(existing, f"{out}/run.json") if opts.resume else opts
    _check_placement(settings)
    options: dict[str, Any] = {k: v for k, v in (("max_train", settings.max_train), ("max_test", settings.max_test)) if v}
    ws = open_workspace(settings.data, out, description=settings.description, device=settings.device,
                        seed=settings.seed, val_fraction=settings.val_fraction, id_col=settings.id_col,
                        label_col=settings.label_col, weights_dir=settings.weights_dir, keep_prepared=opts.resume,
                        **options)
    if opts.resume:
        store.update_run(status="running", sessions=int(existing.get("sessions", 1)) + 1)
        forget_run(out)
        return store
    backends = load_backend_config(settings.config)
    flip_rate = round(_flip_rate(ws), 3) if settings.flip_check else 0.0
    store.update_run(
        status="running",
        created=time.time(),
        sessions=1,
        settings=settings.record(),
        data=str(settings.data),
        description=ws.description,
        profile={**ws.data.meta.profile.model_dump(mode="json"), "num_train": int(ws.data.meta.counts.get("train", 0)),
                 "in_chans": ws.data.meta.in_chans, "hflip_change_rate": flip_rate},
        environment=ws.env.as_context(),
        local_weights=dict(ws.env.pretrained.local),
        held_out=[str(p) for p in ws.held_out],
        backends=backends.describe(),
        elapsed_before_s=0.0,
    )
    forget_run(out)
    return store


def _check_placement(settings: RunSettings) -> None:
    """Where candidates run is usable, before any data is prepared: ``--gpus`` / ``--device cuda:N``
    name GPUs this process sees; the ray executor's options (config file and settings) are valid.

    Raises:
        SettingsError: they are not (the message says which and what is valid).
        ConfigError: the backend config file cannot be read.
    """
    try:
        if settings.executor == "ray":
            ray_options(load_backend_config(settings.config).ray, address=settings.ray_address,
                        num_cpus=settings.ray_num_cpus, num_gpus=settings.ray_num_gpus)
        elif settings.gpus is not None or settings.device.startswith("cuda:"):
            candidate_gpus(settings.gpus, settings.device)
    except ValueError as exc:
        if isinstance(exc, ConfigError):
            raise
        raise SettingsError(str(exc)) from exc


def _flip_rate(ws: Workspace) -> float:
    x, y = ws.data.arrays("train")
    assert y is not None
    return flip_change_rate(x, y, ws.data.meta.num_classes)


async def run_team_async(opts: RunSettings, *, console: Console | None = None,
                         display: Display | None = None) -> dict[str, Any]:
    """Run (or resume) the team until its budget ends; then score the best once.

    ``display`` renders progress (default: plain lines on ``console``; see :func:`automodel._console.make_display`).
    """
    console = console or Console(highlight=False)
    display = display or PlainDisplay(console)
    store = prepare_run(opts)
    for warning in preflight_run(store.root):  # before any training: the final submission.csv will be accepted
        console.print(f"[yellow]submission: {warning}[/]")
    run = open_run(store.root)
    settings = run.settings
    console.print(f"[bold]AutoModel[/] run in {store.root} ({'resumed' if opts.resume else 'new'}); "
                  f"backends: {', '.join(sorted(set(run.record.get('backends', {}).values())))}")
    env = run.record["environment"]
    plan = run.plan()
    caps = f", at most {settings.max_attempts} attempts" if settings.max_attempts else ""
    console.print(f"device {env['device']}, pretrained weights: hub={env['pretrained']['hub']} "
                  f"local={env['pretrained']['local']}; budget {settings.time_budget_s:.0f}s ({settings.strategy}{caps}): "
                  f"exploration candidates ~{plan.explore_budget_s():.0f}s, final training {plan.final_reserve_s():.0f}s"
                  + (f"; {settings.parallel_candidates} candidates at once" if settings.parallel_candidates > 1 else ""))
    display.start(store.root, run.record)
    run.on_event.append(display.on_event)
    run.session_start = time.time()
    external = ExternalTermination()
    team = _team(run, external)
    task: str | None = task_text(run.record)
    saved = store.load_team_state()
    if opts.resume and saved:
        await team.load_state(saved)
        task = None
        console.print(f"resuming after attempt {len(store.history())} (best {store.best_val_accuracy()})")
    elif opts.resume:
        task = task_text(run.record, resume=store.best_dir.exists())
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
    # A session starts at an attempt boundary: a resumed run whose budget or cap is already
    # spent goes straight to scoring instead of starting one more attempt.
    reason: StopReason | None = run.plan().stop_reason(at_boundary=True, best=store.best_val_accuracy(),
                                                       tokens_used=_tokens_used(store)) if opts.resume else None
    try:
        while reason is None:
            result: TaskResult | None = None
            async for item in team.run_stream(task=task, output_task_messages=task is not None):
                if isinstance(item, TaskResult):
                    result = item
                else:
                    display.on_message(item)
            task = None
            await _save(store, team, run)
            reason = stop_reason_of(result.stop_reason if result else None)
            if external.terminated:
                reason = StopReason(kind="interrupted", message="stopped by Ctrl-C")
            if reason is not None and reason.pauses_only:
                reason = None  # only the pause after an attempt: go on
                continue
            break
    finally:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.remove_signal_handler(signal.SIGINT)
        run.on_event.remove(display.on_event)
        display.stop()
    stop_text = reason.message if reason else "stopped"
    console.print(f"[bold]team stopped[/]: {stop_text}")
    # Through the run object: finalize reads its (cached) record, not run.json again.
    open_run(store.root).update(stop_reason=stop_text, stop_kind=reason.kind if reason else None)
    final = await asyncio.to_thread(finalize, store, console=console)
    store.update_run(status="done" if not external.terminated else "stopped")
    write_report(store)
    console.print(f"report: {store.root / 'report.html'} (and report.md)")
    display.finish(final)
    return final


def _team(run: Run, external: ExternalTermination) -> AutoModelTeam:
    """The team of ``automodel run``: the run's backends and retry policy (its config file), its
    try-out setting, a pause after each attempt (to save the team state) and Ctrl-C as ``external``."""
    backends = run.backends()
    return build_team(run.store.root, make_clients(backends), external=external, pause_after_each_attempt=True,
                      fallback_to_expert=backends.fallback_to_expert, max_retries=backends.max_retries,
                      request_timeout_s=backends.request_timeout_s, backoff_s=backends.backoff_s,
                      try_out=run.settings.try_out)


def _tokens_used(store: RunStore) -> int:
    return sum(int(u.get("prompt_tokens", 0)) + int(u.get("completion_tokens", 0))
               for u in store.usage().values() if isinstance(u, dict))


async def _save(store: RunStore, team: Any, run: Run) -> None:
    state = await team.save_state()
    store.save_team_state(json.loads(json.dumps(state, default=str)))
    run.update(elapsed_before_s=run.elapsed_s())
    run.session_start = time.time()


def run_team(opts: RunOptions, *, console: Console | None = None, display: Display | None = None) -> dict[str, Any]:
    """Synchronous wrapper of :func:`run_team_async`; AutoGen's tracebacks of an agent's exception go to
    ``run.log`` (the exception itself still reaches the caller)."""
    with agent_errors_to_log():
        return asyncio.run(run_team_async(opts, console=console, display=display))


def finalize(store: RunStore, *, console: Console | None = None) -> dict[str, Any]:
    """Score the best candidate once: test accuracy when labels are held, ``submission.csv`` when asked.

    Writes ``final.json``; returns it.
    """
    console = console or Console(highlight=False)
    run = open_run(store.root)
    metrics = store.best_metrics()
    history = store.history()
    first_ok = next((a for a in history if a.val_accuracy is not None), None)
    final: dict[str, Any] = {
        "attempts": len(history),
        "valid_attempts": sum(a.val_accuracy is not None for a in history),
        "first_val_accuracy": first_ok.val_accuracy if first_ok else None,
        "best_val_accuracy": metrics["val_accuracy"] if metrics else None,
        "best_iteration": int((store.best_dir / "ITERATION").read_text()) if metrics else None,
    }
    started = time.time()

    def close_clock() -> None:
        # The budget's clock closes after the test split is scored: that scoring is part of the
        # budget (FINALIZE_RESERVE_S is kept for it), so the idle tail is what the user's clock shows.
        final["elapsed_s"] = round(run.elapsed_s(), 1)
        final["budget_use"] = budget_use(run.record, [a.model_dump() for a in history], run.elapsed_s(),
                                         finalize_s=time.time() - started)

    if metrics is None:
        console.print("[red]no candidate produced a valid score; nothing to evaluate[/]")
        close_clock()
        write_json_atomic(store.root / "final.json", final)
        return final
    data = run.data()
    if data.test_ids:
        workdir = store.root / "final"
        result = run.runner().predict(store.best_dir, store.best_dir / "checkpoint.pt", workdir)
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
                write_submission(store.root / "submission.csv", sub, classes, data.test_ids, preds)
                final["submission"] = str(store.root / "submission.csv")
    close_clock()
    write_json_atomic(store.root / "final.json", final)
    console.print(
        f"[bold green]best validation accuracy {final['best_val_accuracy']:.4f}[/] (attempt {final['best_iteration']}, "
        f"first {final['first_val_accuracy']})"
        + (f"; [bold]test accuracy {final['test_accuracy']:.4f}[/]" if "test_accuracy" in final else "")
        + (f"; submission: {final['submission']}" if "submission" in final else "")
    )
    return final
