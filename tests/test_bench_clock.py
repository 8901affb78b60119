"""The benchmark clock's process helpers: finding a harness by its job file, ending it, reading CPU time."""

from __future__ import annotations

import subprocess
import sys
import uuid

from benchmarks.clock import Clock, pids_running, tree_cpu_s
from benchmarks.search import stop_job


def test_pids_running_finds_and_stop_job_ends_the_process() -> None:
    token = f"/tmp/bench-test-{uuid.uuid4().hex}/job.json"
    proc = subprocess.Popen([sys.executable, "-c", "import sys, time; time.sleep(60)", token])
    try:
        # /proc shows the command line once exec has happened; poll until it does (no sleeps as sync).
        for _ in range(10000):
            if pids_running(token):
                break
        assert pids_running(token) == [proc.pid]
        stop_job(token)
        assert proc.wait(timeout=30) != 0
        assert pids_running(token) == []
    finally:
        proc.kill()
        proc.wait()


def test_tree_cpu_and_clock_readings() -> None:
    import os

    assert tree_cpu_s(os.getpid()) > 0.0
    clock = Clock(10.0)
    sum(i * i for i in range(200000))  # some CPU work
    clock.stop()
    first = (clock.wall_s, clock.cpu_s)
    clock.stop()  # later calls keep the first reading
    assert (clock.wall_s, clock.cpu_s) == first
    s = clock.summary()
    assert s["over_budget_s"] == 0.0 and s["idle_tail_s"] is not None and 0 < s["idle_tail_s"] <= 10.0
    assert clock.cpu_s is not None and clock.cpu_s >= 0.0
