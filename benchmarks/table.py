"""The markdown table of a benchmark run, computed from its per-job JSON records only."""

from __future__ import annotations

import json
import statistics
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

__all__ = ["aggregate", "write_table"]

ORDER = ("automodel", "reference", "naive", "random", "tpe", "automodel-no-zero-shot", "automodel+description")
DATASET_ORDER = ("digits", "fashion", "signs", "orientation")


def _mean(xs: list[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def _acc(xs: list[float], n: int) -> str:
    """Mean ± spread (sample std over seeds), with the number of seeds and of failed runs."""
    if not xs:
        return f"— (0/{n} scored)"
    text = f"{100 * _mean(xs):.1f}"  # type: ignore[operator]
    if len(xs) > 1:
        text += f" ± {100 * statistics.stdev(xs):.1f}"
    text += f" (n={len(xs)})" if len(xs) == n else f" ({len(xs)}/{n} scored)"
    return text


def _num(x: float | None, fmt: str = "{:.0f}", scale: float = 1.0) -> str:
    return "—" if x is None else fmt.format(scale * x)


def aggregate(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (dataset, contender), over seeds."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        groups[(r["job"]["dataset"], r["job"]["contender"])].append(r)
    rows = []
    for (ds, contender), rs in groups.items():
        attempts = sum(int(r.get("attempts") or 0) for r in rs)
        valid = sum(int(r.get("valid_attempts") or 0) for r in rs)
        hflip = sorted({str(r.get("best_knobs", {}).get("data", {}).get("HFLIP", "n/a")) for r in rs
                        if r.get("best_knobs")})
        rows.append({
            "dataset": ds,
            "contender": contender,
            "budget_s": rs[0]["job"]["budget_s"],
            "candidate_s": rs[0]["job"]["candidate_s"],
            "test": [float(r["test_accuracy"]) for r in rs if r.get("test_accuracy") is not None],
            "n": len(rs),
            "first_val": _mean([float(r["first_val_accuracy"]) for r in rs if r.get("first_val_accuracy") is not None]),
            "best_val": _mean([float(r["best_val_accuracy"]) for r in rs if r.get("best_val_accuracy") is not None]),
            "attempts": attempts / len(rs),
            "yield": (valid / attempts) if attempts else None,
            "valid": valid,
            "attempts_total": attempts,
            "wall_s": _mean([float(r["wall_s"]) for r in rs if r.get("wall_s") is not None]),
            "ips": _mean([float(r["images_per_s"]) for r in rs if r.get("images_per_s")]),
            "hflip": "/".join(hflip) if hflip else "n/a",
            "errors": [r["error"] for r in rs if r.get("error")],
            "load": _mean([float(r.get("load_before", 0)) for r in rs] + [float(r.get("load_after", 0)) for r in rs]),
        })
    key = {c: i for i, c in enumerate(ORDER)}
    dkey = {d: i for i, d in enumerate(DATASET_ORDER)}
    return sorted(rows, key=lambda r: (dkey.get(r["dataset"], 99), key.get(r["contender"], 99)))


def write_table(runs_dir: Path, out: Path, *, meta_path: Path | None = None) -> list[dict[str, Any]]:
    """Write ``out`` (markdown) from ``runs_dir/*.json``; only the jobs of the last run when ``meta.json`` names them."""
    meta = json.loads(meta_path.read_text()) if meta_path and meta_path.is_file() else {}
    wanted = set(meta.get("jobs", []))
    records = []
    for path in sorted(runs_dir.glob("*.json")):
        if wanted and path.stem not in wanted:
            continue
        records.append(json.loads(path.read_text()))
    rows = aggregate(records)
    lines = ["# AutoModel benchmarks", ""]
    if meta:
        started = time.strftime("%Y-%m-%d %H:%M", time.localtime(meta.get("started", 0)))
        lines += [
            f"Command: `{meta.get('command')}` (started {started}; total wall "
            f"{_num(meta.get('total_wall_s'))} s; {meta.get('workers')} jobs at a time, "
            f"{meta.get('threads_per_candidate') or 'all'} torch thread(s) per candidate, device "
            f"{meta.get('device')}, {meta.get('cpu_count')} CPUs; 1-min load average at start "
            f"{_num((meta.get('load_at_start') or [None])[0], '{:.1f}')}, at end "
            f"{_num((meta.get('load_at_end') or [None])[0], '{:.1f}')}).",
            "",
        ]
    lines += [
        "Test accuracy in %, mean ± sample std over seeds (n = seeds). First iteration = validation accuracy "
        "of the first candidate; yield = candidates with a validation score / candidates tried. Budget = "
        "wall-clock seconds each contender gets (single-candidate contenders train that long; iterating "
        "ones split it into candidates of at most the per-candidate seconds). Wall = the job's whole time, "
        "data preparation and test scoring included. Images/s = training throughput, mean over candidates. "
        "HFLIP = whether the best candidate trains with horizontal flips.",
        "",
        "| dataset | contender | budget s (per cand.) | test accuracy % | first-iteration val % | best val % "
        "| attempts | iteration yield | wall s | images/s | HFLIP | load |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        single = r["contender"] in ("reference", "naive")
        budget = f"{r['budget_s']:.0f}" + ("" if single else f" ({r['candidate_s']:.0f})")
        yld = "—" if r["yield"] is None else f"{r['valid']}/{r['attempts_total']} = {r['yield']:.2f}"
        lines.append(
            f"| {r['dataset']} | {r['contender']} | {budget} | {_acc(r['test'], r['n'])} | "
            f"{_num(r['first_val'], '{:.1f}', 100)} | {_num(r['best_val'], '{:.1f}', 100)} | "
            f"{r['attempts']:.1f} | {yld} | {_num(r['wall_s'])} | {_num(r['ips'])} | {r['hflip']} | "
            f"{_num(r['load'], '{:.1f}')} |"
        )
    errors = [(r["dataset"], r["contender"], e) for r in rows for e in r["errors"]]
    if errors:
        lines += ["", "Errors:", ""] + [f"- {d} / {c}: {e}" for d, c, e in errors]
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    (out.with_suffix(".json")).write_text(json.dumps(rows, indent=1, default=str))
    return rows
