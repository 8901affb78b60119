"""``report.md``: the run in Markdown, from the run directory alone."""

from __future__ import annotations

from automodel.budget import describe_settings
from automodel.experts import get_knobs
from automodel.report._collect import RunView, authorship, yield_count

__all__ = ["render_markdown"]

_BARS = " ▁▂▃▄▅▆▇█"


def _spark(values: list[float]) -> str:
    if not values:
        return ""
    lo, hi = min(values), max(values)
    span = (hi - lo) or 1.0
    return "".join(_BARS[1 + int((v - lo) / span * (len(_BARS) - 2))] for v in values)


def _fmt(x: float | None) -> str:
    return f"{x:.4f}" if isinstance(x, float) else "-"


def render_markdown(view: RunView) -> str:
    """Data, backends, every attempt, the best candidate, the final score."""
    run, history, final, usage = view.run, view.history, view.final, view.usage
    lines = [f"# AutoModel run: {run.get('data', '')}", ""]
    if run.get("description"):
        lines += [f"> {run['description']}", ""]
    prof = run.get("profile", {})
    env = run.get("environment", {})
    use = (view.final or {}).get("budget_use") or {}
    lines += [
        f"- classes: {prof.get('num_classes')}, training images: {prof.get('num_train')}, stored at {prof.get('stored_size')}px",
        f"- device: {env.get('device')}; pretrained weights: hub={env.get('pretrained', {}).get('hub')}, "
        f"local={env.get('pretrained', {}).get('local')}",
        f"- budget: {describe_settings(run)}; status {view.status} ({run.get('stop_reason', '')})",
        *([f"- budget used: exploration {use.get('explore_s')}s in {use.get('explore_attempts')} attempts, final "
           f"{use.get('final_s')}s in {use.get('final_attempts')}, test scoring {use.get('finalize_s')}s, "
           f"idle tail {use.get('idle_tail_s')}s"] if use else []),
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
    lines += [f"- {yield_count(history).describe()}; time {final.get('elapsed_s', 0):.0f}s", ""]
    lines += ["## Attempts", "", "| # | target | change | status | val acc | best | s | written by |",
              "|---|---|---|---|---|---|---|---|"]
    for a in history:
        change = a.change.replace("|", "/").replace("\n", " ")[:110]
        authors = ", ".join(f"{c}: {w}" for c, w in a.authors.items() if w != "incumbent") or "incumbent"
        lines.append(f"| {a.iteration} | {a.target} | {change} | {a.status} | {_fmt(a.val_accuracy)} | "
                     f"{_fmt(a.best_val_accuracy)} | {a.seconds:.0f} | {authorship(a)} ({authors}) |")
    metrics = view.best_metrics
    if metrics:
        curve = [e["val_accuracy"] for e in metrics.get("history", [])]
        lines += ["", "## Best candidate", "",
                  f"Validation accuracy per epoch: `{_spark(curve)}` {', '.join(f'{v:.3f}' for v in curve)}", ""]
        for name, code in view.best_code.items():
            knobs = get_knobs(code)
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
    n_faults = len(view.faults)
    lines += ["", f"Total cost: {total_cost:.4f} USD; model faults recorded: {n_faults} (`model_faults.jsonl`)."]
    return "\n".join(lines) + "\n"
