"""Training images/s through the harness vs the same model's pure forward+backward.

Both sides train the reference small CNN (width 32) at 32x32 on one channel, batch 64,
AdamW, on the same machine in the same command, each in a fresh process, on the same
digits images: the baseline on in-memory float tensors (before and after the harness run),
the harness on the prepared uint8 arrays (its
train_transform, one-hot targets, loss, schedule and bookkeeping included). The
harness's figure is its training loop's images/s (evaluation excluded).

    python benchmarks/harness_throughput.py [--out benchmarks/results/harness_throughput.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from automodel.harness import CandidateRunner
from automodel.interfaces import REFERENCE_DIR
from automodel.workspace import Workspace, open_workspace

BATCH, SIZE, WIDTH, EPOCHS = 64, 32, 32, 4


def pure_loop(steps: int, data_dir: Path) -> float:
    import importlib.util

    spec = importlib.util.spec_from_file_location("ref_model", REFERENCE_DIR / "model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.SmallCNN(1, 10, WIDTH, 0.1)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    # The same images the harness trains on (speed depends on the data: ReLU sparsity).
    from automodel.data import PreparedData

    data = PreparedData.load(data_dir)
    xs, ys = data.arrays("train")
    images = torch.from_numpy(xs[: BATCH * 8]).permute(0, 3, 1, 2).float().div(255)
    images = (images - data.meta.mean[0]) / data.meta.std[0]
    labels = torch.from_numpy(ys[: BATCH * 8])
    batches = [(images[i : i + BATCH], labels[i : i + BATCH]) for i in range(0, BATCH * 8, BATCH)]
    for x, y in batches * 3:  # warm up as long as the harness's smoke test + first steps
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    t0 = time.perf_counter()
    for i in range(steps):
        x, y = batches[i % len(batches)]
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return steps * BATCH / (time.perf_counter() - t0)


def fresh_pure_loop(data_dir: Path) -> float:
    cmd = [sys.executable, __file__, "--pure-only", str(data_dir)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def harness_run(work: Path, ws: Workspace) -> dict:
    comp = work / "components"
    comp.mkdir()
    for name in ("data.py", "model.py", "training.py"):
        shutil.copyfile(REFERENCE_DIR / name, comp / name)
    knobs = {
        "data.py": {"AUGMENT = \"auto\"": "AUGMENT = \"light\"", "BATCH_SIZE = 0": f"BATCH_SIZE = {BATCH}",
                    "INPUT_SIZE = 0": f"INPUT_SIZE = {SIZE}"},
        "model.py": {"WIDTH = 0": f"WIDTH = {WIDTH}", "ARCH = \"auto\"": "ARCH = \"small_cnn\""},
        "training.py": {"EPOCHS = 0": f"EPOCHS = {EPOCHS}", "GRAD_CLIP = 1.0": "GRAD_CLIP = 0.0"},
    }
    for name, edits in knobs.items():
        text = (comp / name).read_text()
        for old, new in edits.items():
            assert old in text, old
            text = text.replace(old, new)
        (comp / name).write_text(text)
    result = CandidateRunner(ws.store.data_dir, device="cpu").train(comp, work / "it", time_budget_s=600)
    if not result.ok or result.result is None:
        raise SystemExit(f"harness run failed: {result.status} {result.error}")
    return result.result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/harness_throughput.json"))
    parser.add_argument("--pure-only", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    if args.pure_only:
        print(pure_loop(100, args.pure_only))
        return
    with tempfile.TemporaryDirectory() as tmp:
        # Each side runs in a fresh process of its own, so neither inherits the other's warm state.
        ws = open_workspace("demo", Path(tmp) / "run", device="cpu", root=Path(tmp) / "digits")
        before = fresh_pure_loop(ws.store.data_dir)
        metrics = harness_run(Path(tmp), ws)
        after = fresh_pure_loop(ws.store.data_dir)
    baseline = (before + after) / 2
    harness = float(metrics["images_per_s"])
    out = {
        "benchmark": "harness_throughput",
        "setting": {"batch": BATCH, "input": SIZE, "width": WIDTH, "epochs": EPOCHS, "threads": torch.get_num_threads(),
                    "device": "cpu"},
        "pure_images_per_s": round(baseline, 1),
        "pure_before_after": [round(before, 1), round(after, 1)],
        "harness_images_per_s": round(harness, 1),
        "ratio": round(harness / baseline, 3),
        "target_ratio": 0.9,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
