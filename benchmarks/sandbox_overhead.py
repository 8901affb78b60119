"""What isolation costs: training images/s and start-up seconds under local, sandbox and docker.

The same candidate (the reference recipe, fixed epochs, fixed threads) trains on the same
prepared digits data under each executor, in rounds that rotate the executor order so that
machine load drifts hit all of them alike. Reported per executor (medians over the rounds):

* ``images_per_s``: the harness's training-loop throughput (evaluation excluded), and its
  ratio to ``local`` (target >= 0.97);
* ``startup_s``: wall seconds of ``python -c pass`` run through the executor (sandbox or
  container creation, interpreter start, clean-up);
* ``first_event_s``: seconds from the executor call to the harness's first event (start-up
  plus importing torch and the components).

    python benchmarks/sandbox_overhead.py [--rounds 3] [--epochs 3] [--threads 1]
        [--out benchmarks/results/sandbox_overhead.json]

Executors that cannot start here are reported as skipped, with the reason.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from automodel.executors import (
    ExecutionRequest,
    Executor,
    bwrap_problem,
    create_executor,
    docker_problem,
    import_local_image,
)
from automodel.harness import CandidateRunner
from automodel.interfaces import REFERENCE_DIR
from automodel.workspace import open_workspace

EXECUTORS = ("local", "sandbox", "docker")


def _problem(name: str) -> str | None:
    if name == "sandbox":
        return bwrap_problem()
    if name == "docker":
        return docker_problem()
    return None


def startup_s(executor: Executor, work: Path) -> float:
    request = ExecutionRequest(argv=[sys.executable, "-c", "pass"], workdir=work, job_dir=work, cwd=work,
                               timeout_s=120)
    t0 = time.perf_counter()
    result = executor.run(request)
    elapsed = time.perf_counter() - t0
    if result.returncode != 0:
        raise RuntimeError(f"{executor.name}: python -c pass failed: {result.log_tail}")
    return elapsed


def train_once(runner: CandidateRunner, components: Path, work: Path) -> dict[str, float]:
    first: list[float] = []
    t0 = time.perf_counter()

    def on_event(event: dict[str, Any]) -> None:
        if not first:
            first.append(time.perf_counter() - t0)

    result = runner.train(components, work, time_budget_s=600, on_event=on_event)
    if not result.ok or result.result is None:
        raise RuntimeError(f"{runner.executor.name}: training failed: {result.status} {result.error}")
    return {"images_per_s": float(result.result["images_per_s"]), "first_event_s": first[0] if first else float("nan"),
            "total_s": result.duration_s, "val_accuracy": float(result.result["val_accuracy"])}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/sandbox_overhead.json"))
    args = parser.parse_args(argv)

    root = Path(tempfile.mkdtemp(prefix="am-sandbox-overhead-"))
    try:
        ws = open_workspace("demo", root / "run", device="cpu", root=root / "digits")
        components = root / "components"
        shutil.copytree(REFERENCE_DIR, components, ignore=shutil.ignore_patterns("__pycache__"))
        available: dict[str, CandidateRunner] = {}
        skipped: dict[str, str] = {}
        for name in EXECUTORS:
            problem = _problem(name)
            if problem:
                skipped[name] = problem
                continue
            if name == "docker":
                import_local_image()
            executor = create_executor(name)
            available[name] = ws.runner(executor=executor, max_epochs=args.epochs, threads=args.threads)
        samples: dict[str, list[dict[str, float]]] = {name: [] for name in available}
        names = list(available)
        for r in range(args.rounds):
            order = names[r % len(names):] + names[: r % len(names)]
            for name in order:
                runner = available[name]
                row = train_once(runner, components, root / f"{name}-{r}")
                row["startup_s"] = startup_s(runner.executor, root / f"{name}-{r}-pass")
                samples[name].append(row)
                print(f"round {r + 1} {name}: {row}", flush=True)
        summary: dict[str, Any] = {}
        base = statistics.median(s["images_per_s"] for s in samples["local"]) if "local" in samples else None
        for name, rows in samples.items():
            ips = statistics.median(s["images_per_s"] for s in rows)
            summary[name] = {
                "images_per_s": round(ips, 1),
                "ratio_to_local": round(ips / base, 3) if base else None,
                "startup_s": round(statistics.median(s["startup_s"] for s in rows), 2),
                "first_event_s": round(statistics.median(s["first_event_s"] for s in rows), 2),
                "rounds": rows,
            }
        report = {"settings": vars(args) | {"out": str(args.out)}, "executors": summary, "skipped": skipped}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1))
        print(f"{'executor':10} {'img/s':>8} {'ratio':>6} {'start s':>8} {'1st event s':>12}")
        for name, row in summary.items():
            print(f"{name:10} {row['images_per_s']:8.1f} {row['ratio_to_local'] or 0:6.3f} {row['startup_s']:8.2f} "
                  f"{row['first_event_s']:12.2f}")
        for name, why in skipped.items():
            print(f"{name:10} skipped: {why}")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
