"""Training images/s through the harness against a truly minimal loop doing the same work.

Both sides train the reference small CNN (width 32) at 32 px on one channel, batch 64,
AdamW with the reference's parameter groups, on the digits training split, each in a
fresh process with the same number of torch threads:

* **harness**: ``python -m automodel.harness`` with the reference recipe's knobs set to
  that model (augmentation ``light``, which at the stored 32 px is only the uint8 ->
  float normalisation; no EMA, no clipping); its figure is its training loop's images/s
  (evaluation excluded), after its own smoke-test warm-up.
* **minimal**: the same model built with the same seed, the same optimizer, the same
  batch order (``torch.randperm`` from a generator seeded like the harness's), the same
  images converted to normalised float once before timing, plain ``cross_entropy``;
  warmed up with the same number of steps (weights restored), then timed over the same
  epochs. It does strictly less work per step, so it is an upper bound: a ratio above
  ``MAX_RATIO`` means the measurement is broken, not that the harness is faster.

The two alternate ``--rounds`` times, the first side alternating too (harness-minimal,
minimal-harness, ...), each in a session of its own as the executor runs the harness; the report
gives each side's median and min-max spread and the median of the per-round ratios. A
pair of rounds starts only if two rounds as long as the longest so far end within ``--max-minutes``
(default 7.5; a quiet 2-core machine does a round in under a minute).

    python benchmarks/harness_throughput.py [--rounds 4] [--threads 2] [--out benchmarks/results/harness_throughput.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make ``benchmarks`` importable as a package
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

BATCH, SIZE, WIDTH, EPOCHS, SEED, LR, WEIGHT_DECAY, SMOKE_STEPS = 64, 32, 32, 3, 0, 3e-3, 0.05, 3
MAX_RATIO = 1.02
KNOBS: dict[str, dict[str, Any]] = {
    "data": {"AUGMENT": "light", "BATCH_SIZE": BATCH, "INPUT_SIZE": SIZE},
    "model": {"ARCH": "small_cnn", "WIDTH": WIDTH, "DROPOUT": 0.1},
    "training": {"EPOCHS": EPOCHS, "GRAD_CLIP": 0.0, "LR": LR, "WEIGHT_DECAY": WEIGHT_DECAY, "SCHEDULE": "constant",
                 "LABEL_SMOOTHING": 0.0},
}


def minimal_loop(data_dir: Path, threads: int) -> dict[str, float]:
    """The minimal loop (run in its own process); images/s over ``EPOCHS`` epochs after warm-up."""
    import importlib.util

    from automodel.data import PreparedData
    from automodel.interfaces import REFERENCE_DIR, ops

    torch.set_num_threads(threads)
    torch.manual_seed(SEED)
    spec = importlib.util.spec_from_file_location("reference_model", REFERENCE_DIR / "model.py")
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot import {REFERENCE_DIR / 'model.py'}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.SmallCNN(1, 10, WIDTH, 0.1)  # what the reference's build_model returns for these knobs
    opt = torch.optim.AdamW(ops.param_groups(model, lr=LR, weight_decay=WEIGHT_DECAY), lr=LR, betas=(0.9, 0.999))
    data = PreparedData.load(data_dir)
    xs, ys = data.arrays("train")
    assert ys is not None
    x = torch.from_numpy(xs).permute(0, 3, 1, 2).contiguous()
    x = ops.to_float(x, tuple(data.meta.mean), tuple(data.meta.std), 1)
    y = torch.from_numpy(ys).long()
    n = len(y)
    steps = n // BATCH
    model.train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    for _ in range(SMOKE_STEPS + 1):  # the harness's smoke test: forward+backward, weights restored
        idx = torch.randperm(n)[:BATCH]
        torch.nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
        model.zero_grad(set_to_none=True)
    model.load_state_dict(state)
    gen = torch.Generator().manual_seed(SEED)
    images = 0
    t0 = time.perf_counter()
    for _ in range(EPOCHS):
        order = torch.randperm(n, generator=gen)
        for b in range(steps):
            idx = order[b * BATCH:(b + 1) * BATCH]
            loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            images += len(idx)
    seconds = time.perf_counter() - t0
    return {"images_per_s": images / seconds, "seconds": seconds, "images": images}


def run_minimal(data_dir: Path, threads: int) -> dict[str, float]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--minimal-only", str(data_dir), "--threads", str(threads)]
    # A session of its own, as the executor gives the harness (the kernel's autogroup scheduler
    # shares the CPU between sessions, not processes).
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, start_new_session=True,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)})
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def run_harness(work: Path, data_dir: Path, threads: int, index: int) -> dict[str, float]:
    from automodel.experts import reference_source, set_knobs
    from automodel.harness import CandidateRunner
    from automodel.interfaces import COMPONENTS

    comp = work / f"components-{index}"
    comp.mkdir(parents=True, exist_ok=True)
    for name in COMPONENTS:
        text, applied = set_knobs(reference_source(name), KNOBS[name])
        if set(KNOBS[name]) - set(applied):
            raise SystemExit(f"reference {name}.py lacks knobs {sorted(set(KNOBS[name]) - set(applied))}")
        (comp / f"{name}.py").write_text(text)
    runner = CandidateRunner(data_dir, device="cpu", threads=threads)
    result = runner.train(comp, work / f"harness-{index}", time_budget_s=600, seed=SEED)
    if not result.ok or result.result is None:
        raise SystemExit(f"harness run failed: {result.status} {result.error}")
    m = result.result
    return {"images_per_s": float(m["images_per_s"]), "seconds": float(m["train_seconds"]),
            "epochs": float(m["epochs_run"])}


def _spread(xs: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(xs), 1), "min": round(min(xs), 1), "max": round(max(xs), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "harness_throughput.json")
    parser.add_argument("--rounds", type=int, default=4, help="rounded up to an even number (ABBA pairs)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads on both sides (0: all CPUs)")
    parser.add_argument("--max-minutes", type=float, default=7.5,
                        help="start no round that would end after this, judged by the longest round so far")
    parser.add_argument("--minimal-only", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    threads = args.threads or len(os.sched_getaffinity(0))
    if args.minimal_only:
        print(json.dumps(minimal_loop(args.minimal_only, threads)))
        return
    from automodel.workspace import open_workspace
    from benchmarks.provenance import git_state, machine, package_versions

    t_start = time.monotonic()
    rounds: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        ws = open_workspace("demo", Path(tmp) / "run", device="cpu", root=Path(tmp) / "digits")
        data_dir = ws.store.data_dir
        longest = 0.0
        for i in range(args.rounds + args.rounds % 2):
            # Pairs only (ABBA): the second round of a pair always runs, or the order effect stays in.
            if i and i % 2 == 0 and time.monotonic() - t_start + 2 * longest > 60 * args.max_minutes:
                break
            t_round = time.monotonic()
            load = os.getloadavg()[0]
            # ABBA: the side that runs first alternates, so an order effect (whatever the second
            # process of a round inherits from the first) cancels out of the medians.
            if i % 2 == 0:
                h = run_harness(Path(tmp), data_dir, threads, i)
                b = run_minimal(data_dir, threads)
            else:
                b = run_minimal(data_dir, threads)
                h = run_harness(Path(tmp), data_dir, threads, i)
            rounds.append({"harness": h, "minimal": b, "ratio": h["images_per_s"] / b["images_per_s"],
                           "first": "harness" if i % 2 == 0 else "minimal",
                           "load_before": round(load, 2), "load_after": round(os.getloadavg()[0], 2)})
            longest = max(longest, time.monotonic() - t_round)
            print(f"round {i + 1}: harness {h['images_per_s']:.0f} img/s, minimal {b['images_per_s']:.0f} img/s, "
                  f"ratio {rounds[-1]['ratio']:.3f} (load {load:.1f})", flush=True)
    hs = [r["harness"]["images_per_s"] for r in rounds]
    bs = [r["minimal"]["images_per_s"] for r in rounds]
    ratios = [r["ratio"] for r in rounds]
    ratio = statistics.median(hs) / statistics.median(bs)
    out = {
        "benchmark": "harness_throughput",
        "setting": {"batch": BATCH, "input": SIZE, "width": WIDTH, "epochs": EPOCHS, "threads": threads,
                    "device": "cpu", "rounds": len(rounds), "order": "ABBA: harness first in even rounds, minimal first in odd ones"},
        "harness_images_per_s": _spread(hs),
        "minimal_images_per_s": _spread(bs),
        "ratio_of_medians": round(ratio, 3),
        "per_round_ratio": {"median": round(statistics.median(ratios), 3), "min": round(min(ratios), 3),
                            "max": round(max(ratios), 3)},
        "verdict": (f"measurement error: ratio {ratio:.3f} > {MAX_RATIO} (the minimal loop must be an upper bound)"
                    if ratio > MAX_RATIO else f"harness keeps {100 * ratio:.0f}% of the minimal loop's throughput"),
        "per_round_ratio_by_first": {
            side: round(statistics.median(r["ratio"] for r in rounds if r["first"] == side), 3)
            for side in ("harness", "minimal") if any(r["first"] == side for r in rounds)
        },
        "rounds": rounds,
        "total_s": round(time.monotonic() - t_start, 1),
        "git": git_state(),
        "packages": package_versions(),
        "machine": machine(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2))
    print(json.dumps({k: v for k, v in out.items() if k not in ("rounds", "packages", "git")}, indent=2))


if __name__ == "__main__":
    main()
