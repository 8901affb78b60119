"""What a run shows while it works: plain lines, a rich live view, or one JSON event per line.

A :class:`Display` receives three kinds of input from the runner: harness events of the
candidate in training (``smoke``, ``progress``, ``epoch``, ``budget``, ``error``), the team's
messages, and the run's start and end. :func:`make_display` picks the renderer: ``live`` on
a terminal, ``plain`` on a pipe or in CI (``CI`` set), ``json`` when asked (``--json``).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import IO, Any, Literal

import structlog
from autogen_agentchat.messages import BaseChatMessage, StructuredMessage, ThoughtEvent
from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from automodel._logs import redact
from automodel.messages import (
    AnalystFeedback,
    ComponentCode,
    ExecutionError,
    HistoryEntry,
    RunReport,
    TechnicalDesign,
)

__all__ = ["Display", "EventPrinter", "JsonDisplay", "LiveDisplay", "MessagePrinter", "PlainDisplay", "make_display"]

log = structlog.get_logger("automodel.run")

DisplayMode = Literal["auto", "plain", "live", "json"]

DOING = {
    "architect": "designing the first pipeline",
    "data_engineer": "writing data.py",
    "model_engineer": "writing model.py",
    "training_engineer": "writing training.py",
    "executor": "training and scoring the candidate",
    "summarizer": "summarising the attempt",
    "analyst": "diagnosing the history and choosing the next change",
}


class EventPrinter:
    """Prints harness events as one readable line each."""

    def __init__(self, console: Console | None = None, *, prefix: str = ""):
        self.console = console or Console(highlight=False)
        self.prefix = prefix

    def __call__(self, event: dict[str, Any]) -> None:
        kind = event.get("event")
        p = self.prefix
        if kind == "smoke":
            self.console.print(
                f"{p}[green]smoke test passed[/]: {event['params'] / 1e6:.2f}M params, {event['input_size']}px, "
                f"batch {event['batch_size']}, {event['est_step_s'] * 1000:.0f} ms/step -> {event['epochs']} epochs "
                f"x {event['steps_per_epoch']} steps on {event['device']}"
            )
        elif kind == "progress" and "epoch" not in event:  # a job without epochs (feature extraction)
            self.console.print(f"{p}  {event.get('phase', 'progress')}: {event.get('step')}/{event.get('steps')}",
                               style="dim")
        elif kind == "features":
            self.console.print(f"{p}[cyan]{event.get('message', 'extracting features')}[/]")
        elif kind == "warm_start":
            self.console.print(f"{p}warm start: {event.get('tensors')} of {event.get('of')} tensors from the best candidate")
        elif kind == "progress":
            self.console.print(
                f"{p}  epoch {event['epoch']}/{event['epochs']} step {event['step']}/{event['steps']} "
                f"loss {event['train_loss']:.4f} ({event['elapsed_s']:.0f}s)",
                style="dim",
            )
        elif kind == "epoch":
            self.console.print(
                f"{p}  epoch {event['epoch']}/{event['epochs']}: train loss {event['train_loss']:.4f}, "
                f"val loss {event['val_loss']:.4f}, [bold]val acc {event['val_accuracy']:.4f}[/] ({event['seconds']:.1f}s)"
            )
        elif kind == "budget":
            self.console.print(f"{p}  [yellow]{event['message']}[/]")
        elif kind == "error":
            self.console.print(f"{p}[red]{event['component']}.py failed: {event['error_type']}: {event['message'][:300]}[/]")


def describe_message(item: Any) -> tuple[str, str] | None:
    """``(speaker, rich text)`` of a team message or thought; ``None`` for other stream items."""
    if isinstance(item, ThoughtEvent):
        return item.source, f"[dim]{item.content[:200]}[/]"
    if not isinstance(item, BaseChatMessage):
        return None
    if not isinstance(item, StructuredMessage):
        return item.source, item.to_text()[:200]
    c = item.content
    if isinstance(c, TechnicalDesign):
        text = f"design ({c.author}): {c.summary}"
        for r in c.rationale[:4]:
            text += f"\n{'':>18}- {r}"
    elif isinstance(c, ComponentCode):
        text = f"{c.component}.py [{c.phase}] {c.change[:160]}"
    elif isinstance(c, ExecutionError):
        text = (f"[red]#{c.iteration} {c.status} in {c.component}.py: {c.error_type}: {c.message[:160]}[/] "
                f"(repair {c.repair_attempt}/{c.max_repairs})")
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
    return item.source, text


def message_fields(item: Any) -> dict[str, Any] | None:
    """A team message as JSON-ready fields (code left out: it is in the run directory); ``None`` for others."""
    if not isinstance(item, BaseChatMessage):
        return None
    fields: dict[str, Any] = {"source": item.source, "type": type(item).__name__}
    if isinstance(item, StructuredMessage):
        content = item.content
        fields["type"] = type(content).__name__
        dump = content.model_dump(mode="json")
        fields.update({k: v for k, v in dump.items() if k not in ("code", "components", "source")})
    else:
        fields["text"] = item.to_text()[:2000]
    return fields


class MessagePrinter:
    """One line per team message: who speaks and what it says."""

    def __init__(self, console: Console):
        self.console = console

    def __call__(self, item: Any) -> None:
        described = describe_message(item)
        if described is None:
            return
        who, text = described
        if isinstance(item, ThoughtEvent):
            self.console.print(f"    [dim]{who}:[/] {text}")
        else:
            self.console.print(f"[bold cyan]{who:>17}[/] {text}")


class Display:
    """Plain lines (the base renderer): what a pipe, a log file or CI sees."""

    def __init__(self, console: Console):
        self.console = console
        self.root: Path | None = None
        self.max_attempts = 0
        self.attempt = 0
        self.best: float | None = None

    def start(self, root: Path, run: dict[str, Any]) -> None:
        """The run is prepared: its directory and ``run.json``."""
        self.root = Path(root)
        iterations = (run.get("settings") or {}).get("iterations")
        self.max_attempts = int(iterations) + 1 if iterations is not None else 0
        log.info("run.start", run_dir=str(root), data=run.get("data"), max_attempts=self.max_attempts)

    def on_event(self, event: dict[str, Any]) -> None:
        """A harness event of the candidate being trained (also written to the run log)."""
        fields = {k: v for k, v in event.items() if k != "event"}
        log.info(f"candidate.{event.get('event', 'unknown')}", attempt=self.attempt + 1, **fields)

    def on_message(self, item: Any) -> None:
        """A team message (or thought) from the stream (also written to the run log)."""
        if isinstance(item, StructuredMessage) and isinstance(item.content, RunReport):
            self.attempt = item.content.iteration
            if item.content.best_val_accuracy is not None:
                self.best = item.content.best_val_accuracy
        fields = message_fields(item)
        if fields is not None:
            log.info("message", **fields)

    def stop(self) -> None:
        """The team stopped (before the final scoring prints its line)."""

    def finish(self, final: dict[str, Any]) -> None:
        """The run is scored and its report written."""
        tokens, cost = self.usage()
        log.info("run.end", tokens=tokens, cost_usd=round(cost, 6), **final)

    def usage(self) -> tuple[int, float]:
        """Tokens and USD spent so far (from ``usage.json``)."""
        path = (self.root or Path(".")) / "usage.json"
        try:
            usage = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
        except (OSError, ValueError):
            return 0, 0.0
        entries = [e for e in usage.values() if isinstance(e, dict)]
        tokens = sum(int(e.get("prompt_tokens", 0)) + int(e.get("completion_tokens", 0)) for e in entries)
        return tokens, sum(float(e.get("cost_usd", 0.0)) for e in entries)


class PlainDisplay(Display):
    """Today's plain lines: one per harness event and per team message."""

    def __init__(self, console: Console):
        super().__init__(console)
        self._events = EventPrinter(console, prefix="    ")
        self._messages = MessagePrinter(console)

    def on_event(self, event: dict[str, Any]) -> None:
        super().on_event(event)
        self._events(event)

    def on_message(self, item: Any) -> None:
        super().on_message(item)
        self._messages(item)


class LiveDisplay(PlainDisplay):
    """Messages scroll above a live panel: speaker and task, attempt k of N, epoch bar, best, tokens and cost."""

    def __init__(self, console: Console):
        super().__init__(console)
        self.speaker, self.doing = "architect", DOING["architect"]
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                                 TimeRemainingColumn(), console=console)
        self._task = self.progress.add_task("no candidate training yet", total=1, visible=False)
        self._epochs = 0
        self.live = Live(self.render(), console=console, refresh_per_second=4, transient=True)

    def start(self, root: Path, run: dict[str, Any]) -> None:
        super().start(root, run)
        self.live.start()
        self._refresh()

    def render(self) -> Group:
        """The live panel as it stands."""
        tokens, cost = self.usage() if self.root else (0, 0.0)
        table = Table.grid(padding=(0, 2))
        table.add_row("[bold]now[/]", f"[bold cyan]{self.speaker}[/]: {self.doing}")
        best = f"{self.best:.4f}" if self.best is not None else "-"
        current = min(self.attempt + 1, self.max_attempts) if self.max_attempts else self.attempt + 1
        table.add_row("[bold]attempt[/]", f"{current} of {self.max_attempts or '?'}; best val acc {best}")
        table.add_row("[bold]spent[/]", f"{tokens} tokens, {cost:.4f} USD")
        return Group(table, self.progress)

    def _refresh(self) -> None:
        self.live.update(self.render())

    def on_event(self, event: dict[str, Any]) -> None:
        kind = event.get("event")
        if kind in ("smoke", "progress", "epoch"):
            epochs = int(event.get("epochs", self._epochs) or 1)
            steps = int(event.get("steps", event.get("steps_per_epoch", 1)) or 1)
            self._epochs = epochs
            epoch = int(event.get("epoch", 0))
            done = epoch * steps if kind == "epoch" else (max(epoch - 1, 0) * steps + int(event.get("step", 0)))
            label = f"candidate #{self.attempt + 1} epoch {max(epoch, 1)}/{epochs}"
            if kind == "smoke":
                self.progress.reset(self._task, total=epochs * steps, completed=0, description=label, visible=True)
            else:
                self.progress.update(self._task, total=epochs * steps, completed=done, description=label, visible=True)
        Display.on_event(self, event)
        if kind in ("smoke", "epoch", "budget", "error"):
            self._events(event)
        self._refresh()

    def on_message(self, item: Any) -> None:
        super().on_message(item)
        if isinstance(item, BaseChatMessage):
            from automodel.team import select_next_speaker

            nxt = select_next_speaker([item])
            if nxt:
                self.speaker, self.doing = nxt, DOING.get(nxt, "")
            if isinstance(item, StructuredMessage) and isinstance(item.content, (RunReport, ExecutionError)):
                self.progress.update(self._task, visible=False)  # that candidate is done
        self._refresh()

    def stop(self) -> None:
        self.live.stop()


class JsonDisplay(Display):
    """One JSON object per line on ``stream`` (stdout): ``event``, ``time``, ``run_id`` and the fields."""

    def __init__(self, console: Console, stream: IO[str] | None = None, *, run_id: str = ""):
        super().__init__(console)
        self.stream = stream or sys.stdout
        self.run_id = run_id

    def emit(self, event: str, **fields: Any) -> None:
        record = {"event": event, "time": round(time.time(), 3), "run_id": self.run_id, **fields}
        self.stream.write(json.dumps(redact(record), default=str) + "\n")
        self.stream.flush()

    def start(self, root: Path, run: dict[str, Any]) -> None:
        super().start(root, run)
        self.emit("run.start", run_dir=str(root), data=run.get("data"), max_attempts=self.max_attempts,
                  backends=run.get("backends", {}))

    def on_event(self, event: dict[str, Any]) -> None:
        super().on_event(event)
        fields = {k: v for k, v in event.items() if k != "event"}
        self.emit(f"candidate.{event.get('event', 'unknown')}", attempt=self.attempt + 1, **fields)

    def on_message(self, item: Any) -> None:
        super().on_message(item)
        fields = message_fields(item)
        if fields is not None:
            self.emit("message", **fields)

    def finish(self, final: dict[str, Any]) -> None:
        super().finish(final)
        tokens, cost = self.usage()
        self.emit("run.end", tokens=tokens, cost_usd=round(cost, 6), **final)


def make_display(mode: DisplayMode, console: Console, *, run_id: str = "", stream: IO[str] | None = None) -> Display:
    """``live`` on an interactive terminal outside CI, else ``plain``; ``json`` and the others when asked.

    Raises:
        ValueError: an unknown ``mode``.
    """
    if mode == "auto":
        interactive = console.is_terminal and not console.is_dumb_terminal and not os.environ.get("CI")
        mode = "live" if interactive else "plain"
    if mode == "live":
        return LiveDisplay(console)
    if mode == "plain":
        return PlainDisplay(console)
    if mode == "json":
        return JsonDisplay(console, stream, run_id=run_id)
    raise ValueError(f"display mode {mode!r} is not one of auto, plain, live, json")
