"""Fixed-work candidates completed per hour: two at once (one thread each) vs one at a time (all threads).

Every candidate is the same fixed amount of work: the reference small CNN (width 32,
32x32, batch 64) trained for a set number of epochs on the digits demo, through the
real harness (startup, smoke test, evaluation, checkpoint included), with a time budget
far above what it needs. For each executor (local, Ray) three phases run the same
candidates:

- ``k1``: one at a time, each with every thread (2 on this machine);
- ``seq1``: one at a time, one thread each;
- ``k2``: two at once (one thread of the caller each, as ``Executor.run_many`` does), one
  CPU thread each.

It prints one JSON object: ``ratio`` = k2 over k1 candidates per hour with the better
executor (target >= 1.15), ``parallel_efficiency`` = k2 over twice seq1 for that
executor (target >= 0.85), and ``ray_overhead_s`` = the wall time per candidate the Ray
executor adds beyond the local one, around the same child (target < 2 s; ``ray.init``
is reported apart). Candidates go through :class:`CandidateRunner` (job directory,
trusted scoring), as in a run.
The numbers mean something only when nothing else runs on the machine.

    python benchmarks/parallel_candidates.py [--epochs 12] [--pairs 2] [--executors local ray]
    python benchmarks/parallel_candidates.py --quick     # 3 epochs, 1 pair: a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from automodel.executors import ExecutionResult, Executor, RayExecutor, create_executor
from automodel.harness import CandidateRunner
from automodel.interfaces import REFERENCE_DIR
from automodel.workspace import Workspace, open_workspace

TARGETS = {"ratio": 1.15, "parallel_efficiency": 0.85, "ray_overhead_s": 2.0}
KNOBS = {
    "data.py": {'AUGMENT = "auto"': 'AUGMENT = "light"', "BATCH_SIZE = 0": "BATCH_SIZE = 64",
                "INPUT_SIZE = 0": "INPUT_SIZE = 32"},
    "model.py": {"WIDTH = 0": "WIDTH = 32", 'ARCH = "auto"': 'ARCH = "small_cnn"'},
    "training.py": {"GRAD_CLIP = 1.0": "GRAD_CLIP = 0.0"},
}


def components(root: Path, epochs: int) -> Path:
    comp = root / "components"
    comp.mkdir(parents=True)
    knobs = {**KNOBS, "training.py": {**KNOBS["training.py"], "EPOCHS = 0": f"EPOCHS = {epochs}"}}
    for name in ("data.py", "model.py", "training.py"):
        text = (REFERENCE_DIR / name).read_text()
        for old, new in knobs[name].items():
            assert old in text, f"{old!r} not in the reference {name}: update KNOBS"
            text = text.replace(old, new)
        (comp / name).write_text(text)
    return comp


def phase(
    executor: Executor, ws: Workspace, comp: Path, work: Path, n: int, threads: int, epochs: int, parallel: int
) -> dict[str, Any]:
    """Train ``n`` identical candidates with ``threads`` threads each, ``parallel`` at a time."""
    runner = CandidateRunner(ws.store.data_dir, executor=executor, device="cpu", threads=threads, max_epochs=epochs)
    walls: list[float] = []

    def one(i: int) -> ExecutionResult:
        t = time.monotonic()
        result = runner.train(comp, work / f"c{i}", time_budget_s=3600, seed=i)
        walls.append(time.monotonic() - t)
        return result

    t0 = time.monotonic()
    with ThreadPoolExecutor(max_workers=parallel) as pool:
        results = list(pool.map(one, range(n)))
    wall = time.monotonic() - t0
    bad = [(r.status, r.error.message[:200] if r.error else "") for r in results if not r.ok]
    if bad:
        raise SystemExit(f"a benchmark candidate failed: {bad}")
    child = [r.duration_s for r in results]
    out: dict[str, Any] = {
        "candidates": n,
        "wall_s": round(wall, 2),
        "per_hour": round(n / wall * 3600, 1),
        "child_s": [round(c, 2) for c in child],
        "val_accuracy": [round(float((r.result or {}).get("val_accuracy", 0.0)), 4) for r in results],
    }
    if parallel == 1:  # one at a time: what the runner and executor add around each child
        out["overhead_s"] = round(statistics.mean(w - c for w, c in zip(walls, child, strict=True)), 3)
    return out


def bench_executor(
    name: str, inner: str, ws: Workspace, comp: Path, work: Path, n: int, epochs: int, cpus: int
) -> dict[str, Any]:
    record: dict[str, Any] = {}
    if name == "ray":
        import ray

        t = time.monotonic()
        ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
        record["init_s"] = round(time.monotonic() - t, 2)
        wide: Executor = RayExecutor(num_cpus=cpus, inner=inner)
        narrow: Executor = RayExecutor(num_cpus=1, inner=inner)
        # Two throwaway candidates at once start both worker processes, as a long-lived team would have.
        phase(narrow, ws, comp, work / "ray-warm", 2, 1, 1, 2)
    else:
        wide = narrow = create_executor(inner)
    try:
        record["k1"] = phase(wide, ws, comp, work / f"{name}-k1", n, cpus, epochs, 1)
        record["seq1"] = phase(narrow, ws, comp, work / f"{name}-seq1", n, 1, epochs, 1)
        record["k2"] = phase(narrow, ws, comp, work / f"{name}-k2", n, 1, epochs, 2)
    finally:
        if name == "ray":
            import ray

            ray.shutdown()
    record["ratio"] = round(record["k2"]["per_hour"] / record["k1"]["per_hour"], 3)
    record["parallel_efficiency"] = round(record["k2"]["per_hour"] / (2 * record["seq1"]["per_hour"]), 3)
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=12, help="epochs per candidate (fixed work)")
    parser.add_argument("--pairs", type=int, default=2, help="pairs of candidates per phase")
    parser.add_argument("--executors", nargs="+", default=["local", "ray"], choices=["local", "ray"])
    parser.add_argument("--inner", default="local", choices=["local", "sandbox"],
                        help="how each child runs (for ray: on the worker); the same for both executors")
    parser.add_argument("--quick", action="store_true", help="3 epochs, 1 pair: checks it runs, measures little")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/parallel_candidates.json"))
    args = parser.parse_args()
    epochs, pairs = (3, 1) if args.quick else (args.epochs, args.pairs)
    cpus = 2  # the comparison is two one-thread candidates vs one two-thread candidate
    load_before = os.getloadavg()
    started = time.time()
    tmp = Path(tempfile.mkdtemp(prefix="am-parallel-"))
    try:
        ws = open_workspace("demo", tmp / "run", device="cpu", root=tmp / "digits")
        comp = components(tmp, epochs)
        per_executor = {
            name: bench_executor(name, args.inner, ws, comp, tmp / "work", 2 * pairs, epochs, cpus) for name in args.executors
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    best = max(per_executor, key=lambda name: per_executor[name]["ratio"])
    out: dict[str, Any] = {
        "benchmark": "parallel_candidates",
        "ratio": per_executor[best]["ratio"],
        "better_executor": best,
        "parallel_efficiency": per_executor[best]["parallel_efficiency"],
        # What Ray adds per candidate beyond the local executor (same runner, same child).
        "ray_overhead_s": (
            round(per_executor["ray"]["seq1"]["overhead_s"] - per_executor["local"]["seq1"]["overhead_s"], 3)
            if {"ray", "local"} <= set(per_executor) else None
        ),
        "targets": TARGETS,
        "setting": {"epochs": epochs, "candidates_per_phase": 2 * pairs, "threads_k1": cpus, "threads_k2": 1,
                    "model": "reference small_cnn width 32, 32x32, batch 64, digits", "quick": args.quick,
                    "inner": args.inner},
        "executors": per_executor,
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                    "loadavg_before": [round(x, 2) for x in load_before],
                    "loadavg_after": [round(x, 2) for x in os.getloadavg()],
                    "seconds": round(time.time() - started, 1)},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
