"""The real orchestrator (``automodel run demo`` as a subprocess) under faults, then ``--resume``.

One chained scenario of ``benchmarks/faults.py`` (the full version runs 20 kill moments):
kill -9 while the first history line is half written (it follows the promotion of best/,
so the resume must also repair that promotion), then the dataset's files vanish, turn
corrupt and appear, then the disk fills up (a real tmpfs as root; otherwise an injected
ENOSPC in the orchestrator's writes): one clear line, no traceback, no repair of the candidate
that hit it; then resume sessions until the run finishes.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from benchmarks.faults import Scenario, run_scenario

pytestmark = pytest.mark.faults

CI_RUN = [
    "--iterations",
    "1",
    "--time-budget",
    "60",
    "--candidate-budget",
    "5",
    "--device",
    "cpu",
    "--threads",
    "1",
]
"""Two attempts at most: one per faulted session."""


def test_torn_history_damaged_data_and_full_disk_then_resume(tmp_path: Path) -> None:
    faults = [("history", {"nth": 1}), ("data", {}), ("disk_full", {})]
    scenario = run_scenario(Scenario("ci", faults, disk="64m", run_args=CI_RUN), tmp_path, random.Random(0))
    sessions = {s.fault: s for s in scenario.sessions}
    assert sessions["history"].fired, sessions["history"].output[-2000:]
    assert sessions["data"].fired and "20 train files deleted" in sessions["data"].output
    disk = next(s for s in scenario.sessions if s.fault.startswith("disk_full"))
    assert disk.fired, disk.output[-2000:]
    assert disk.returncode == 2 and "no space left on the device" in disk.output.lower(), disk.output[-2000:]
    assert "--resume" in disk.output.strip().splitlines()[-1]
    assert "Traceback" not in disk.output, disk.output[-3000:]  # one clear line; AutoGen's report went to run.log
    after_data = scenario.sessions[2].output
    assert "changed since it was prepared" in after_data, after_data[-2000:]
    check = scenario.check
    assert check is not None and check.problems == []
    assert check.finished and check.recorded_right and check.lost == 0
    # Every run directory made its two attempts. A candidate that failed because the disk was full is not an
    # attempt: it is neither recorded nor sent to an engineer for repair (it runs again after --resume).
    assert scenario.segment_checks and all(c.attempts >= 2 for c in scenario.segment_checks), scenario.segment_checks
    assert all(c.disk_full_attempts == 0 for c in scenario.segment_checks)
