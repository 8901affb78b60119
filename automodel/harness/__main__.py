"""``python -m automodel.harness --job JOB_DIR/job.json``: run one candidate in this process.

This process runs untrusted component code. It reads only its job directory (see
:mod:`automodel.executors`' protocol) and writes predictions, checkpoints and its own
report there; the orchestrator computes every score.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from pathlib import Path

from automodel.executors import DATA_DIR, ERROR_FILE, GUARD_ENV, INFEASIBLE_ERROR_TYPE, OUT_DIR, RESULT_FILE
from automodel.harness._job import (
    ERROR_EXIT_CODE,
    HarnessJob,
    Infeasible,
    arm_lifeline,
    emit,
    write_json_atomic,
)


def available_cpus() -> int:
    """CPUs this process may use: ``OMP_NUM_THREADS`` if set, else its CPU affinity."""
    env = os.environ.get("OMP_NUM_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1


def main(argv: list[str] | None = None) -> int:
    arm_lifeline()
    parser = argparse.ArgumentParser(prog="python -m automodel.harness", description=__doc__)
    parser.add_argument("--job", required=True, type=Path, help="path of the job.json to run")
    args = parser.parse_args(argv)
    job_dir = args.job.resolve().parent
    os.chdir(job_dir)
    job = HarnessJob.model_validate_json(args.job.read_text(encoding="utf-8"))
    (job_dir / OUT_DIR).mkdir(exist_ok=True)
    # Heavy imports after argument parsing so `--help` stays fast.
    import torch

    from automodel.harness._export import export
    from automodel.harness._guard import install_guard
    from automodel.harness._job import JobData
    from automodel.harness._loader import ComponentFailure, load_components
    from automodel.harness._train import BOUNDARIES, predict, train

    torch.set_num_threads(job.threads or available_cpus())
    if not job.hub_available:
        os.environ["HF_HUB_OFFLINE"] = "1"
    if job.mode == "features":
        return _extract(job, job_dir)
    try:
        data = JobData.load(job_dir)
        install_guard([Path(p) for p in os.environ.get(GUARD_ENV, "").split(os.pathsep) if p])
        components = job_dir / "components"
        sys.path.insert(0, str(components))
        modules, files = load_components(components)
        emit("start", mode=job.mode)
        result = {"train": train, "predict": predict, "export": export}[job.mode](job, job_dir, modules, files, data)
    except Infeasible as exc:
        write_json_atomic(job_dir / ERROR_FILE, {
            "component": "model", "error_type": INFEASIBLE_ERROR_TYPE, "message": str(exc), "traceback": "",
            "lines": [],
        })
        emit("error", component="model", error_type=INFEASIBLE_ERROR_TYPE, message=str(exc)[:500])
        return ERROR_EXIT_CODE
    except ComponentFailure as failure:
        payload = failure.to_json()
        payload["boundaries"] = dict(BOUNDARIES)  # shapes/dtypes that crossed the component boundaries last
        if isinstance(failure.exc, MemoryError) or "out of memory" in payload["message"].lower():
            payload["error_type"] = "MemoryError"
        write_json_atomic(job_dir / ERROR_FILE, payload)
        emit("error", component=payload["component"], error_type=payload["error_type"], message=payload["message"][:500])
        sys.stderr.write(payload["traceback"])
        return ERROR_EXIT_CODE
    except MemoryError as exc:
        write_json_atomic(job_dir / ERROR_FILE, {
            "component": "harness", "error_type": "MemoryError", "message": str(exc),
            "traceback": traceback.format_exc()[-6000:], "lines": [],
        })
        return ERROR_EXIT_CODE
    write_json_atomic(job_dir / RESULT_FILE, result)
    emit("done", **{k: v for k, v in result.items() if k in ("epochs_run", "num_predictions")})
    return 0


def _extract(job: HarnessJob, job_dir: Path) -> int:
    """Features mode: trusted code only (no component is imported), writes ``out/features/KEY/``."""
    from automodel.features import extract_features

    if not job.features_key:
        raise SystemExit("features mode needs features_key in job.json")
    last = [0.0]

    def progress(split: str, done: int, total: int) -> None:
        now = time.perf_counter()
        if now - last[0] >= job.progress_every_s or done == total:
            emit("progress", phase=f"features {split}", step=done, steps=total)
            last[0] = now

    weights = {name: os.path.abspath(path) for name, path in job.local_weights.items()}
    meta = extract_features(job_dir / DATA_DIR, job_dir / OUT_DIR / "features", job.features_key, local_weights=weights,
                            hub=job.hub_available, device=job.device if job.device != "auto" else "cpu",
                            flip=job.features_flip, on_progress=progress)
    write_json_atomic(job_dir / RESULT_FILE, meta)
    emit("done", features=job.features_key, seconds=meta["seconds"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
