"""Run every benchmark: contenders x datasets x seeds, plus the paper's ablations; write JSON and a table.

    python benchmarks/run_all.py            # small version: CPU, about 25 minutes on 2 cores
    python benchmarks/run_all.py --full     # full version: GPU host, full data, 3 seeds
    python benchmarks/run_all.py --table-only   # rebuild table.md from benchmarks/results/runs/*.json

Small version: one seed; 90 s per contender on digits, Fashion-MNIST (3k) and the
orientation task, 180 s on the sign photos (a pretrained net needs a minute per epoch on
2 cores); 20 s / 45 s per candidate for the iterating contenders. Two jobs run at a time,
each candidate with one torch thread (two 2-thread jobs on 2 cores thrash). Full
version: 600 s per contender, 120 s per candidate, seeds 0-2, one job at a time, all threads.

Each job writes ``benchmarks/results/runs/<dataset>__<contender>__s<seed>.json``; the
table (``benchmarks/results/table.md``) is computed from those files only.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make ``benchmarks`` importable as a package
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.contenders import Job, run_job  # noqa: E402
from benchmarks.datasets import CACHE, DATASETS  # noqa: E402
from benchmarks.table import write_table  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
MAIN = ("automodel", "reference", "naive", "random", "tpe")
SMALL_BUDGET = {"digits": (90.0, 20.0), "fashion": (90.0, 20.0), "orientation": (90.0, 20.0), "signs": (180.0, 45.0)}
FULL_BUDGET = (600.0, 120.0)


def plan(full: bool, datasets: list[str], contenders: list[str] | None, seeds: list[int], threads: int,
         device: str, out_root: Path) -> list[Job]:
    """The jobs of one benchmark run, longest first (so parallel workers finish together)."""
    jobs: list[Job] = []
    for ds in datasets:
        budget, cand = FULL_BUDGET if full else SMALL_BUDGET[ds]
        names = list(MAIN)
        if full or ds in ("digits", "orientation"):
            names.append("automodel-no-zero-shot")
        if ds == "orientation":
            names.append("automodel+description")
        for c in names:
            if contenders and c not in contenders:
                continue
            for seed in seeds:
                jobs.append(Job(ds, c, seed, budget, cand, str(out_root), device=device, full=full, threads=threads))
    return sorted(jobs, key=lambda j: -j.budget_s)


def _save(rec: dict[str, object], runs_dir: Path) -> None:
    job = rec["job"]
    assert isinstance(job, dict)
    name = f"{job['dataset']}__{job['contender']}__s{job['seed']}.json"
    tmp = runs_dir / (name + ".tmp")
    tmp.write_text(json.dumps(rec, indent=1, default=str))
    tmp.replace(runs_dir / name)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="full data, 600 s budgets, 3 seeds (GPU host)")
    parser.add_argument("--datasets", nargs="+", choices=DATASETS, default=list(DATASETS))
    parser.add_argument("--contenders", nargs="+", default=None, help="only these contenders")
    parser.add_argument("--seeds", type=int, nargs="+", default=None)
    parser.add_argument("--workers", type=int, default=None, help="jobs at a time (small: 2, full: 1)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per candidate (small: 1, full: all)")
    parser.add_argument("--device", default=None, help="cpu / cuda / auto (small: cpu, full: auto)")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--table-only", action="store_true")
    args = parser.parse_args()
    runs_dir = args.results / "runs"
    runs_dir.mkdir(parents=True, exist_ok=True)
    if args.table_only:
        write_table(runs_dir, args.results / "table.md", meta_path=args.results / "meta.json")
        print((args.results / "table.md").read_text())
        return 0
    seeds = args.seeds if args.seeds is not None else ([0, 1, 2] if args.full else [0])
    workers = args.workers or (1 if args.full else 2)
    threads = args.threads if args.threads is not None else (0 if args.full else 1)
    device = args.device or ("auto" if args.full else "cpu")
    jobs = plan(args.full, args.datasets, args.contenders, seeds, threads, device, CACHE / "runs")
    for ds in args.datasets:  # build derived datasets once, before the workers race for them
        from benchmarks.datasets import resolve

        resolve(ds, full=args.full)
    meta = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "full": args.full, "workers": workers,
            "threads_per_candidate": threads, "device": device, "cpu_count": os.cpu_count(),
            "load_at_start": os.getloadavg(), "started": time.time(), "jobs": [j.name for j in jobs]}
    (args.results / "meta.json").write_text(json.dumps(meta, indent=1))
    print(f"{len(jobs)} jobs, {workers} at a time; run dirs under {CACHE / 'runs'}", flush=True)
    t0 = time.time()
    with cf.ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
        futures = {pool.submit(run_job, job): job for job in jobs}
        for fut in cf.as_completed(futures):
            job = futures[fut]
            try:
                rec = fut.result()
            except Exception as exc:  # noqa: BLE001 - the worker died; record it and go on
                rec = {"job": job.__dict__, "error": f"worker failed: {exc}"}
            _save(rec, runs_dir)
            print(f"[{time.time() - t0:6.0f}s] {job.name}: test {rec.get('test_accuracy')} val "
                  f"{rec.get('best_val_accuracy')} attempts {rec.get('attempts')} wall {rec.get('wall_s')}s"
                  + (f" ERROR {rec['error']}" if rec.get("error") else ""), flush=True)
    meta.update(finished=time.time(), total_wall_s=round(time.time() - t0, 1), load_at_end=os.getloadavg())
    (args.results / "meta.json").write_text(json.dumps(meta, indent=1))
    write_table(runs_dir, args.results / "table.md", meta_path=args.results / "meta.json")
    print((args.results / "table.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
