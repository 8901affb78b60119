"""Shared fixtures: the digits demo, prepared once per test session."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from fake_openai import FakeOpenAI

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory):
    """Built-in datasets are written into a fresh cache, not the user's ~/.cache/automodel."""
    os.environ["AUTOMODEL_CACHE"] = str(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="session")
def digits_workspace(tmp_path_factory: pytest.TempPathFactory):
    """The digits demo written in the Kaggle layout and prepared into a run directory."""
    from automodel.workspace import open_workspace

    root = tmp_path_factory.mktemp("digits")
    return open_workspace("demo", root / "run", device="cpu", root=root / "digits")


@pytest.fixture
def reference_copy(tmp_path: Path) -> Path:
    """A writable copy of the reference recipe."""
    from automodel.interfaces import REFERENCE_DIR

    dst = tmp_path / "components"
    dst.mkdir()
    for name in ("data.py", "model.py", "training.py"):
        shutil.copyfile(REFERENCE_DIR / name, dst / name)
    return dst


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


FAKE_SECRET = "sk-automodel-test-FAKE-1234567890abcdef"
"""An API key placed in the environment of :func:`tiny_run`; it must never reach the run directory."""


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory):
    """One real, small ``automodel run demo --json`` (two attempts, about 40 s on 2 cores), shared by the
    report, console and log tests. Its Analyst is an OpenAI-compatible backend (a scripted server on
    loopback) that rejects the key and echoes it in the error, as real providers do; the offline expert
    plays that turn instead. Returns the finished ``subprocess.CompletedProcess`` and its run directory."""
    import json
    import subprocess
    import sys

    from fake_openai import Reply, server_error

    base = tmp_path_factory.mktemp("tiny")
    out = base / "run"
    echo = json.dumps({"error": {"message": f"Incorrect API key provided: {FAKE_SECRET}.", "type": "invalid_request_error"}})
    with FakeOpenAI({"analyst": [Reply("status", echo, status=401), server_error()]}) as server:
        config = base / "backends.json"
        config.write_text(json.dumps({
            "roles": {"analyst": {"provider": "OpenAIChatCompletionClient", "config": {
                "model": "analyst", "base_url": server.base_url, "api_key_env": "OPENAI_API_KEY", "max_retries": 0,
                "model_info": {"vision": False, "function_calling": False, "json_output": False, "family": "unknown",
                               "structured_output": False}}}},
            "fallback_to_expert": True, "max_retries": 1, "backoff_s": 0.1, "request_timeout_s": 20}))
        cmd = [sys.executable, "-m", "automodel.cli", "run", "demo", "--out", str(out), "--iterations", "1",
               "--candidate-budget", "10", "--time-budget", "120", "--device", "cpu", "--threads", "1",
               "--config", str(config), "--json"]
        env = {**os.environ, "OPENAI_API_KEY": FAKE_SECRET, "AUTOMODEL_LOG_LEVEL": "INFO"}
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=400)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert server.answered("analyst"), "the scripted Analyst backend was never called"
    return done, out
