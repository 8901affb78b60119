"""``python -m automodel.harness --job JOB.json``: run one candidate in this process."""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from pathlib import Path

from automodel.harness._job import ERROR_EXIT_CODE, HarnessJob, emit, write_json_atomic


def available_cpus() -> int:
    """CPUs this process may use: ``OMP_NUM_THREADS`` if set, else its CPU affinity."""
    env = os.environ.get("OMP_NUM_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m automodel.harness", description=__doc__)
    parser.add_argument("--job", required=True, type=Path, help="path of the job.json to run")
    args = parser.parse_args(argv)
    job = HarnessJob.model_validate_json(args.job.read_text(encoding="utf-8"))
    job.workdir.mkdir(parents=True, exist_ok=True)
    # Heavy imports after argument parsing so `--help` stays fast.
    import torch

    from automodel.data import PreparedData
    from automodel.harness._guard import install_guard
    from automodel.harness._loader import ComponentFailure, load_components
    from automodel.harness._train import predict, train

    torch.set_num_threads(job.threads or available_cpus())
    if not job.hub_available:
        os.environ["HF_HUB_OFFLINE"] = "1"
    if job.mode == "features":
        return _extract(job)
    try:
        data = PreparedData.load(job.data_dir)
        install_guard(list(job.forbidden_paths))
        sys.path.insert(0, str(job.components_dir))
        modules, files = load_components(job.components_dir)
        emit("start", mode=job.mode, components=str(job.components_dir))
        result = (train if job.mode == "train" else predict)(job, modules, files, data)
    except ComponentFailure as failure:
        payload = failure.to_json()
        if isinstance(failure.exc, MemoryError) or "out of memory" in payload["message"].lower():
            payload["error_type"] = "MemoryError"
        write_json_atomic(job.workdir / "error.json", payload)
        emit("error", component=payload["component"], error_type=payload["error_type"], message=payload["message"][:500])
        sys.stderr.write(payload["traceback"])
        return ERROR_EXIT_CODE
    except MemoryError as exc:
        write_json_atomic(job.workdir / "error.json", {
            "component": "harness", "error_type": "MemoryError", "message": str(exc),
            "traceback": traceback.format_exc()[-6000:], "lines": [],
        })
        return ERROR_EXIT_CODE
    write_json_atomic(job.workdir / "result.json", result)
    emit("done", **{k: v for k, v in result.items() if k in ("val_accuracy", "epochs_run", "num_predictions")})
    return 0


def _extract(job: HarnessJob) -> int:
    """Features mode: trusted code only (no component is imported), writes the feature cache."""
    from automodel.features import extract_features

    if job.features_dir is None or not job.features_key:
        raise SystemExit("features mode needs features_dir and features_key in job.json")
    last = [0.0]

    def progress(split: str, done: int, total: int) -> None:
        import time

        now = time.perf_counter()
        if now - last[0] >= job.progress_every_s or done == total:
            emit("progress", phase=f"features {split}", step=done, steps=total)
            last[0] = now

    meta = extract_features(job.data_dir, job.features_dir, job.features_key, local_weights=dict(job.local_weights),
                            hub=job.hub_available, device=job.device if job.device != "auto" else "cpu",
                            on_progress=progress)
    write_json_atomic(job.workdir / "result.json", meta)
    emit("done", features=job.features_key, seconds=meta["seconds"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
