"""Measure the forward cost per image of each feature backbone on this machine.

    python -m benchmarks.backbone_cost            # all backbones in automodel.features.BACKBONES
    python -m benchmarks.backbone_cost --batches 6

The offline expert plans feature extraction from ``Backbone.cpu_ms_per_image``; this is the
measurement behind those constants (batch ``EXTRACT_BATCH``, channels-last, inference mode, the machine's threads, the
real ImageNet weights from the installed packages). Each backbone is timed in the same
process after one warm-up batch; the result is the median over batches. Run it alone: on a
shared 2-core machine a parallel job doubles the numbers. Writes
``benchmarks/results/backbone_cost.json`` with provenance (commit, CPU, load).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch

from automodel.features import BACKBONES, EXTRACT_BATCH, build_backbone
from automodel.weights import local_weight_files
from benchmarks.provenance import machine

RESULTS = Path(__file__).resolve().parent / "results" / "backbone_cost.json"


def measure(name: str, batches: int, batch_size: int) -> dict[str, float]:
    b = BACKBONES[name]
    model = build_backbone(name, local_weight_files(), hub=False)
    x = torch.rand(batch_size, 3, b.native_size, b.native_size).contiguous(memory_format=torch.channels_last)
    times: list[float] = []
    with torch.inference_mode():
        model(x)  # warm-up: allocator, kernels
        for _ in range(batches):
            t0 = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - t0)
    ms = statistics.median(times) / batch_size * 1000
    return {"native_size": b.native_size, "measured_ms_per_image": round(ms, 2),
            "constant_ms_per_image": b.cpu_ms_per_image, "ratio_measured_to_constant": round(ms / b.cpu_ms_per_image, 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batches", type=int, default=12)
    ap.add_argument("--batch-size", type=int, default=EXTRACT_BATCH)
    args = ap.parse_args()
    record = {"machine": machine(), "threads": torch.get_num_threads(), "load_before": os.getloadavg(),
              "backbones": {}}
    for name in BACKBONES:
        record["backbones"][name] = r = measure(name, args.batches, args.batch_size)
        print(f"{name:20s} @{r['native_size']}: {r['measured_ms_per_image']:6.2f} ms/image "
              f"(constant {r['constant_ms_per_image']}, ratio {r['ratio_measured_to_constant']})", flush=True)
    record["load_after"] = os.getloadavg()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
