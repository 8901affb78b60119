"""LLM roles through the real wire protocol: AutoGen's OpenAI client against a scripted loopback server.

Also: reply extraction, prompts with every placeholder filled, the example configs.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import time
from pathlib import Path

import pytest
import yaml
from autogen_agentchat.messages import BaseChatMessage, StructuredMessage
from fake_openai import FakeOpenAI, empty, hang, malformed_json, rate_limited, server_error, text

from automodel.config import ConfigError, load_backend_config, make_clients
from automodel.experts import EXPERT_NAME, OfflineExpertClient, reference_source, set_knobs
from automodel.interfaces import COMPONENTS
from automodel.messages import AnalystFeedback, ExecutionError, HistoryEntry, TechnicalDesign
from automodel.prompts import prompt_roles, render_prompt, unfilled_placeholders
from automodel.roles import AnalystAgent, ReplyError
from automodel.roles._parse import component_code, extract_json, split_components, undefined_names
from automodel.run import RunOptions, prepare_run
from automodel.team import build_team, stop_reason_of

ROOT = Path(__file__).resolve().parents[1]
FAST = {"candidate_budget_s": 15.0, "max_epochs": 1, "time_budget_s": 900.0}
MODEL_INFO = {"vision": False, "function_calling": False, "json_output": False, "family": "unknown",
              "structured_output": False}
FEEDBACK = ('```json\n{"target": "model_engineer", "diagnosis": "capacity", "change": "wider", '
            '"expected_effect": "better", "knobs": {"WIDTH": 24}}\n```')


def _write_config(path: Path, base_url: str, roles: list[str], **extra) -> Path:
    """A backend config: each role a model of the fake server, named after the role."""
    spec = {
        role: {
            "provider": "OpenAIChatCompletionClient",
            "config": {"model": role, "base_url": base_url, "api_key_env": "FAKE_OPENAI_KEY", "timeout": 3.0,
                       "max_retries": 0, "max_tokens": 2048, "model_info": MODEL_INFO},
            "price_per_1k_prompt": 0.5,
            "price_per_1k_completion": 1.5,
        }
        for role in roles
    }
    path.write_text(yaml.safe_dump({"roles": spec, "max_retries": 2, "backoff_s": 0.05, **extra}))
    return path


def _code_reply(component: str, prose: bool = False, **knobs) -> str:
    code, _ = set_knobs(reference_source(component), knobs)
    if prose:  # chatty models: words before and after, a tilde fence never closed
        return f"Here is the updated file.\n~~~python\n{code}\nCHANGE: set {knobs}"
    return f"```python\n{code}```\nCHANGE: set {knobs}"


def _design_reply() -> str:
    files = {}
    for c, knobs in (("data", {"BATCH_SIZE": 64}), ("model", {"ARCH": "small_cnn", "WIDTH": 16}), ("training", {"EPOCHS": 1})):
        files[c], _ = set_knobs(reference_source(c), knobs)
    head = json.dumps({"summary": "wire small CNN", "rationale": ["fast"], "decisions": {"backbone": "small_cnn"}})
    return (f"Sure, here is the design.\n```json\n{head}\n```\n"
            + "\n".join(f"**{c}.py**\n```python\n{code}```" for c, code in files.items()))


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def test_team_over_http_completes_repairs_retries_falls_back_and_records(tmp_path, monkeypatch):
    monkeypatch.delenv("FAKE_OPENAI_KEY", raising=False)
    broken_model = _code_reply("model", ARCH="small_cnn", WIDTH=16).replace(
        "        return self.head(self.features(x))", "        return self.head(self.features(x)[:, :5])")
    script = {
        "architect": [malformed_json(), text(_design_reply())],
        "data_engineer": [text(_code_reply("data", prose=True, BATCH_SIZE=64))],
        "model_engineer": [
            text(broken_model),  # crashes with a shape error in the smoke test
            text(_code_reply("model", ARCH="small_cnn", WIDTH=24)),  # the repair
        ],
        "training_engineer": [rate_limited(1.0), text(_code_reply("training", EPOCHS=1))],
        "summarizer": [hang(6.0), malformed_json(), server_error(503)],  # then the offline expert
    }
    with FakeOpenAI(script) as server:
        config = _write_config(tmp_path / "backends.yaml", server.base_url, list(script))
        store = prepare_run(RunOptions(data="demo", out=tmp_path / "run", device="cpu", iterations=1, config=config,
                                       description="handwritten digits 0-9; orientation matters", **FAST))
        backends = load_backend_config(config)
        # try_out=False: the shape error must reach the Executor, to test its repair loop
        team = build_team(store.root, make_clients(backends), fallback_to_expert=True, max_retries=backends.max_retries,
                          try_out=False)
        result = asyncio.run(team.run(task="Build the best classifier."))
        answered = {m: server.answered(m) for m in script}
        leftover = server.remaining()
        requests = list(server.requests)

    # The run completed, in the speaker order of a repair loop.
    speakers = [m.source for m in result.messages if isinstance(m, BaseChatMessage)]
    assert speakers == ["user", "architect", "data_engineer", "model_engineer", "training_engineer", "executor",
                        "model_engineer", "executor", "summarizer"], speakers
    assert stop_reason_of(result.stop_reason).kind == "attempts"
    assert leftover == {} and "exhausted" not in sum(answered.values(), [])
    assert answered["summarizer"] == ["hang", "malformed", "503"]

    contents = [m.content for m in result.messages if isinstance(m, StructuredMessage)]
    design = next(c for c in contents if isinstance(c, TechnicalDesign))
    assert design.author == "architect" and design.summary == "wire small CNN"  # the model's design, not a fallback
    error = next(c for c in contents if isinstance(c, ExecutionError))
    assert error.component == "model" and any("[:, :5]" in line for line in error.lines)
    entry = next(c for c in contents if isinstance(c, HistoryEntry))
    assert entry.summary  # written by the offline expert after the summarizer's backend failed

    # The good code was used: the data engineer's file (prose, an unclosed fence) ran in both attempts.
    for attempt in ("001", "002"):
        assert "BATCH_SIZE = 64" in (store.root / "iterations" / attempt / "data.py").read_text()
    assert "WIDTH = 24" in (store.root / "best" / "model.py").read_text()
    history = _lines(store.root / "history.jsonl")
    assert [h["status"] for h in history] == ["crashed", "improved"]  # the repair produced the best
    assert store.best_val_accuracy() == history[1]["val_accuracy"] and (store.best_dir / "checkpoint.pt").is_file()

    # The description and the environment reach the Architect's prompt, every placeholder filled.
    architect_system = next(r for r in requests if r.model == "architect").messages[0]["content"]
    assert "orientation matters" in architect_system and "candidate_budget_s" in architect_system
    assert not unfilled_placeholders(architect_system)
    repair_request = [r for r in requests if r.model == "model_engineer"][1].messages[-1]["content"]
    assert '"phase": "repair"' in repair_request and "[:, :5]" in repair_request  # the traceback goes back

    # Every fault recorded, with its action; Retry-After honoured; backoff short as configured.
    faults = _lines(store.root / "model_faults.jsonl")
    kinds = [(f["role"], f["kind"]) for f in faults]
    assert ("architect", "bad_response") in kinds and ("training_engineer", "rate_limit") in kinds
    assert [k for r, k in kinds if r == "summarizer"] == ["timeout", "bad_response", "server_error", "fallback"]
    assert next(f for f in faults if f["kind"] == "rate_limit")["action"] == "retry in 1.0s"
    assert EXPERT_NAME in next(f for f in faults if f["kind"] == "fallback")["action"]
    assert not [k for r, k in kinds if r in ("data_engineer", "model_engineer")]

    usage = json.loads((store.root / "usage.json").read_text())
    assert usage["architect"]["calls"] == 1 and usage["architect"]["faults"] == {"bad_response": 1}
    assert usage["architect"]["cost_usd"] > 0 and usage["model_engineer"]["calls"] == 2
    assert usage["training_engineer"]["faults"] == {"rate_limit": 1}
    assert usage["summarizer"]["fallbacks"] == 1 and usage["summarizer"].get("calls", 0) == 0
    assert usage["summarizer"]["faults"] == {"timeout": 1, "bad_response": 1, "server_error": 1}


def test_empty_and_refused_replies_are_retried_with_the_reason_fed_back(small_run):
    script = [empty(), text("I'm sorry, but I can't help with that."), text("<<SYS>>\nYou are the"), text(FEEDBACK)]
    with FakeOpenAI({"analyst": script}) as server:
        store, backends = small_run(server.base_url)
        agent = AnalystAgent("analyst", make_clients(backends)["analyst"], run_dir=store.root, max_retries=3,
                             backoff_s=0.01)
        result = asyncio.run(agent.run(task="analyse"))
        requests = list(server.requests)
    assert result.messages[-1].content.knobs == {"WIDTH": 24}
    assert "empty" in requests[1].messages[-1]["content"]
    assert "declined" in requests[2].messages[-1]["content"]
    assert requests[2].messages[-2] == {"role": "assistant", "content": "I'm sorry, but I can't help with that."}
    assert "echoes prompt markup (<<SYS>>)" in requests[3].messages[-1]["content"]
    assert "orientation" in requests[0].messages[0]["content"]  # the Analyst's prompt has the domain cautions
    usage = json.loads((store.root / "usage.json").read_text())["analyst"]
    assert usage["calls"] == 4 and usage["faults"] == {"unusable_reply": 3} and "fallbacks" not in usage


@pytest.fixture
def small_run(tmp_path):
    def make(script_url: str, **budget):
        config = _write_config(tmp_path / "backends.yaml", script_url, ["analyst"])
        store = prepare_run(RunOptions(data="demo", out=tmp_path / "run", device="cpu", iterations=1, config=config,
                                       **FAST))
        if budget:
            from automodel.runtime import forget_run

            store.update_run(settings={**store.read_run()["settings"], **budget})
            forget_run(store.root)
        return store, load_backend_config(config)

    return make


def test_cost_cap_stops_paid_calls_and_the_expert_plays_on(small_run):
    with FakeOpenAI({"analyst": [text(FEEDBACK), text(FEEDBACK)]}) as server:
        store, backends = small_run(server.base_url, max_cost_usd=1e-6)
        agent = AnalystAgent("analyst", make_clients(backends)["analyst"], run_dir=store.root, max_retries=0)
        first = asyncio.run(agent.run(task="analyse"))
        second = asyncio.run(agent.run(task="analyse"))
        assert len(server.requests) == 1  # the cap was spent by the first call: no second request
    assert first.messages[-1].content.knobs == {"WIDTH": 24}
    assert isinstance(second.messages[-1].content, AnalystFeedback)  # the offline expert's analysis
    usage = json.loads((store.root / "usage.json").read_text())["analyst"]
    assert usage["calls"] == 1 and usage["cost_usd"] > 0 and usage["fallbacks"] == 1
    faults = _lines(store.root / "model_faults.jsonl")
    assert [f["kind"] for f in faults] == ["cost_cap", "fallback"]


def test_without_fallback_a_dead_backend_gives_the_safe_default(small_run):
    with FakeOpenAI({"analyst": [server_error(), hang(5.0)]}) as server:
        store, backends = small_run(server.base_url)
        agent = AnalystAgent("analyst", make_clients(backends)["analyst"], run_dir=store.root, max_retries=1,
                             fallback_to_expert=False)
        started = time.time()
        result = asyncio.run(agent.run(task="analyse"))
        assert time.time() - started < 15
    assert result.messages[-1].content.diagnosis == "no usable analysis from the backend"
    assert [f["kind"] for f in _lines(store.root / "model_faults.jsonl")] == ["server_error", "timeout", "default"]


# --- extraction -------------------------------------------------------------------------------


def test_extracts_code_from_fences_unclosed_fences_prose_and_headers():
    code, _ = set_knobs(reference_source("data"), {"BATCH_SIZE": 32})
    variants = [
        f"```python\n{code}```",
        f"```Python title=data.py\n{code}```\nCHANGE: x",
        f"Sure! Here it is:\n\n```\n{code}\n```\nHope this helps.",
        f"~~~py\n{code}~~~",
        f"Here:\n```python\n{code}",  # never closed
        f"  ```python\r\n{code.replace(chr(10), chr(13) + chr(10))}  ```\r\n",  # indented fence, CRLF
        f"The new file follows.\n\n{code}\nCHANGE: smaller batches",  # no fence at all
        f"```python\ndef build_data(spec):\n    return broken(\n```\nFixed version:\n```python\n{code}```",
    ]
    for reply in variants:
        assert "BATCH_SIZE = 32" in component_code(reply, "data"), reply[:60]
    with pytest.raises(ReplyError, match="no ```python block"):
        component_code("I would use a CNN.", "data")
    undefined = code.replace("def build_data(", "def helper():\n    return missing_name\n\n\ndef build_data(")
    with pytest.raises(ReplyError, match="missing_name"):
        component_code(f"```python\n{undefined}```", "data")


def test_split_components_by_first_line_heading_or_one_block():
    files = {c: reference_source(c) for c in COMPONENTS}
    one_block = "```python\n" + "\n".join(f"# {c}.py\n{code}" for c, code in files.items()) + "```"
    headed = "\n".join(f"### {c}.py\n```python\n{code}```" for c, code in files.items())
    for reply in (one_block, headed):
        out = split_components(reply)
        assert set(out) == set(COMPONENTS)
        assert "def build_model(" in out["model"] and "def build_data(" not in out["model"]
    with pytest.raises(ReplyError, match="training.py"):
        split_components("\n".join(f"```python\n# {c}.py\n{files[c]}```" for c in ("data", "model")))


def test_extract_json_tolerates_prose_trailing_commas_python_literals_and_braces_in_strings():
    assert extract_json('Analysis:\n```json\n{"a": 1, "b": [1, 2,],}\n```') == {"a": 1, "b": [1, 2]}
    assert extract_json("I think {'target': 'x', 'ok': True} is best") == {"target": "x", "ok": True}
    assert extract_json('{"change": "use {braces} in text", "n": null}') == {"change": "use {braces} in text", "n": None}
    assert extract_json('{not json} then {"k": 2}') == {"k": 2}
    with pytest.raises(ReplyError, match="cut off"):
        extract_json('```json\n{"target": "model_engineer", "diagnosis": "')
    with pytest.raises(ReplyError, match="no JSON object"):
        extract_json("no braces here")


def test_undefined_names_finds_what_crashes_and_ignores_what_is_bound():
    src = ("import torch\nfrom x import y as z\nK = 1\n\ndef f(a, *args, **kw):\n    b = [i for i in range(K)]\n"
           "    def g():\n        return a + b\n    return torch.zeros(1) + z + nn.Linear + g()\n\nclass C:\n"
           "    W = 2\n    def m(self):\n        return self.W + undefined_thing\n")
    assert undefined_names(src) == [("nn", 9), ("undefined_thing", 14)]
    assert undefined_names("from m import *\nprint(anything)\n") == []
    for c in COMPONENTS:
        assert undefined_names(reference_source(c)) == [], c


# --- prompts and configs ------------------------------------------------------------------------


ENGINEER_COMPONENT = {"data_engineer": "data", "model_engineer": "model", "training_engineer": "training"}


@pytest.mark.parametrize("role", ["architect", "data_engineer", "model_engineer", "training_engineer", "analyst",
                                  "summarizer"])
def test_every_prompt_renders_with_no_placeholder_left(role):
    assert role in prompt_roles()
    values = {"description": "chest X-rays, two classes", "environment": '{"device": "cpu"}'}
    if role in ENGINEER_COMPONENT:
        values["component"] = ENGINEER_COMPONENT[role]
    prompt = render_prompt(role, **values)
    assert unfilled_placeholders(prompt) == []
    assert "chest X-rays" in prompt and '"device": "cpu"' in prompt  # description and environment reach every role
    if role in ENGINEER_COMPONENT or role == "architect":
        assert "INTERFACE_VERSION" in prompt  # the generated contract
    if role in ("architect", "analyst", "data_engineer"):
        assert "flip" in prompt and "colour" in prompt  # the domain cautions


@pytest.mark.parametrize("path", sorted((ROOT / "examples" / "configs").glob("*.yaml")), ids=lambda p: p.stem)
def test_example_configs_load(path, monkeypatch):
    for key in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "LOCAL_LLM_KEY"):
        monkeypatch.setenv(key, "test-key")
    config = load_backend_config(path)
    assert config.describe()
    providers = " ".join(str(spec.get("provider")) for spec in [config.default, *config.roles.values()] if spec)
    missing = [pkg for pkg in ("anthropic", "ollama") if pkg in providers.lower() and importlib.util.find_spec(pkg) is None]
    if missing:  # the config is right; the error says which extra to install
        with pytest.raises(ConfigError, match=rf"pip install 'autogen-ext\[{missing[0]}\]'"):
            make_clients(config)
        return
    clients = make_clients(config)
    if path.stem == "offline":
        assert all(isinstance(c, OfflineExpertClient) for c in clients.values())


def test_config_errors_teach(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("roles:\n  analyst: {provider: OpenAIChatCompletionClient, model: gpt-4o}\n")
    with pytest.raises(ConfigError, match="go under 'config'"):
        load_backend_config(bad)
    bad.write_text("roles:\n  analyst: {provider: OpenAIChatCompletionClient, price_per_1k_prompt: cheap}\n")
    with pytest.raises(ConfigError, match="must be a number"):
        load_backend_config(bad)
    bad.write_text("max_retry: 3\n")
    with pytest.raises(ConfigError, match="valid keys"):
        load_backend_config(bad)
