"""A real local model behind some roles (opt-in: ``pytest -m local_llm``; see docs/local-llm.md).

Skipped unless ``AUTOMODEL_LOCAL_LLM_URL`` points at a running OpenAI-compatible server
(``http://127.0.0.1:8080/v1``). ``AUTOMODEL_LOCAL_LLM_ROLES`` chooses the roles it plays
(default ``analyst,summarizer``), ``AUTOMODEL_LOCAL_LLM_MODEL`` its name, and
``AUTOMODEL_LOCAL_LLM_MAX_TOKENS`` the reply cap (default 384). The run must complete, keep its
best model and record every failure; its yield goes to ``local_llm_yield.json`` in the run.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest
import yaml
from autogen_core.models import UserMessage

from automodel.config import load_backend_config, make_clients
from automodel.run import RunOptions, run_team_async

URL = os.environ.get("AUTOMODEL_LOCAL_LLM_URL", "")
MODEL = os.environ.get("AUTOMODEL_LOCAL_LLM_MODEL", "gemma-3-270m")
ROLES = [r for r in os.environ.get("AUTOMODEL_LOCAL_LLM_ROLES", "analyst,summarizer").split(",") if r]
MAX_TOKENS = int(os.environ.get("AUTOMODEL_LOCAL_LLM_MAX_TOKENS", "384"))

pytestmark = [
    pytest.mark.local_llm,
    pytest.mark.skipif(not URL, reason="set AUTOMODEL_LOCAL_LLM_URL to a running local OpenAI-compatible server"),
]


def _config(path: Path) -> Path:
    spec = {
        "provider": "OpenAIChatCompletionClient",
        "config": {
            "model": MODEL, "base_url": URL, "api_key_env": "LOCAL_LLM_KEY", "timeout": 240, "max_retries": 0,
            "max_tokens": MAX_TOKENS, "temperature": 0.2, "include_name_in_message": False,
            "model_info": {"vision": False, "function_calling": False, "json_output": False, "family": "unknown",
                           "structured_output": False},
        },
    }
    path.write_text(yaml.safe_dump({"roles": {r: spec for r in ROLES}, "fallback_to_expert": True, "max_retries": 1,
                                    "backoff_s": 1.0, "request_timeout_s": 300}))
    return path


def test_local_server_answers_through_the_openai_client(tmp_path):
    clients = make_clients(load_backend_config(_config(tmp_path / "local.yaml")))
    result = asyncio.run(clients[ROLES[0]].create([UserMessage(content="Say hello in one word.", source="user")]))
    assert isinstance(result.content, str) and result.usage.completion_tokens <= MAX_TOKENS


def test_team_run_with_a_local_model_completes_and_records_every_failure(tmp_path):
    out = tmp_path / "run"
    opts = RunOptions(data="demo", out=out, device="cpu", iterations=int(os.environ.get("AUTOMODEL_LOCAL_LLM_ITERS", "2")),
                      config=_config(tmp_path / "local.yaml"), time_budget_s=1800.0, candidate_budget_s=30.0,
                      max_epochs=4, description="8x8 handwritten digits 0-9; orientation carries the label")
    final = asyncio.run(run_team_async(opts))
    history = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    usage = json.loads((out / "usage.json").read_text())
    faults_path = out / "model_faults.jsonl"
    faults = [json.loads(line) for line in faults_path.read_text().splitlines()] if faults_path.is_file() else []
    assert final["best_val_accuracy"] is not None and (out / "best" / "checkpoint.pt").is_file()
    assert final["attempts"] == len(history) >= 1
    turns = {r: usage.get(r, {}).get("calls", 0) for r in ROLES}
    fallbacks = {r: usage.get(r, {}).get("fallbacks", 0) for r in ROLES}
    report = {
        "model": MODEL, "roles": ROLES, "max_tokens": MAX_TOKENS,
        "attempts": len(history), "valid_scores": sum(h["val_accuracy"] is not None for h in history),
        "iteration_yield": sum(h["val_accuracy"] is not None for h in history) / len(history),
        "model_calls": turns, "fallbacks": fallbacks,
        "faults": {r: usage.get(r, {}).get("faults", {}) for r in ROLES},
        "best_val_accuracy": final["best_val_accuracy"], "test_accuracy": final.get("test_accuracy"),
    }
    (out / "local_llm_yield.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))
    # Every unusable reply is on record with what was done about it.
    assert all(f["action"] for f in faults)
