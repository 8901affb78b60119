"""``report.html``: one self-contained page (figures inlined as PNG), readable on a phone."""

from __future__ import annotations

import time
from html import escape
from typing import Any

from automodel.budget import describe_settings
from automodel.report import _plots
from automodel.report._collect import RunView, yield_count

__all__ = ["render_html"]

_CSS = """
body{font:15px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1d1d1f;background:#fafafa}
main{max-width:980px;margin:auto;padding:12px}
h1{font-size:1.45em;margin:.4em 0} h2{font-size:1.2em;border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
img{max-width:100%;height:auto} .scroll{overflow-x:auto} table{border-collapse:collapse;font-size:.9em;width:100%}
th,td{border-bottom:1px solid #e3e3e3;padding:4px 6px;text-align:left;vertical-align:top}
th{background:#f0f0f0} td.num{text-align:right;white-space:nowrap}
.improved{color:#1e7a38;font-weight:600}.discarded{color:#9a7000}.crashed,.timeout,.invalid{color:#b03020;font-weight:600}
.kv{display:grid;grid-template-columns:max-content 1fr;gap:2px 12px} .kv dt{color:#666} .kv dd{margin:0}
.na{color:#888;font-style:italic} pre{background:#f4f4f4;padding:8px;overflow-x:auto;font-size:.8em}
details summary{cursor:pointer} .cls{font-weight:600;white-space:nowrap;padding-right:8px}
td.wide{min-width:13em;overflow-wrap:anywhere}
@media (max-width:600px){body{font-size:14px} table{font-size:.8em} th,td{padding:3px 4px} h2{font-size:1.1em}}
"""


def _fmt(x: Any, digits: int = 4) -> str:
    return f"{x:.{digits}f}" if isinstance(x, (int, float)) and not isinstance(x, bool) else "-"


def _img(uri: str, alt: str) -> str:
    return f'<img src="{uri}" alt="{escape(alt)}">'


def _na(text: str) -> str:
    return f'<p class="na">{escape(text)}</p>'


def _kv(items: list[tuple[str, Any]]) -> str:
    rows = "".join(f"<dt>{escape(k)}</dt><dd>{escape(str(v))}</dd>" for k, v in items if v not in (None, ""))
    return f'<dl class="kv">{rows}</dl>'


def _table(header: list[str], rows: list[list[str]], *, table_id: str = "") -> str:
    """``rows`` hold HTML already escaped by the caller."""
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(row) + "</tr>" for row in rows)
    ident = f' id="{table_id}"' if table_id else ""
    return f'<div class="scroll"><table{ident}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def _td(text: Any, cls: str = "") -> str:
    return f'<td class="{cls}">{escape(str(text))}</td>' if cls else f"<td>{escape(str(text))}</td>"


def _overview(v: RunView) -> str:
    settings, env, final = v.run.get("settings", {}), v.run.get("environment", {}), v.final
    use = final.get("budget_use") or {}
    items: list[tuple[str, Any]] = [
        ("status", v.status),
        ("stop reason", v.run.get("stop_reason")),
        ("best validation accuracy", _fmt(final.get("best_val_accuracy", v.best_metrics and v.best_metrics.get("val_accuracy")))),
        ("best attempt", final.get("best_iteration", v.best_iteration)),
        ("test accuracy (scored once)", _fmt(final.get("test_accuracy")) if "test_accuracy" in final else None),
        ("test images", final.get("test_size")),
        ("submission", "submission.csv" if "submission" in final else None),
        ("attempts", f"{len(v.history)}" + (f" of {int(settings['iterations']) + 1}" if settings.get("iterations") is not None else "")),
        ("yield", yield_count(v.history).describe() if v.history else None),
        ("time", f"{final['elapsed_s']:.0f}s" if isinstance(final.get("elapsed_s"), (int, float)) else None),
        ("budget", describe_settings(v.run)),
        ("budget used", f"exploration {use.get('explore_s')}s ({use.get('explore_attempts')} attempts), final "
         f"{use.get('final_s')}s ({use.get('final_attempts')}), test scoring {use.get('finalize_s')}s, "
         f"idle tail {use.get('idle_tail_s')}s" if use else None),
        ("device", env.get("device")),
        ("pretrained weights", f"hub={env.get('pretrained', {}).get('hub')}, local={env.get('pretrained', {}).get('local')}"
         if env else None),
    ]
    return "<section id='overview'><h2>Overview</h2>" + _kv(items) + "</section>"


def _dataset(v: RunView) -> str:
    prof = v.profile
    parts = ["<section id='dataset'><h2>Dataset</h2>"]
    if not prof:
        return parts[0] + _na("No dataset profile in run.json or data/meta.json (the run stopped before preparing data).") + "</section>"
    splits = ", ".join(f"{k} {n}" for k, n in prof.get("split_sizes", {}).items())
    parts.append(_kv([("source", f"{prof.get('source_kind')}: {prof.get('source', '')}"), ("classes", prof.get("num_classes")),
                      ("images", splits), ("imbalance (max/min)", prof.get("imbalance_ratio")),
                      ("channels", f"{prof.get('channels')} ({_fmt(prof.get('color_fraction'), 2)} color)"),
                      ("source modes", ", ".join(f"{k} {n}" for k, n in prof.get("modes", {}).items())),
                      ("stored as", f"{prof.get('stored_size')}px squares" if prof.get("stored_size") else None),
                      ("exact duplicates", ", ".join(f"{k} {n}" for k, n in prof.get("duplicates", {}).items() if n) or "none"),
                      ("description", prof.get("description"))]))
    classes = v.classes or list(prof.get("class_names", []))
    counts = prof.get("counts", {})
    parts.append("<h3>Images per class</h3>")
    parts.append(_img(_plots.class_counts(classes, counts), "images per class") if classes and counts
                 else _na("per-class counts not available"))
    parts.append("<h3>Sample training images</h3>")
    if v.samples:
        rows = [f'<tr><td class="cls">{escape(name)}</td><td>{_img(_plots.sample_strip(imgs), f"samples of {name}")}</td></tr>'
                for name, imgs in v.samples.items()]
        parts.append('<div class="scroll"><table id="samples"><tbody>' + "".join(rows) + "</tbody></table></div>")
    else:
        parts.append(_na("sample images not available (the prepared data cache data/ is missing)."))
    parts.append("<h3>Image sizes</h3>")
    sizes = prof.get("sizes") or {}
    if sizes.get("max_width"):
        parts.append(_img(_plots.size_ranges(sizes), "image size ranges"))
        parts.append(f"<p>{_fmt(100 * float(sizes.get('distinct_fraction', 0)), 1)}% distinct (width, height) pairs; "
                     "the data layer records the minimum, median and maximum only.</p>")
    else:
        parts.append(_na("image sizes not recorded."))
    parts.append("<h3>Skipped files</h3>")
    skipped = prof.get("skipped") or {}
    if skipped:
        skip_rows = []
        for reason, n in skipped.items():
            examples = "; ".join(f"{p} ({d})" if d else p for p, d in v.skip_examples.get(reason, []))
            skip_rows.append([_td(reason), _td(n, "num"), _td(examples or "see run.log (data.skip events)", "wide")])
        parts.append(_table(["reason", "files", "first files skipped (why)"], skip_rows, table_id="skips"))
    else:
        parts.append("<p>None: every file was used.</p>")
    return "".join(parts) + "</section>"


def _attempts(v: RunView) -> str:
    rows = []
    for a in v.history:
        when = time.strftime("%H:%M:%S", time.localtime(a.time))
        change = a.change + (f" [{a.component}.py: {a.error}]" if a.error else "")
        summary = v.summaries.get(a.iteration, "")
        change_html = escape(change) + (f"<details><summary>summary</summary>{escape(summary)}</details>" if summary else "")
        rows.append([_td(a.iteration, "num"), _td(a.target.replace("_", " ")), f'<td class="wide">{change_html}</td>',
                     _td(_fmt(a.val_accuracy), "num"), _td(_fmt(a.best_val_accuracy), "num"), _td(a.status, a.status),
                     _td(f"{a.seconds:.0f}s", "num"), _td(when, "num")])
    out = ["<section id='attempts'><h2>Attempts</h2>"]
    if not rows:
        out.append(_na("No attempt completed yet."))
    out.append(_table(["#", "who", "what changed and why", "val acc", "best", "status", "took", "at"], rows,
                      table_id="attempt-table"))
    out.append("</section><section id='progress'><h2>Validation accuracy over attempts</h2>")
    out.append(_img(_plots.accuracy_over_attempts(v.history), "validation accuracy over attempts") if v.history
               else _na("not available: no attempt yet."))
    return "".join(out) + "</section>"


def _best(v: RunView) -> str:
    out = ["<section id='best'><h2>Best candidate</h2>"]
    m = v.best_metrics
    if not m:
        return (out[0] + _na("No candidate produced a valid score yet.") + "</section>"
                "<section id='confusion'><h2>Confusion matrix and per-class accuracy</h2>"
                + _na("Confusion matrix not available: no best candidate.") + "</section>"
                "<section id='code'><h2>The best pipeline's code</h2>" + _na("No best pipeline yet.") + "</section>")
    out.append(_kv([("attempt", v.best_iteration), ("validation accuracy", _fmt(m.get("val_accuracy"))),
                    ("best epoch", f"{m.get('best_epoch')} of {m.get('epochs_run')} run ({m.get('epochs_planned')} planned)"),
                    ("parameters", f"{(m.get('params') or 0) / 1e6:.2f}M"), ("input size", m.get("input_size")),
                    ("batch size", m.get("batch_size")), ("throughput", f"{m.get('images_per_s')} images/s on {m.get('device')}"),
                    ("stopped by budget", m.get("stopped_by_budget"))]))
    out.append("<h3>Learning curves</h3>")
    epochs = m.get("history") or []
    out.append(_img(_plots.learning_curves(epochs), "learning curves") if epochs else _na("no epoch record."))
    out.append("</section><section id='confusion'><h2>Confusion matrix and per-class accuracy</h2>")
    if v.confusion is not None:
        out.append(f"<p>Test set ({v.final.get('test_size')} images), scored once at the end.</p>")
        out.append(_img(_plots.confusion_matrix(v.confusion, v.classes), "confusion matrix"))
    else:
        out.append(_na("Confusion matrix not available: it needs a labeled test set scored at the end "
                       "(final.json with test_accuracy and final/predictions.json)."))
    per_class = v.final.get("per_class_test_accuracy")
    which = "test"
    if not per_class and isinstance(m.get("per_class_val_accuracy"), list):
        which = "validation"
        per_class = {c: a for c, a in zip(v.classes, m["per_class_val_accuracy"], strict=False) if a is not None}
    if per_class:
        out.append(f"<h3>Per-class accuracy ({which})</h3>")
        out.append(_img(_plots.per_class_accuracy(per_class), f"per-class {which} accuracy"))
    else:
        out.append(_na("Per-class accuracy not available."))
    out.append("</section><section id='code'><h2>The best pipeline's code</h2>")
    for name, code in v.best_code.items():
        out.append(f"<details><summary>{escape(name)} ({len(code.splitlines())} lines)</summary><pre>{escape(code)}</pre></details>")
    design = v.run.get("design")
    if design:
        out.append(f"<h3>The Architect's design</h3><p>{escape(str(design.get('summary')))} ({escape(str(design.get('author')))})</p>")
        out.append("<ul>" + "".join(f"<li>{escape(str(r))}</li>" for r in design.get("rationale", [])) + "</ul>")
    return "".join(out) + "</section>"


def _usage(v: RunView) -> str:
    roles = list(dict.fromkeys([*v.run.get("backends", {}), *v.usage]))
    rows, total_cost, total_tokens = [], 0.0, 0
    for role in roles:
        u = v.usage.get(role, {})
        faults = sum(int(n) for n in dict(u.get("faults", {})).values())
        cost = float(u.get("cost_usd", 0.0))
        tokens = int(u.get("prompt_tokens", 0)) + int(u.get("completion_tokens", 0))
        total_cost += cost
        total_tokens += tokens
        rows.append([_td(role.replace("_", " ")), _td(u.get("backend", v.run.get("backends", {}).get(role, "-"))),
                     _td(u.get("calls", 0), "num"), _td(u.get("prompt_tokens", 0), "num"),
                     _td(u.get("completion_tokens", 0), "num"), _td(faults, "num"), _td(u.get("fallbacks", 0), "num"),
                     _td(f"{cost:.4f}", "num")])
    out = ["<section id='usage'><h2>Tokens, cost and backend per role</h2>"]
    out.append(_table(["role", "backend", "calls", "prompt tokens", "completion tokens", "faults", "fallbacks", "cost USD"],
                      rows, table_id="usage-table"))
    out.append(f"<p>Total: {total_tokens} tokens, {total_cost:.4f} USD.</p></section>")
    out.append("<section id='faults'><h2>Model faults</h2>")
    if v.faults:
        shown = v.faults[-100:]
        out.append(f"<p>{len(v.faults)} fault(s) recorded in model_faults.jsonl" +
                   (f", the last {len(shown)} shown" if len(shown) < len(v.faults) else "") + ".</p>")
        out.append(_table(["time", "role", "backend", "kind", "error", "action"], [
            [_td(time.strftime("%H:%M:%S", time.localtime(float(f.get("time", 0))))), _td(f.get("role", "")),
             _td(f.get("backend", "")), _td(f.get("kind", "")), _td(str(f.get("error", ""))[:300], "wide"),
             _td(f.get("action", ""))]
            for f in shown]))
    else:
        out.append("<p>None: every model call answered usably.</p>")
    return "".join(out) + "</section>"


def render_html(v: RunView) -> str:
    """The whole page as one string."""
    title = f"AutoModel run: {v.run.get('data', v.root.name)}"
    desc = v.run.get("description") or v.profile.get("description", "")
    notes = "".join(f"<li>{escape(n)}</li>" for n in v.notes)
    body = [
        f"<h1>{escape(title)}</h1>",
        f"<p>{escape(desc)}</p>" if desc else "",
        f"<p class='na'>Built {escape(time.strftime('%Y-%m-%d %H:%M:%S'))} from {escape(str(v.root))}.</p>",
        f"<ul class='na'>{notes}</ul>" if notes else "",
        _overview(v), _dataset(v), _attempts(v), _best(v), _usage(v),
    ]
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{escape(title)}</title><style>{_CSS}</style></head><body><main>" + "".join(body) + "</main></body></html>\n"
    )
