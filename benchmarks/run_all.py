"""Run benchmark jobs (contenders x datasets x seeds at one budget), record each, and rebuild the tables.

    python benchmarks/run_all.py --datasets monkey,sports --budget 300 --seeds 3 \\
        --contenders automodel,reference,finetune,probe
    python benchmarks/run_all.py --datasets orientation --budget 90 --seeds 3   # the ablations
    python benchmarks/run_all.py --table-only

Each finished job is written at once to ``benchmarks/results/jobs/<dataset>__<contender>__b<budget>__s<seed>.json``
(committed: settings, history, per-image test correctness, provenance). A rerun skips the
jobs whose record exists (``--force`` reruns them, ``--retry-failed`` reruns those with an
error), so a killed run loses only the job in flight. The datasets are decoded once per
seed before any clock starts (``benchmarks/.cache/prepared``). One job at a time by default
(``--workers 2`` halves the wall time on 2 cores but each job then shares the CPU; the
records say so).
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import multiprocessing as mp
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make ``benchmarks`` importable as a package
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.contenders import ABLATIONS, CONTENDERS, Job, run_job  # noqa: E402
from benchmarks.datasets import CACHE, DATASETS, Prepared, prepare_shared  # noqa: E402
from benchmarks.provenance import git_state, machine, package_versions  # noqa: E402
from benchmarks.search import TPE_MIN_TRIALS  # noqa: E402
from benchmarks.table import write_table  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_CONTENDERS = ("automodel", "reference", "finetune", "probe", "naive", "optuna")
ORIENTATION_CONTENDERS = ("automodel", "automodel+description", "automodel-no-flip-check",
                          "automodel+description-no-flip-check")


def _csv(text: str) -> list[str]:
    return [t.strip() for part in text.split(",") for t in part.split() if t.strip()]


def _photo(prepared: Prepared) -> bool:
    meta = json.loads((prepared.root / "data" / "meta.json").read_text())
    return int(meta["in_chans"]) == 3 and int(meta["stored_size"]) >= 64


def plan(datasets: list[str], contenders: list[str] | None, seeds: list[int], budget: float,
         prepared: dict[tuple[str, int], Prepared], *, device: str, threads: int, full: bool,
         out_root: Path) -> tuple[list[Job], list[str]]:
    """The jobs to run and the reasons for the ones left out."""
    jobs: list[Job] = []
    skipped: list[str] = []
    for ds in datasets:
        names = list(contenders or (ORIENTATION_CONTENDERS if ds == "orientation" else DEFAULT_CONTENDERS))
        for c in names:
            if c not in CONTENDERS + ABLATIONS:
                raise SystemExit(f"unknown contender {c!r}; choose from {', '.join(CONTENDERS + ABLATIONS)}")
            for seed in seeds:
                if c == "finetune" and not _photo(prepared[(ds, seed)]):
                    skipped.append(f"{ds}/finetune: not a photo dataset (gray or under 64 px): no pretrained recipe applies")
                    break
                jobs.append(Job(ds, c, seed, budget, str(out_root), device=device, full=full, threads=threads))
    return jobs, sorted(set(skipped))


def _tpe_pointless(job: Job, jobs_dir: Path) -> str | None:
    """A reason to skip optuna-tpe: the random search on the same cell ran fewer than TPE_MIN_TRIALS trials."""
    if job.contender != "optuna-tpe":
        return None
    sibling = jobs_dir / (job.name.replace("__optuna-tpe__", "__optuna__") + ".json")
    if sibling.is_file():
        n = json.loads(sibling.read_text()).get("attempts") or 0
        if n < TPE_MIN_TRIALS:
            return f"{job.name}: skipped, optuna ran {n} < {TPE_MIN_TRIALS} trials here (TPE would stay random)"
    return None


def _save(rec: dict[str, Any], jobs_dir: Path, name: str) -> None:
    tmp = jobs_dir / (name + ".json.tmp")
    tmp.write_text(json.dumps(rec, indent=1, default=str))
    tmp.replace(jobs_dir / (name + ".json"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default="digits", help=f"comma-separated, from: {', '.join(DATASETS)}")
    parser.add_argument("--contenders", default=None,
                        help=f"comma-separated (default: {','.join(DEFAULT_CONTENDERS)}; on orientation the "
                             f"ablations); all: {', '.join(CONTENDERS + ABLATIONS)}")
    parser.add_argument("--seeds", type=int, default=1, help="how many seeds: 3 = seeds 0, 1, 2 (default 1)")
    parser.add_argument("--seed-list", default=None, help="these seeds instead, comma-separated (e.g. 1,2)")
    parser.add_argument("--budget", type=float, default=300.0, help="wall-clock seconds per contender (default 300)")
    parser.add_argument("--workers", type=int, default=1, help="jobs at a time (default 1)")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads per job (default 0: all)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda (in-process contenders; automodel: CLI default)")
    parser.add_argument("--full", action="store_true", help="full-size datasets (Fashion-MNIST 60k, bigger glyphs)")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--force", action="store_true", help="rerun jobs that already have a record")
    parser.add_argument("--retry-failed", action="store_true", help="rerun jobs whose record has an error")
    parser.add_argument("--table-only", action="store_true", help="only rebuild the tables from the records")
    args = parser.parse_args(argv)
    jobs_dir = args.results / "jobs"
    jobs_dir.mkdir(parents=True, exist_ok=True)
    meta_path = args.results / "meta.json"
    if args.table_only:
        meta = json.loads(meta_path.read_text()) if meta_path.is_file() else None
        write_table(jobs_dir, args.results / "table.md", meta=meta)
        print((args.results / "table.md").read_text())
        return 0
    datasets = _csv(args.datasets)
    for ds in datasets:
        if ds not in DATASETS:
            raise SystemExit(f"unknown dataset {ds!r}; choose from {', '.join(DATASETS)}")
    seeds = [int(s) for s in _csv(args.seed_list)] if args.seed_list else list(range(args.seeds))
    contenders = _csv(args.contenders) if args.contenders else None
    prepared = {}
    for ds in datasets:  # shared preparation, before any contender's clock
        for seed in seeds:
            prepared[(ds, seed)] = prepare_shared(ds, seed, full=args.full)
            print(f"prepared {ds} seed {seed} ({prepared[(ds, seed)].seconds:.0f} s)", flush=True)
    jobs, skipped = plan(datasets, contenders, seeds, args.budget, prepared, device=args.device, threads=args.threads,
                         full=args.full, out_root=CACHE / "runs")
    for reason in skipped:
        print("skip", reason)
    todo = []
    for job in jobs:
        path = jobs_dir / (job.name + ".json")
        if path.is_file() and not args.force and not (args.retry_failed and json.loads(path.read_text()).get("error")):
            print(f"done already: {job.name}")
            continue
        todo.append(job)
    meta = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "git": git_state(), "packages": package_versions(),
            "machine": machine(), "workers": args.workers, "threads_per_job": args.threads, "started": time.time(),
            "jobs": [j.name for j in todo], "skipped": skipped}
    meta_path.write_text(json.dumps(meta, indent=1))
    print(f"{len(todo)} jobs, {args.workers} at a time, about {len(todo) * args.budget / args.workers / 60:.0f} min "
          f"of budgets; run dirs under {CACHE / 'runs'}", flush=True)
    t0 = time.time()
    fresh: dict[str, Any] = {"max_tasks_per_child": 1} if sys.version_info >= (3, 11) else {}  # a new process per job
    with cf.ProcessPoolExecutor(args.workers, mp_context=mp.get_context("spawn"), **fresh) as pool:
        futures: dict[cf.Future[dict[str, Any]], Job] = {}
        pending = list(todo)
        while pending or futures:
            while pending and len(futures) < args.workers:
                job = pending.pop(0)
                why = _tpe_pointless(job, jobs_dir)
                if why:
                    print(why, flush=True)
                    meta["skipped"].append(why)
                    continue
                futures[pool.submit(run_job, job, prepared[(job.dataset, job.seed)])] = job
            if not futures:
                break
            done, _ = cf.wait(futures, return_when=cf.FIRST_COMPLETED)
            for fut in done:
                job = futures.pop(fut)
                try:
                    rec = fut.result()
                except Exception as exc:  # noqa: BLE001 - the worker died; record it and go on
                    rec = {"job": job.__dict__, "error": f"worker failed: {type(exc).__name__}: {exc}"}
                _save(rec, jobs_dir, job.name)
                clock = rec.get("clock") or {}
                print(f"[{time.time() - t0:6.0f}s] {job.name}: test {rec.get('test_accuracy')} val "
                      f"{rec.get('best_val_accuracy')} attempts {rec.get('attempts')} wall {clock.get('wall_s')} s "
                      f"cpu {clock.get('cpu_s')} s" + (f" ERROR {rec['error']}" if rec.get("error") else ""), flush=True)
    meta.update(finished=time.time(), total_wall_s=round(time.time() - t0, 1), machine_at_end=machine())
    meta_path.write_text(json.dumps(meta, indent=1))
    write_table(jobs_dir, args.results / "table.md", meta=meta)
    print((args.results / "table.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
