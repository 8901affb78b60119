"""run.log: structlog JSON with the run id on every event, secrets redacted everywhere."""

from __future__ import annotations

import json
import os
from pathlib import Path

import structlog

from automodel._logs import REDACTED, configure_logging, redact, run_id_for
from tests.conftest import FAKE_SECRET


def test_run_log_is_json_with_the_run_id_on_every_line(tiny_run):
    done, run = tiny_run
    lines = (run / "run.log").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert {r["run_id"] for r in records} == {run_id_for(run)}
    events = {r["event"] for r in records}
    assert {"run.start", "message", "candidate.epoch", "run.end", "data.prepare.done"} <= events
    assert all("timestamp" in r and "level" in r for r in records)


def test_a_key_in_the_environment_reaches_no_file_of_the_run(tiny_run):
    done, run = tiny_run
    leaks = [p for p in Path(run).rglob("*") if p.is_file() and FAKE_SECRET.encode() in p.read_bytes()]
    assert leaks == []
    assert FAKE_SECRET not in done.stdout and FAKE_SECRET not in done.stderr


def test_redaction_of_env_values_and_key_shapes(tmp_path, monkeypatch):
    monkeypatch.setenv("MY_SERVICE_TOKEN", "tok-0123456789")
    assert redact({"a": ["x tok-0123456789 y"], "b": 3}) == {"a": [f"x {REDACTED} y"], "b": 3}
    assert REDACTED in redact("Authorization: Bearer abcdefgh12345")
    assert redact("key sk-abcdefghijklmnop1234") == f"key {REDACTED}"
    try:
        run_id = configure_logging("CRITICAL", run_dir=tmp_path)
        structlog.get_logger("t").info("called", header=f"key={os.environ['MY_SERVICE_TOKEN']}")
        structlog.get_logger("t").debug("not kept")
    finally:
        structlog.reset_defaults()
    records = [json.loads(line) for line in (tmp_path / "run.log").read_text().splitlines()]
    assert records == [{**records[0], "run_id": run_id, "event": "called", "header": f"key={REDACTED}"}]
