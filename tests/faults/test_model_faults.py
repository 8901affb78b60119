"""Faults of the LLM backend, through AutoGen's real OpenAI client against the loopback fake server.

Each case scripts one fault for the Training Engineer's revision (a timeout, a 429 with and
without ``Retry-After``, three 5xx in a row, an empty reply, prose without code, code for the
wrong component, absurd knob values), then a good reply. The role must retry with the reason
fed back (or fall back to the offline expert), log each fault with what it did, and produce
the change that was asked, with no attempt run. Knob ranges are defined once
(``automodel.interfaces.KNOB_RANGES``): the prompts show them and the validator refuses a file
outside them. ``benchmarks/faults.py --suite model`` runs the same faults through whole runs.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from autogen_agentchat.messages import StructuredMessage
from fake_openai import FakeOpenAI, Reply, empty, hang, rate_limited, server_error, text

from automodel.config import load_backend_config, make_clients
from automodel.experts import EXPERT_NAME, get_knobs, reference_source, set_knobs
from automodel.interfaces import KNOB_RANGES, REFERENCE_DIR, knob_problems, validate_component
from automodel.messages import AnalystFeedback, ComponentCode
from automodel.prompts import knobs_text
from automodel.roles import AnalystAgent, TrainingEngineerAgent
from automodel.run import RunOptions, prepare_run
from automodel.store import RunStore

pytestmark = pytest.mark.faults

MODEL_INFO = {"vision": False, "function_calling": False, "json_output": False, "family": "unknown",
              "structured_output": False}
ASKED = AnalystFeedback(target="training_engineer", diagnosis="noisy curve", change="lower the learning rate",
                        expected_effect="steadier training", knobs={"LR": 0.002})
ABSURD = {"LR": 50.0, "EPOCHS": 100000}


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def _code(component: str, **knobs: object) -> str:
    return set_knobs(reference_source(component), knobs)[0]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> RunStore:
    """One prepared demo run for the module (no attempt is ever run in it)."""
    root = tmp_path_factory.mktemp("model-faults")
    return prepare_run(RunOptions(data="demo", out=root / "run", device="cpu", iterations=1, candidate_budget_s=15.0,
                                  max_epochs=1, time_budget_s=900.0))


@pytest.fixture
def store(prepared: RunStore) -> Iterator[RunStore]:
    """The prepared run with no fault or usage records from an earlier test."""
    for name in ("model_faults.jsonl", "usage.json"):
        (prepared.root / name).unlink(missing_ok=True)
    yield prepared


def _clients(tmp_path: Path, base_url: str, role: str, timeout_s: float = 3.0) -> dict:
    spec = {role: {"provider": "OpenAIChatCompletionClient",
                   "config": {"model": role, "base_url": base_url, "api_key_env": "FAKE_OPENAI_KEY",
                              "timeout": timeout_s, "max_retries": 0, "model_info": MODEL_INFO}}}
    config = tmp_path / "backends.yaml"
    config.write_text(yaml.safe_dump({"roles": spec}))
    return make_clients(load_backend_config(config))


PROSE = "I would lower the learning rate a little and keep everything else as it is; that should help."
CASES: dict[str, tuple[list[Reply], list[str], str]] = {
    # name: (the fault replies, the fault kinds logged, what the retry request says (fed back))
    "timeout": ([hang(2.5)], ["timeout"], ""),
    "429 with Retry-After": ([rate_limited(0.3)], ["rate_limit"], ""),
    "429 without Retry-After": ([rate_limited(None)], ["rate_limit"], ""),
    "empty reply": ([empty()], ["unusable_reply"], "the reply was empty"),
    "prose only": ([text(PROSE)], ["unusable_reply"], "no ```python block found"),
    "wrong component": ([text(f"```python\n{reference_source('data')}```\nCHANGE: lower LR")], ["unusable_reply"],
                        "must define a top-level function `build_training`"),
    "absurd knobs": ([text(f"```python\n{_code('training', **ABSURD)}```\nCHANGE: LR 50")], ["unusable_reply"],
                     "LR = 50.0 is outside its allowed range (float 1e-07..2, or 0)"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_model_fault_is_retried_with_the_reason_and_the_asked_change_is_made(store, tmp_path, monkeypatch, case):
    monkeypatch.delenv("FAKE_OPENAI_KEY", raising=False)
    faults, kinds, fed_back = CASES[case]
    good = text(f"```python\n{_code('training', LR=0.002)}```\nCHANGE: LR 0.002")
    with FakeOpenAI({"training_engineer": [*faults, good]}) as server:
        clients = _clients(tmp_path, server.base_url, "training_engineer", timeout_s=1.0)
        agent = TrainingEngineerAgent("training_engineer", clients["training_engineer"], run_dir=store.root,
                                      max_retries=2, backoff_s=0.05)
        result = asyncio.run(agent.run(task=StructuredMessage[AnalystFeedback](content=ASKED, source="analyst")))
        requests = list(server.requests)
        answered = server.answered("training_engineer")
    code = result.messages[-1].content
    assert isinstance(code, ComponentCode) and code.phase == "revision" and code.author == "training_engineer"
    assert get_knobs(code.code)["LR"] == 0.002 and code.knobs == {"LR": 0.002}  # what the file holds
    assert len(answered) == 2 and answered[-1] == "text"
    logged = _lines(store.root / "model_faults.jsonl")
    assert [f["kind"] for f in logged] == kinds and all(f["action"].startswith("retry in") for f in logged)
    if case == "429 with Retry-After":
        assert logged[0]["action"] == "retry in 0.3s"  # the server's wait, not the backoff
    retry = requests[1].messages[-1]["content"]
    if fed_back:
        assert "could not be used" in retry and fed_back in retry, retry
    else:  # a transport fault: the same request again
        assert retry == requests[0].messages[-1]["content"]
    assert not _lines(store.root / "history.jsonl")  # nothing ran: no attempt spent on the fault


def test_5xx_past_the_retries_falls_back_to_the_offline_expert(store, tmp_path, monkeypatch):
    monkeypatch.delenv("FAKE_OPENAI_KEY", raising=False)
    with FakeOpenAI({"training_engineer": [server_error(500), server_error(502), server_error(503)]}) as server:
        clients = _clients(tmp_path, server.base_url, "training_engineer")
        agent = TrainingEngineerAgent("training_engineer", clients["training_engineer"], run_dir=store.root,
                                      max_retries=2, backoff_s=0.05)
        result = asyncio.run(agent.run(task=StructuredMessage[AnalystFeedback](content=ASKED, source="analyst")))
        assert server.answered("training_engineer") == ["500", "502", "503"] and not server.remaining()
    code = result.messages[-1].content
    assert isinstance(code, ComponentCode) and code.author == EXPERT_NAME and get_knobs(code.code)["LR"] == 0.002
    logged = _lines(store.root / "model_faults.jsonl")
    assert [f["kind"] for f in logged] == ["server_error", "server_error", "server_error", "fallback"]
    assert logged[-2]["action"] == "give up" and EXPERT_NAME in logged[-1]["action"]
    usage = json.loads((store.root / "usage.json").read_text())["training_engineer"]
    assert usage["faults"] == {"server_error": 3} and usage["fallbacks"] == 1


def test_an_analyst_asking_for_absurd_knob_values_is_refused_with_the_allowed_range(store, tmp_path, monkeypatch):
    monkeypatch.delenv("FAKE_OPENAI_KEY", raising=False)
    absurd = json.dumps({"target": "training_engineer", "diagnosis": "slow", "change": "train much longer",
                         "expected_effect": "better", "knobs": ABSURD})
    sane = json.dumps({**json.loads(absurd), "knobs": {"LR": 0.002}})
    with FakeOpenAI({"analyst": [text(f"```json\n{absurd}\n```"), text(f"```json\n{sane}\n```")]}) as server:
        clients = _clients(tmp_path, server.base_url, "analyst")
        agent = AnalystAgent("analyst", clients["analyst"], run_dir=store.root, backoff_s=0.01)
        result = asyncio.run(agent.run(task="analyse"))
        retry = server.requests[1].messages[-1]["content"]
    assert result.messages[-1].content.knobs == {"LR": 0.002}
    assert "LR = 50.0 is outside its allowed range" in retry and "EPOCHS = 100000 is outside" in retry
    assert [f["kind"] for f in _lines(store.root / "model_faults.jsonl")] == ["unusable_reply"]


# --- the knob ranges, defined once ----------------------------------------------------------------


def test_every_reference_knob_has_a_range_that_holds_its_default_and_the_prompts_show_it():
    for component, table in KNOB_RANGES.items():
        knobs = {k: v for k, v in get_knobs((REFERENCE_DIR / f"{component}.py").read_text()).items()
                 if k != "INTERFACE_VERSION"}
        assert set(knobs) == set(table), component
        assert knob_problems(component, knobs) == []
    shown = knobs_text()
    assert "LR = 0.0  # 0 = chosen: 3e-3 from scratch, 1e-3 when fine-tuning  [allowed: float 1e-07..2, or 0]" in shown
    assert "DROPOUT = 0.1  [allowed: float 0..0.95]" in shown and "one of 'cosine', 'onecycle', 'constant'" in shown


@pytest.mark.parametrize(("component", "knobs", "why"), [
    ("training", {"LR": 50}, "LR = 50 is outside its allowed range"),
    ("training", {"LR": 1e9}, "LR = 1000000000.0 is outside"),
    ("training", {"EPOCHS": 100000}, "EPOCHS = 100000 is outside"),
    ("training", {"EPOCHS": 10**6}, "EPOCHS = 1000000 is outside"),
    ("training", {"SCHEDULE": "warp"}, "must be one of 'cosine'"),
    ("data", {"BATCH_SIZE": 1e6}, "must be a whole number"),
    ("data", {"BATCH_SIZE": 1}, "BATCH_SIZE = 1 is outside"),
    ("data", {"INPUT_SIZE": 4096}, "INPUT_SIZE = 4096 is outside"),
    ("data", {"HFLIP": 1}, "must be True or False"),
    ("model", {"DROPOUT": 1.5}, "DROPOUT = 1.5 is outside"),
    ("model", {"WIDTH": True}, "must be a number"),
])
def test_the_validator_refuses_absurd_knob_values_with_the_line_and_the_range(component, knobs, why):
    issues = validate_component(component, _code(component, **knobs))
    assert len(issues) == 1 and why in issues[0].message, issues
    name = next(iter(knobs))
    assert issues[0].line == next(i for i, line in enumerate(_code(component, **knobs).splitlines(), 1)
                                  if line.startswith(f"{name} ="))
    assert "allowed values" in issues[0].message


def test_zero_chosen_values_and_expressions_pass():
    assert validate_component("data", _code("data", BATCH_SIZE=0, INPUT_SIZE=0)) == []  # 0 = chosen from the device
    assert validate_component("training", _code("training", LR=1e-4, EPOCHS=12, EMA_DECAY=0.999)) == []
    huge = reference_source("training").replace("LR = 0.0", "LR = 1e999")  # a literal that parses to inf
    assert "LR = inf must be finite" in str(validate_component("training", huge))
    computed = reference_source("training").replace("LR = 0.0", "LR = 3e-3 * 2")  # known only when it runs
    assert validate_component("training", computed) == []


def test_each_benchmark_suite_rewrites_only_its_own_section_of_the_table(tmp_path):
    from benchmarks.faults import MODEL_MARKER, write_section

    table = tmp_path / "faults.md"
    table.write_text("# Fault injection\nprocess rows\n")
    write_section(table, "## Model faults\nfirst\n", model=True)
    write_section(table, "## Model faults\nsecond\n", model=True)
    assert table.read_text() == f"# Fault injection\nprocess rows\n\n{MODEL_MARKER}\n## Model faults\nsecond\n"
    write_section(table, "# Fault injection\nnew rows\n", model=False)
    assert table.read_text() == f"# Fault injection\nnew rows\n\n{MODEL_MARKER}\n## Model faults\nsecond\n"
