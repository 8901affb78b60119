"""The run report: ``report.md`` in the run directory, from the run directory alone."""

from __future__ import annotations

import json
from pathlib import Path

from automodel.experts import get_knobs
from automodel.interfaces import COMPONENT_FILES
from automodel.store import RunStore

__all__ = ["write_report"]

_BARS = " ▁▂▃▄▅▆▇█"


def _spark(values: list[float]) -> str:
    if not values:
        return ""
    lo, hi = min(values), max(values)
    span = (hi - lo) or 1.0
    return "".join(_BARS[1 + int((v - lo) / span * (len(_BARS) - 2))] for v in values)


def _fmt(x: float | None) -> str:
    return f"{x:.4f}" if isinstance(x, float) else "-"


def write_report(store: RunStore) -> Path:
    """Write ``report.md``: data, backends, every attempt, the best candidate, the final score."""
    run = store.read_run()
    history = store.history()
    final = json.loads((store.root / "final.json").read_text()) if (store.root / "final.json").is_file() else {}
    usage = store.usage()
    lines = [f"# AutoModel run: {run.get('data', '')}", ""]
    if run.get("description"):
        lines += [f"> {run['description']}", ""]
    prof = run.get("profile", {})
    env = run.get("environment", {})
    budget = run.get("budget", {})
    lines += [
        f"- classes: {prof.get('num_classes')}, training images: {prof.get('num_train')}, stored at {prof.get('stored_size')}px",
        f"- device: {env.get('device')}; pretrained weights: hub={env.get('pretrained', {}).get('hub')}, "
        f"local={env.get('pretrained', {}).get('local')}",
        f"- budget: {budget.get('time_budget_s')}s, {budget.get('max_attempts')} attempts, "
        f"{budget.get('candidate_budget_s', 0):.0f}s per candidate; status {run.get('status')} ({run.get('stop_reason', '')})",
        *[f"- **data warning**: {w}" for w in prof.get("warnings", [])],
        *([f"- skipped files: {prof['skipped']}"] if prof.get("skipped") else []),
        "",
        "## Result",
        "",
        f"- first valid candidate: val {_fmt(final.get('first_val_accuracy'))}",
        f"- best: val {_fmt(final.get('best_val_accuracy'))} (attempt {final.get('best_iteration')})",
    ]
    if "test_accuracy" in final:
        lines.append(f"- **test accuracy of the best, scored once: {final['test_accuracy']:.4f}** ({final.get('test_size')} images)")
    if "submission" in final:
        lines.append("- predictions: `submission.csv`")
    valid = sum(a.val_accuracy is not None for a in history)
    lines += [f"- attempts: {len(history)}, with a valid score: {valid} (yield {valid / max(len(history), 1):.0%}); "
              f"time {final.get('elapsed_s', 0):.0f}s", ""]
    lines += ["## Attempts", "", "| # | target | change | status | val acc | best | s |", "|---|---|---|---|---|---|---|"]
    for a in history:
        change = a.change.replace("|", "/").replace("\n", " ")[:110]
        lines.append(f"| {a.iteration} | {a.target} | {change} | {a.status} | {_fmt(a.val_accuracy)} | "
                     f"{_fmt(a.best_val_accuracy)} | {a.seconds:.0f} |")
    metrics = store.best_metrics()
    if metrics:
        curve = [e["val_accuracy"] for e in metrics.get("history", [])]
        lines += ["", "## Best candidate", "",
                  f"Validation accuracy per epoch: `{_spark(curve)}` {', '.join(f'{v:.3f}' for v in curve)}", ""]
        for _component, name in COMPONENT_FILES.items():
            knobs = get_knobs((store.best_dir / name).read_text())
            if knobs:
                lines.append(f"- `{name}`: " + ", ".join(f"{k}={v!r}" for k, v in knobs.items()))
        lines += ["", "Code: `best/data.py`, `best/model.py`, `best/training.py`; weights: `best/checkpoint.pt`."]
    design = run.get("design")
    if design:
        lines += ["", "## The Architect's design", "", f"{design.get('summary')} ({design.get('author')})", ""]
        lines += [f"- {r}" for r in design.get("rationale", [])]
    lines += ["", "## Backends and usage", "",
              "| role | backend | calls | prompt tokens | completion tokens | faults | fallbacks | cost USD |",
              "|---|---|---|---|---|---|---|---|"]
    total_cost = 0.0
    for role, backend in run.get("backends", {}).items():
        u = usage.get(role, {})
        faults = sum(int(v) for v in dict(u.get("faults", {})).values())
        cost = float(u.get("cost_usd", 0.0))
        total_cost += cost
        lines.append(f"| {role} | {u.get('backend', backend)} | {u.get('calls', 0)} | {u.get('prompt_tokens', 0)} | "
                     f"{u.get('completion_tokens', 0)} | {faults} | {u.get('fallbacks', 0)} | {cost:.4f} |")
    faults_path = store.root / "model_faults.jsonl"
    n_faults = len(faults_path.read_text().splitlines()) if faults_path.is_file() else 0
    lines += ["", f"Total cost: {total_cost:.4f} USD; model faults recorded: {n_faults} (`model_faults.jsonl`)."]
    path = store.root / "report.md"
    tmp = path.with_name(".report.md.tmp")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path
