"""Code is tried before it is handed over: the harness's smoke test alone, as an executor job.

An engineer (or the Architect) that writes a file runs it once with the other two files of
the candidate it joins, through the run's own executor (never in this process): the harness
builds data, model and training, runs a few forward/backward steps, ``build_training`` and
one optimizer step, then stops. A crash there is a bug the writer can fix at once, so it is
refused like any unusable reply (fault kind ``failed_tryout``) and sent back with the error,
the offending lines and the shapes at the component boundaries. It costs one short job and
no attempt: only code that passed its try-out becomes a candidate.

How it stops early: the job gets a budget (``TRYOUT_BUDGET_S``) that no epoch fits in, so the
harness ends with ``Infeasible`` right after its smoke test; the ``smoke`` event it sends
before that check is the pass. Components see that small budget in their specs
(``time_budget_s``); one that plans epochs from it must still plan at least one.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from automodel.executors import INFEASIBLE_ERROR_TYPE
from automodel.interfaces import COMPONENT_FILES, validate_components
from automodel.roles._candidate import blame_by_evidence, crash_boundaries
from automodel.roles._faults import TryOutError
from automodel.runtime import Run

__all__ = ["TRYOUT_BUDGET_S", "TRYOUT_DIR", "TRYOUT_TIMEOUT_S", "TryOutFailure", "refuse_if_it_crashes", "try_out"]

TRYOUT_BUDGET_S = 1.0
"""The try-out's time budget: shorter than the harness needs to reach its first epoch."""
TRYOUT_TIMEOUT_S = 120.0
"""How long a try-out job may take before the executor stops it; then the code is not judged (it runs as a
candidate, whose own run judges it)."""
TRYOUT_DIR = "tryouts"
"""Where a try-out's files and job live in the run directory while it runs (removed after)."""

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class TryOutFailure:
    """Why a try-out failed and which file the evidence blames."""

    component: str
    """``data``, ``model``, ``training`` or ``harness``: blamed by the traceback and the boundary shapes."""
    message: str
    """For the writer: error type and message, offending lines, boundary shapes."""


def try_out(run: Run, files: dict[str, str], *, label: str) -> TryOutFailure | None:
    """Run the harness's smoke test on ``files`` (component -> source) as an executor job.

    Returns:
        None when the smoke test passed (or the try-out could not judge the code: a timeout of the
        job itself, a failed feature extraction, an infeasible plan); else the failure and the file it blames.
    """
    started = time.time()
    parent = run.store.root / TRYOUT_DIR
    folder = parent / f"{label}-{time.time_ns()}"
    folder.mkdir(parents=True)
    try:
        failure = _try(run, folder, files)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        with contextlib.suppress(OSError):
            parent.rmdir()  # only when no other try-out is under way
    log.info("tryout", role=label, passed=failure is None, blamed=failure.component if failure else None,
             seconds=round(time.time() - started, 1))
    return failure


def _try(run: Run, folder: Path, files: dict[str, str]) -> TryOutFailure | None:
    for component, code in files.items():
        (folder / COMPONENT_FILES[component]).write_text(code, encoding="utf-8")
    issues = validate_components(folder)
    if issues:
        return TryOutFailure(issues[0].component, "; ".join(str(i) for i in issues[:5]))
    # The run's own executor and limits; the job's timeout is TRYOUT_BUDGET_S plus the runner's grace,
    # which Run.runner sizes as half the candidate budget it is given (a loaded machine needs minutes).
    runner = run.runner(candidate_budget_s=2 * TRYOUT_TIMEOUT_S)
    try:  # a set the Executor would extract anyway; never past what is left of the run's clock
        _, extraction = runner.ensure_features(folder, folder, on_event=run.emit,
                                               timeout_s=max(1.0, run.plan().usable_s()))
    except ValueError as exc:  # FEATURES names no known backbone, or is malformed
        return TryOutFailure("data", f"FEATURES in data.py: {exc}\nFix it and reply with the complete file again.")
    if extraction is not None and not extraction.ok:
        return None  # the Executor reports a failed extraction as an attempt; nothing to try here
    events: list[dict[str, Any]] = []
    result = runner.train(folder, folder, time_budget_s=TRYOUT_BUDGET_S, seed=run.settings.seed,
                          on_event=events.append)
    if result.status == "timeout":
        log.warning("tryout_not_judged", reason=f"the try-out job took over {TRYOUT_TIMEOUT_S:g} s")
        return None
    if any(e.get("event") == "smoke" and e.get("ok") for e in events):
        return None
    err = result.error
    if err is None or err.error_type == INFEASIBLE_ERROR_TYPE:
        return None
    boundaries = crash_boundaries(folder)
    blamed = blame_by_evidence(err.component, boundaries)
    lines = "\n".join(str(x) for x in err.lines[:12])
    message = (f"your code was tried with the other two files before it could run as a candidate, and "
               f"{err.component}.py raised {err.error_type}: {err.message[:800]}")
    if lines:
        message += f"\nOffending lines:\n{lines}"
    if boundaries:
        message += "\nAt the component boundaries: " + "; ".join(f"{k}: {v}" for k, v in boundaries.items())
    if blamed != err.component:
        message += f"\nThe shapes point at {blamed}.py as the cause."
    if err.traceback:
        message += f"\nTraceback (end):\n{err.traceback[-1200:]}"
    return TryOutFailure(blamed, message + "\nFix the cause and reply with the complete file again.")


async def refuse_if_it_crashes(run: Run, files: dict[str, str], owned: Collection[str], *, label: str) -> None:
    """Try ``files`` out; raise :class:`TryOutError` when they crash and the evidence blames a file in ``owned``.

    A crash blamed on a file the writer does not own is left to the Executor, which records it
    and sends it to that file's engineer.
    """
    failure = await asyncio.to_thread(try_out, run, files, label=label)
    if failure is not None and failure.component in owned:
        raise TryOutError(failure.message)
