"""The agent team: speaker policy, the offline loop, scripted LLM roles, config, dump/load, resume."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from autogen_agentchat.base import Team
from autogen_agentchat.messages import BaseChatMessage, StructuredMessage, TextMessage
from autogen_ext.models.replay import ReplayChatCompletionClient

from automodel.config import ConfigError, load_backend_config, make_clients
from automodel.experts import OfflineExpertClient, reference_source, set_knobs
from automodel.messages import (
    AnalystFeedback,
    ComponentCode,
    ExecutionError,
    HistoryEntry,
    RunReport,
    TechnicalDesign,
)
from automodel.run import RunOptions, prepare_run, run_team_async
from automodel.team import build_team, select_next_speaker, stop_reason_of

FAST = {"candidate_budget_s": 30.0, "max_epochs": 4, "time_budget_s": 900.0}


def _msg(content) -> StructuredMessage:
    return StructuredMessage[type(content)](content=content, source="x")


def test_speaker_policy_follows_message_types():
    code = "x"
    assert select_next_speaker([TextMessage(content="Build it", source="user")]) == "architect"
    assert select_next_speaker([TextMessage(content="Resume: go on", source="user")]) == "analyst"
    design = TechnicalDesign(summary="s", components={"data": code, "model": code, "training": code})
    assert select_next_speaker([_msg(design)]) == "data_engineer"
    order = {"data": "model_engineer", "model": "training_engineer", "training": "executor"}
    for component, nxt in order.items():
        assert select_next_speaker([_msg(ComponentCode(component=component, code=code, change="c"))]) == nxt
    assert select_next_speaker([_msg(ComponentCode(component="data", code=code, change="c", phase="revision"))]) == "executor"
    assert select_next_speaker([_msg(ComponentCode(component="data", code=code, change="c", phase="skip"))]) == "analyst"
    err = ExecutionError(iteration=2, component="model", status="crashed", error_type="RuntimeError", message="m")
    assert select_next_speaker([_msg(err)]) == "model_engineer"
    harness_err = err.model_copy(update={"component": "harness"})
    assert select_next_speaker([_msg(harness_err)]) == "training_engineer"
    assert select_next_speaker([_msg(RunReport(iteration=1, status="improved", target="architect", change="c"))]) == "summarizer"
    assert select_next_speaker([_msg(HistoryEntry(iteration=1, target="a", change="c", status="s", summary="s"))]) == "analyst"
    fb = AnalystFeedback(target="data_engineer", diagnosis="d", change="c", expected_effect="e")
    assert select_next_speaker([_msg(fb)]) == "data_engineer"


@pytest.fixture
def demo_opts(tmp_path: Path) -> RunOptions:
    return RunOptions(data="demo", out=tmp_path / "run", device="cpu", iterations=1, **FAST)


@pytest.mark.slow
def test_offline_loop_on_digits_improves_and_writes_the_run_directory(demo_opts):
    final = asyncio.run(run_team_async(demo_opts))
    out = Path(demo_opts.out)
    history = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    assert [h["iteration"] for h in history] == [1, 2]
    assert history[0]["target"] == "architect" and history[0]["status"] == "improved"
    assert history[1]["target"].endswith("_engineer")
    assert history[1]["status"] in {"improved", "discarded", "crashed", "timeout", "invalid"}
    assert final["test_accuracy"] > 0.5  # chance is 0.1
    assert final["first_val_accuracy"] == history[0]["val_accuracy"]
    for name in ("run.json", "final.json", "report.md", "submission.csv", "team_state.json", "summaries.jsonl"):
        assert (out / name).is_file(), name
    for name in ("data.py", "model.py", "training.py", "log.txt", "metrics.json"):
        assert (out / "iterations" / "001" / name).is_file(), name
    assert (out / "best" / "checkpoint.pt").is_file()
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "done" and run["backends"]["architect"] == "offline expert"
    assert "offline expert" in (out / "report.md").read_text()
    # Why the team stopped reaches final.json (seen: null there while run.json had "exhausted").
    assert run["stop_kind"] and final["budget_use"]["stop_kind"] == run["stop_kind"]
    # The clock closes after the test split is scored: the idle tail is what the user's clock shows.
    use = final["budget_use"]
    assert use["finalize_s"] is not None and 0 < use["finalize_s"] <= final["elapsed_s"] == use["elapsed_s"]
    assert use["idle_tail_s"] == round(max(0.0, use["time_budget_s"] - use["elapsed_s"]), 1)


def _design_reply() -> str:
    files = {}
    for c, knobs in (("data", {"BATCH_SIZE": 64}), ("model", {"ARCH": "small_cnn", "WIDTH": 16}), ("training", {"EPOCHS": 2})):
        files[c], _ = set_knobs(reference_source(c), knobs)
    head = json.dumps({"summary": "scripted small CNN", "rationale": ["fast"], "decisions": {"backbone": "small_cnn"}})
    return f"```json\n{head}\n```\n" + "\n".join(f"```python\n# {c}.py\n{code}```" for c, code in files.items())


def _code_reply(component: str, **knobs) -> str:
    code, _ = set_knobs(reference_source(component), knobs)
    return f"```python\n{code}```\nCHANGE: set {knobs}"


@pytest.mark.slow
def test_scripted_llm_roles_follow_the_speaker_order_and_survive_bad_replies(tmp_path):
    store = prepare_run(RunOptions(data="demo", out=tmp_path / "run", device="cpu", iterations=2, **FAST))
    broken_model = _code_reply("model", ARCH="small_cnn", WIDTH=16).replace(
        "        return self.head(self.features(x))", "        return self.head(self.features(x)[:, :5])")
    clients = {
        "architect": ReplayChatCompletionClient(["Sure! I would use a CNN.", _design_reply()]),  # malformed, then good
        "data_engineer": ReplayChatCompletionClient([_code_reply("data", BATCH_SIZE=64)]),
        "model_engineer": ReplayChatCompletionClient([
            _code_reply("model", ARCH="small_cnn", WIDTH=16),
            broken_model,  # revision with a shape error: crashes in the smoke test
            _code_reply("model", ARCH="small_cnn", WIDTH=24),  # the repair
        ]),
        "training_engineer": ReplayChatCompletionClient([_code_reply("training", EPOCHS=2)]),
        "analyst": ReplayChatCompletionClient([
            "{not json",
            '```json\n{"target": "model_engineer", "diagnosis": "capacity", "change": "wider", '
            '"expected_effect": "better", "knobs": {"WIDTH": 24}}\n```',
        ]),
    }
    team = build_team(store.root, clients, fallback_to_expert=False,
                      try_out=False)  # the shape error must reach the Executor's repair loop
    result = asyncio.run(team.run(task="Build the best classifier."))
    speakers = [m.source for m in result.messages if isinstance(m, BaseChatMessage)]
    assert speakers == [
        "user", "architect", "data_engineer", "model_engineer", "training_engineer", "executor", "summarizer",
        "analyst", "model_engineer", "executor", "model_engineer", "executor", "summarizer",
    ]
    assert stop_reason_of(result.stop_reason).kind == "attempts"
    error = next(m.content for m in result.messages if isinstance(m, StructuredMessage) and isinstance(m.content, ExecutionError))
    assert error.component == "model" and any("[:, :5]" in line for line in error.lines)
    history = [json.loads(line) for line in (store.root / "history.jsonl").read_text().splitlines()]
    assert [h["status"] for h in history][1] == "crashed"
    assert history[2]["val_accuracy"] is not None  # the repair produced a valid score
    usage = json.loads((store.root / "usage.json").read_text())
    assert usage["architect"]["calls"] == 2 and usage["analyst"]["calls"] == 2


def test_backend_config_per_role_and_secrets(tmp_path, monkeypatch):
    cfg = tmp_path / "backends.yaml"
    cfg.write_text(
        "roles:\n"
        "  architect:\n"
        "    provider: OpenAIChatCompletionClient\n"
        "    config: {model: local-model, base_url: 'http://127.0.0.1:9/v1', api_key_env: MY_KEY,\n"
        "             model_info: {vision: false, function_calling: false, json_output: false, family: unknown,"
        " structured_output: false}}\n"
        "  analyst: {provider: automodel.experts.OfflineExpertClient}\n"
    )
    monkeypatch.setenv("MY_KEY", "sk-secret-value-123")
    config = load_backend_config(cfg)
    clients = make_clients(config)
    assert type(clients["architect"]).__name__ == "OpenAIChatCompletionClient"
    assert isinstance(clients["analyst"], OfflineExpertClient)
    assert "executor" not in clients
    assert config.describe()["data_engineer"] == "offline expert"
    assert "sk-secret" not in json.dumps(config.model_dump())
    bad = tmp_path / "bad.yaml"
    bad.write_text("roles:\n  architect: {provider: OpenAIChatCompletionClient, config: {model: m, api_key: sk-x}}\n")
    with pytest.raises(ConfigError, match="api_key_env"):
        load_backend_config(bad)
    bad.write_text("roles:\n  boss: {provider: OpenAIChatCompletionClient}\n")
    with pytest.raises(ConfigError, match="valid roles"):
        load_backend_config(bad)


def test_team_dump_and_load_round_trip(tmp_path):
    store = prepare_run(RunOptions(data="demo", out=tmp_path / "run", device="cpu", iterations=1, **FAST))
    team = build_team(store.root, {"analyst": ReplayChatCompletionClient(["{}"])})
    dumped = team.dump_component()
    loaded = Team.load_component(json.loads(dumped.model_dump_json()))
    assert type(loaded).__name__ == "AutoModelTeam"
    assert loaded.dump_component().model_dump() == dumped.model_dump()
    names = [p["config"]["name"] for p in dumped.config["participants"]]
    assert names == ["architect", "data_engineer", "model_engineer", "training_engineer", "executor", "summarizer", "analyst"]
    # The speaker policy survives the round trip (AutoGen does not serialize selector functions).
    assert loaded._selector_func is select_next_speaker


def _wait_for(predicate, timeout: float) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


@pytest.mark.slow
def test_resume_after_kill_during_training_loses_nothing(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "automodel.cli", "run", "demo", "--out", str(out), "--iterations", "2",
           "--candidate-budget", "15", "--device", "cpu"]
    env = {**os.environ, "AUTOMODEL_LOG_LEVEL": "WARNING"}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True)
    history = out / "history.jsonl"
    try:
        assert _wait_for(lambda: history.is_file() and len(history.read_text().splitlines()) >= 1, 120)
        # Attempt 2 is training now: kill -9 the whole run.
        assert _wait_for(lambda: (out / "iterations" / "002" / "log.txt").is_file(), 60)
        time.sleep(2)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    first = history.read_text().splitlines()
    assert len(first) == 1
    # The orphaned candidate notices and stops: nothing keeps running.
    assert _wait_for(lambda: "harness" not in subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
                     or str(out) not in subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout, 30)
    done = subprocess.run([*cmd, "--resume"], capture_output=True, text=True, env=env, timeout=400)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    lines = history.read_text().splitlines()
    assert lines[0] == first[0]  # nothing lost or rewritten
    assert [json.loads(line)["iteration"] for line in lines] == [1, 2, 3]
    final = json.loads((out / "final.json").read_text())
    assert final["attempts"] == 3 and final["best_val_accuracy"] is not None and "test_accuracy" in final
    assert json.loads((out / "run.json").read_text())["sessions"] == 2


@pytest.mark.slow
def test_embedded_team_example_runs_as_a_nested_team(tmp_path):
    out = tmp_path / "embedded"
    done = subprocess.run(
        [sys.executable, "examples/embed_in_autogen_app.py", "--out", str(out), "--time-budget", "300",
         "--candidate-budget", "30"],
        capture_output=True, text=True, timeout=600, cwd=Path(__file__).resolve().parents[1],
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "---------- TextMessage (reviewer) ----------" in done.stdout
    assert "test accuracy" in done.stdout
    assert len((out / "history.jsonl").read_text().splitlines()) == 2
