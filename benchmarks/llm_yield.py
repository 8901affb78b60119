"""How many attempts a flaky LLM gets right: the digits demo, every role an OpenAI-compatible model.

Every role talks through AutoGen's real ``OpenAIChatCompletionClient`` to the loopback server of
``tests/fake_openai.py``, answered by its seeded :class:`FlakyModel`: a share of bad replies
(NameErrors, shape bugs, wrong permutes, missing packages, wrong function names, prose-only,
truncated code with ``finish_reason == "length"``, JSON with trailing commas, an endless loop in
``build_training``). Each run is a real ``automodel run`` (training on CPU, small budgets).

    python benchmarks/llm_yield.py --rates 0.0 0.5 --seeds 0 1 2 --iterations 6
    python benchmarks/llm_yield.py --no-zero-shot --rates 0.0 --out benchmarks/results/llm_zero_shot_off.md  # the ablation

Writes ``benchmarks/results/llm_yield.md``: bad-reply rate x valid LLM-authored attempts x fallbacks,
with the replies refused at their try-out (code that crashed in the smoke test before it became an
attempt), the escalations to the Architect, the commit and the load average of each run.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(1, str(ROOT))

from fake_openai import FakeOpenAI, FlakyModel  # noqa: E402

from automodel.experts import reference_source  # noqa: E402
from automodel.report import yield_count  # noqa: E402
from automodel.run import RunOptions, run_team  # noqa: E402
from automodel.store import RunStore  # noqa: E402
from benchmarks.provenance import git_state  # noqa: E402

ROLES = ["architect", "data_engineer", "model_engineer", "training_engineer", "analyst", "summarizer"]
MODEL_INFO = {"vision": False, "function_calling": False, "json_output": False, "family": "unknown",
              "structured_output": False}


def _config(path: Path, base_url: str, max_retries: int) -> Path:
    spec = {role: {"provider": "OpenAIChatCompletionClient",
                   "config": {"model": role, "base_url": base_url, "api_key_env": "FAKE_OPENAI_KEY", "timeout": 30.0,
                              "max_retries": 0, "model_info": MODEL_INFO}} for role in ROLES}
    path.write_text(yaml.safe_dump({"roles": spec, "max_retries": max_retries, "backoff_s": 0.01}))
    return path


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def one_run(rate: float, seed: int, iterations: int, workdir: Path, *, candidate_budget_s: float,
            max_retries: int, only: tuple[str, ...] = (), zero_shot: bool = True) -> dict[str, Any]:
    """One demo run at ``rate`` bad replies (of the kinds in ``only``, else all); the counts that matter.

    ``zero_shot=False`` is the ablation: the first candidate is the reference recipe, not the
    Architect's (scripted LLM) design; the scores say what the zero-shot start is worth.
    """
    flaky = FlakyModel(seed=seed, bad_rate=rate, only=only,
                       references={c: reference_source(c) for c in ("data", "model", "training")})
    started = time.time()
    load_before = os.getloadavg()[0]
    with FakeOpenAI({}, responder=flaky) as server:
        config = _config(workdir / "backends.yaml", server.base_url, max_retries)
        run_team(RunOptions(data="demo", out=workdir / "run", device="cpu", iterations=iterations, config=config,
                            candidate_budget_s=candidate_budget_s, max_epochs=2, time_budget_s=3600.0,
                            final_share=0.0, seed=seed, description="handwritten digits 0-9; orientation matters",
                            zero_shot=zero_shot),
                 console=Console(file=io.StringIO()))
    store = RunStore(workdir / "run")
    count = yield_count(store.history())
    faults = _lines(workdir / "run" / "model_faults.jsonl")
    final = json.loads((workdir / "run" / "final.json").read_text()) if (workdir / "run" / "final.json").is_file() else {}
    kinds: dict[str, int] = {}
    for f in faults:
        kinds[f["kind"]] = kinds.get(f["kind"], 0) + 1
    return {"rate": rate, "seed": seed, "faults_sent": "runtime only" if only else "all", "attempts": count.attempts, "valid": count.valid, "llm_valid": count.llm_valid,
            "expert_attempts": count.expert_attempts, "fallbacks": kinds.get("fallback", 0),
            "design_fallbacks": kinds.get("design_fallback", 0), "tryout_refusals": kinds.get("failed_tryout", 0),
            "escalations": kinds.get("escalation", 0), "faults": kinds,
            "load": [round(load_before, 1), round(os.getloadavg()[0], 1)],
            "sent": dict(flaky.counts), "wall_s": round(time.time() - started, 1),
            "statuses": [a.status for a in store.history()], "zero_shot": zero_shot,
            "first_val": final.get("first_val_accuracy"), "best_val": final.get("best_val_accuracy"),
            "test": final.get("test_accuracy")}


def _label(row: dict[str, Any]) -> str:
    return (f"{row['rate']:.1f}{' (runtime bugs only)' if row.get('faults_sent') == 'runtime only' else ''}"
            f"{' (zero-shot off)' if row.get('zero_shot') is False else ''}")


def _pct(x: Any) -> str:
    return f"{100 * x:.1f}" if isinstance(x, (int, float)) else "-"


def write_table(rows: list[dict[str, Any]], path: Path, note: str) -> None:
    lines = ["# LLM yield under a flaky model (digits demo, fake OpenAI-compatible server)", "", note, "",
             "| bad-reply rate | seed | attempts | valid, LLM-authored | valid (all) | expert takeovers | "
             "expert fallbacks (turns) | design fallbacks | refused at try-out | escalations | first val % | best val % | "
             "test % | wall s | load 1 min |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        load = "-".join(f"{x:g}" for x in r.get("load", [])) or "?"
        lines.append(f"| {_label(r)} | {r['seed']} | {r['attempts']} | {r['llm_valid']} / {r['attempts']} | "
                     f"{r['valid']} | {r['expert_attempts']} | {r['fallbacks']} | {r['design_fallbacks']} | "
                     f"{r.get('tryout_refusals', '?')} | {r.get('escalations', '?')} | {_pct(r.get('first_val'))} | "
                     f"{_pct(r.get('best_val'))} | {_pct(r.get('test'))} | {r['wall_s']:.0f} | {load} |")
    lines += ["", "| bad-reply rate | runs | valid LLM-authored / attempts | share | expert takeovers | "
              "expert fallbacks | design fallbacks | refused at try-out | escalations | mean first val % | "
              "mean test % |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for rate, kind, zero in sorted({(r["rate"], r.get("faults_sent", "all"), r.get("zero_shot", True)) for r in rows}):
        group = [r for r in rows if r["rate"] == rate and r.get("faults_sent", "all") == kind
                 and r.get("zero_shot", True) == zero]
        valid, attempts = sum(r["llm_valid"] for r in group), sum(r["attempts"] for r in group)
        lines.append(f"| {_label(group[0])} | {len(group)} | {valid} / {attempts} | {valid / max(attempts, 1):.0%} | "
                     f"{sum(r['expert_attempts'] for r in group)} | {sum(r['fallbacks'] for r in group)} | "
                     f"{sum(r['design_fallbacks'] for r in group)} | {sum(r.get('tryout_refusals', 0) for r in group)} | "
                     f"{sum(r.get('escalations', 0) for r in group)} | {_mean_pct(group, 'first_val')} | "
                     f"{_mean_pct(group, 'test')} |")
    lines += ["", "Faults logged per run (`model_faults.jsonl` kinds) and replies sent by the fake model:", ""]
    for r in rows:
        lines.append(f"- rate {_label(r)} seed {r['seed']}: statuses {r['statuses']}; faults {r['faults']}; "
                     f"sent {r.get('sent', {})}")
    path.write_text("\n".join(lines) + "\n")


def _mean_pct(rows: list[dict[str, Any]], key: str) -> str:
    values = [r[key] for r in rows if isinstance(r.get(key), (int, float))]
    return f"{100 * sum(values) / len(values):.1f} (n={len(values)})" if values else "-"


def merge(paths: list[Path], out: Path, note: str) -> None:
    """One table from the JSON rows several runs of this script printed (``--merge LOG...``)."""
    rows = [json.loads(line) for p in paths for line in p.read_text().splitlines() if line.startswith("{")]
    write_table(rows, out, note)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rates", type=float, nargs="+", default=[0.0, 0.5])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--iterations", type=int, default=6, help="the run's --iterations (attempts = iterations + 1)")
    parser.add_argument("--candidate-budget", type=float, default=8.0)
    parser.add_argument("--max-retries", type=int, default=2)
    parser.add_argument("--runtime-only", action="store_true",
                        help="bad replies are only bugs that show at run time (shape bug, wrong permute, endless loop)")
    parser.add_argument("--no-zero-shot", action="store_true",
                        help="the ablation: the first candidate is the reference recipe instead of the Architect's design")
    parser.add_argument("--merge", type=Path, nargs="+", help="only merge the JSON rows of earlier logs into --out")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "llm_yield.md")
    args = parser.parse_args(argv)
    os.environ.setdefault("FAKE_OPENAI_KEY", "sk-fake")
    only = ("shape_bug", "wrong_permute", "endless_loop") if args.runtime_only else ()
    if args.merge:
        merge(args.merge, args.out, "Merged from: " + ", ".join(p.name for p in args.merge))
        return 0
    rows = []
    for rate in args.rates:
        for seed in args.seeds:
            with tempfile.TemporaryDirectory(prefix="llm_yield_") as tmp:
                row = one_run(rate, seed, args.iterations, Path(tmp), candidate_budget_s=args.candidate_budget,
                              max_retries=args.max_retries, only=only, zero_shot=not args.no_zero_shot)
            rows.append(row)
            print(json.dumps(row), flush=True)
            git = git_state()
            note = (f"Command: `python benchmarks/llm_yield.py {'--runtime-only ' if only else ''}"
                    f"{'--no-zero-shot ' if args.no_zero_shot else ''}--rates "
                    f"{' '.join(map(str, args.rates))} --seeds {' '.join(map(str, args.seeds))} --iterations "
                    f"{args.iterations} --candidate-budget {args.candidate_budget:g} --max-retries {args.max_retries}`"
                    f" at commit {git.get('commit', '?')}{' (dirty)' if git.get('dirty') else ''}; CPU, "
                    f"{os.cpu_count()} cores shared with other jobs (wall times are loaded-machine times; load "
                    "average at the start and end of each run in the table).")
            write_table(rows, args.out, note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
