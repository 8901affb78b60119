"""Terminal rendering of harness events and team messages (used by the CLI and examples)."""

from __future__ import annotations

from typing import Any

from rich.console import Console

__all__ = ["EventPrinter"]


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
