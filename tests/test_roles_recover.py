"""LLM roles that recover: truncation, no-op changes, invented knobs, the design kept on failure.

Every role is driven through AutoGen's real OpenAI client against the scripted loopback server.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import yaml
from autogen_agentchat.messages import StructuredMessage
from fake_openai import FakeOpenAI, text

from automodel.config import load_backend_config, make_clients
from automodel.experts import get_knobs, reference_source, set_knobs
from automodel.messages import AnalystFeedback, ComponentCode
from automodel.roles import AnalystAgent, ModelEngineerAgent
from automodel.roles._incumbent import incumbent_files, knob_diff, save_design
from automodel.roles._parse import same_code, unused_new_knobs
from automodel.run import RunOptions, prepare_run

FAST = {"candidate_budget_s": 15.0, "max_epochs": 1, "time_budget_s": 900.0}
MODEL_INFO = {"vision": False, "function_calling": False, "json_output": False, "family": "unknown",
              "structured_output": False}
FEEDBACK = ('```json\n{"target": "model_engineer", "diagnosis": "capacity", "change": "wider", '
            '"expected_effect": "better", "knobs": {"WIDTH": 24}}\n```')


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


@pytest.fixture
def run_with(tmp_path):
    """A prepared demo run whose named roles talk to the fake server."""

    def make(base_url: str, roles: list[str]):
        spec = {role: {"provider": "OpenAIChatCompletionClient",
                       "config": {"model": role, "base_url": base_url, "api_key_env": "FAKE_OPENAI_KEY",
                                  "timeout": 3.0, "max_retries": 0, "model_info": MODEL_INFO}} for role in roles}
        config = tmp_path / "backends.yaml"
        config.write_text(yaml.safe_dump({"roles": spec, "max_retries": 2, "backoff_s": 0.01}))
        store = prepare_run(RunOptions(data="demo", out=tmp_path / "run", device="cpu", iterations=1, config=config,
                                       **FAST))
        return store, make_clients(load_backend_config(config))

    return make


def _code(component: str, **knobs) -> str:
    return set_knobs(reference_source(component), knobs)[0]


def test_a_length_finish_is_a_fault_even_when_the_text_parses(run_with):
    with FakeOpenAI({"analyst": [text(FEEDBACK, finish_reason="length"), text(FEEDBACK)]}) as server:
        store, clients = run_with(server.base_url, ["analyst"])
        agent = AnalystAgent("analyst", clients["analyst"], run_dir=store.root, backoff_s=0.01)
        result = asyncio.run(agent.run(task="analyse"))
        requests = list(server.requests)
    assert result.messages[-1].content.knobs == {"WIDTH": 24}
    assert len(requests) == 2 and "cut off at the token limit" in requests[1].messages[-1]["content"]
    assert [f["kind"] for f in _lines(store.root / "model_faults.jsonl")] == ["truncated"]


def test_the_analyst_may_not_set_knobs_the_file_does_not_define(run_with):
    invented = FEEDBACK.replace('"WIDTH": 24', '"NUM_LAYERS": 8')
    with FakeOpenAI({"analyst": [text(invented), text(FEEDBACK)]}) as server:
        store, clients = run_with(server.base_url, ["analyst"])
        agent = AnalystAgent("analyst", clients["analyst"], run_dir=store.root, backoff_s=0.01)
        result = asyncio.run(agent.run(task="analyse"))
        retry = server.requests[1].messages[-1]["content"]
    assert result.messages[-1].content.knobs == {"WIDTH": 24}
    assert "NUM_LAYERS are not defined in model.py" in retry and "WIDTH=0" in retry


def test_no_op_and_invented_knob_changes_are_refused_before_they_run(run_with):
    noop = "```python\n# widened, as asked\n" + reference_source("model") + "```\nCHANGE: wider"
    invented = "```python\n" + reference_source("model") + "\nNUM_LAYERS = 8\n```\nCHANGE: deeper"
    good = "```python\n" + _code("model", WIDTH=24) + "```\nCHANGE: WIDTH 24"
    with FakeOpenAI({"model_engineer": [text(noop), text(invented), text(good)]}) as server:
        store, clients = run_with(server.base_url, ["model_engineer"])
        agent = ModelEngineerAgent("model_engineer", clients["model_engineer"], run_dir=store.root, backoff_s=0.01)
        feedback = AnalystFeedback(target="model_engineer", diagnosis="capacity", change="wider",
                                   expected_effect="better", knobs={"WIDTH": 24, "DROPOUT": 0.3})
        result = asyncio.run(agent.run(task=StructuredMessage[AnalystFeedback](content=feedback, source="analyst")))
        requests = list(server.requests)
    code = result.messages[-1].content
    assert isinstance(code, ComponentCode) and code.phase == "revision"
    assert code.knobs == {"WIDTH": 24}  # what the file holds, not the DROPOUT that was asked and not applied
    assert "same as the incumbent's except for comments" in requests[1].messages[-1]["content"]
    assert "NUM_LAYERS" in requests[2].messages[-1]["content"]
    faults = _lines(store.root / "model_faults.jsonl")
    assert [f["kind"] for f in faults] == ["unusable_reply", "unusable_reply"]
    assert not (store.root / "history.jsonl").is_file() or not _lines(store.root / "history.jsonl")  # no attempt ran


def test_same_code_and_unused_knobs():
    ref = reference_source("training")
    assert same_code(ref, "# a comment\n" + ref.replace("\n\n", "\n\n\n"))
    assert not same_code(ref, _code("training", LR=0.01))
    assert unused_new_knobs(ref, ref + "\nLEARNING_RATE = 0.01\n") == ["LEARNING_RATE"]
    assert unused_new_knobs(ref, ref + "\nSTEPS = 3\nprint(STEPS)\n") == []


def test_before_any_success_changes_start_from_the_design_knobs_not_the_bare_reference(tmp_path):
    store = prepare_run(RunOptions(data="demo", out=tmp_path / "run", device="cpu", iterations=1, **FAST))
    assert get_knobs(incumbent_files(store)["data"])["HFLIP"] is True  # no design yet: the reference
    save_design(store, {"data": _code("data", HFLIP=False, BATCH_SIZE=64), "model": _code("model", WIDTH=16),
                        "training": "raise SystemExit  # a design that crashes\nLR = 0.003\n"})
    files = incumbent_files(store)
    assert get_knobs(files["data"])["HFLIP"] is False and get_knobs(files["model"])["WIDTH"] == 16
    assert get_knobs(files["training"])["LR"] == 0.003 and "def build_training" in files["training"]
    assert knob_diff(files, {**files, "model": _code("model", WIDTH=32)}) == {"WIDTH": 32}


def test_the_headline_yield_counts_llm_authored_attempts_only():
    from automodel.report import authorship, yield_count
    from automodel.store import Attempt

    def attempt(i: int, ok: bool, **authors: str) -> Attempt:
        full = {"data": "incumbent", "model": "incumbent", "training": "incumbent", **authors}
        return Attempt(iteration=i, target="model_engineer", change="x", status="improved" if ok else "crashed",
                       val_accuracy=0.9 if ok else None, authors=full)

    history = [attempt(1, True, data="gpt-x", model="gpt-x", training="gpt-x"),
               attempt(2, True, model="offline expert"),  # a takeover: valid, but not the model's
               attempt(3, False, model="gpt-x"),
               attempt(4, True, data="gpt-x", model="offline expert"),
               attempt(5, True)]  # the final phase re-trains the incumbent
    assert [authorship(a) for a in history] == ["llm", "expert", "llm", "expert", "incumbent"]
    count = yield_count(history)
    assert (count.attempts, count.valid, count.llm_valid, count.expert_attempts, count.other_attempts) == (5, 4, 1, 2, 1)
    assert "valid with LLM-authored code: 1 (yield 20%)" in count.describe()


# --- the harness: the smoke test covers build_training; blame by the boundary shapes ------------


def test_an_endless_loop_in_build_training_is_a_crash_of_training_py(digits_workspace, reference_copy, tmp_path):
    from tests.conftest import edit

    edit(reference_copy / "training.py", "    total = epochs * spec.steps_per_epoch\n",
         "    total = epochs * spec.steps_per_epoch\n    while total > 0:\n        total += 1\n")
    result = digits_workspace.runner().train(reference_copy, tmp_path / "it", time_budget_s=20)
    assert result.status == "crashed", result.log_tail  # caught by the smoke test's limit, not the budget's
    assert result.error is not None and result.error.component == "training"
    assert result.error.error_type == "StepTimeout" and "endless loop" in result.error.message
    assert any("total += 1" in str(line) for line in result.error.lines)


def test_a_wrong_permute_in_data_py_is_blamed_on_data_py_by_the_boundary_shapes(digits_workspace, reference_copy,
                                                                                  tmp_path):
    from automodel.roles._candidate import blame_by_evidence as _blame_by_evidence
    from automodel.roles._candidate import crash_boundaries as _boundaries
    from tests.conftest import edit

    edit(reference_copy / "data.py", "            x = ops.random_erasing(x, p=ERASING)\n        return x\n",
         "            x = ops.random_erasing(x, p=ERASING)\n        return x.permute(0, 2, 3, 1)  # channels last\n")
    result = digits_workspace.runner().train(reference_copy, tmp_path / "it", time_budget_s=10)
    assert result.status == "crashed" and result.error is not None
    assert result.error.component == "model"  # where it raised
    boundaries = _boundaries(tmp_path / "it")
    assert boundaries["suspect"].startswith("data: train_transform returned")
    assert any(k.startswith("model.forward input") for k in boundaries)
    assert _blame_by_evidence(result.error.component, boundaries) == "data"
    assert _blame_by_evidence("model", {"model.forward input": "(64, 1, 32, 32) float32"}) == "model"


# --- checked summaries ---------------------------------------------------------------------------


def _report(iteration: int = 1):
    from automodel.messages import RunReport

    epochs = [{"epoch": i, "train_loss": 1.0 / i, "val_loss": 0.5 / i, "val_accuracy": 0.9 + i / 100, "lr": 0.003,
               "seconds": 3.0} for i in range(1, 6)] + [{"epoch": 6, "train_loss": 0.1, "val_loss": 0.05,
                                                          "val_accuracy": 0.9895, "lr": 0.001, "seconds": 3.0}]
    return RunReport(iteration=iteration, status="improved", target="architect", change="first pipeline",
                     val_accuracy=0.9895, best_val_accuracy=0.9895, epochs=epochs, seconds=18.3, budget_s=30.0)


@pytest.mark.parametrize(("summary", "kept"), [
    ("The first pipeline reached 0.9895 (98.95%) after 6 epochs in about 18 s; the curve was still rising.", True),
    ("The first pipeline reached 0.9931 after 12 epochs; very strong.", False),
])
def test_a_summary_whose_numbers_are_not_in_the_record_is_rebuilt_from_it(run_with, summary, kept):
    from automodel.messages import HistoryEntry, RunReport
    from automodel.roles import SummarizerAgent

    with FakeOpenAI({"summarizer": [text(summary)]}) as server:
        store, clients = run_with(server.base_url, ["summarizer"])
        agent = SummarizerAgent("summarizer", clients["summarizer"], run_dir=store.root)
        result = asyncio.run(agent.run(task=StructuredMessage[RunReport](content=_report(), source="executor")))
    entry = result.messages[-1].content
    assert isinstance(entry, HistoryEntry)
    faults = [f["kind"] for f in _lines(store.root / "model_faults.jsonl")]
    if kept:
        assert entry.summary == summary and faults == []
    else:
        assert "0.9931" not in entry.summary and "0.9895" in entry.summary and faults == ["unchecked_summary"]


def test_prompts_carry_the_generated_ops_knobs_and_reference_and_fix_the_thin_points():
    from automodel.interfaces import ops
    from automodel.prompts import render_prompt, unfilled_placeholders

    architect = render_prompt("architect", description="digits", environment="{}")
    assert not unfilled_placeholders(architect)
    assert "ops.warmup_cosine(total_steps: 'int'" in architect and (ops.warmup_cosine.__doc__ or "")[:30] in architect
    assert "def build_model(spec: ModelSpec)" in architect and "def build_training(" in architect  # the reference
    assert "multiplier of the optimizer's learning rate" in architect and "RandAugment is not provided" in architect
    analyst = render_prompt("analyst", description="digits", environment="{}")
    assert '"cosine" | "onecycle" | "constant"' in analyst and "means\n\"chosen automatically\"" in analyst
    assert "hflip_change_rate" in analyst and "time left" in analyst
    model = render_prompt("model_engineer", component="model", description="d", environment="{}")
    assert "automodel.weights" in model and "sibling_code" in model
    assert "MULTIPLIER" in render_prompt("training_engineer", component="training", description="d", environment="{}")


# --- the flaky model of tests/fake_openai.py, through the real client ------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_static_fault_of_a_flaky_model_is_refused_with_a_logged_reason(run_with, seed):
    from fake_openai import FlakyModel

    flaky = FlakyModel(seed=seed, bad_rate=0.7, references={c: reference_source(c) for c in ("data", "model", "training")})
    with FakeOpenAI({}, responder=flaky) as server:
        store, clients = run_with(server.base_url, ["model_engineer"])
        agent = ModelEngineerAgent("model_engineer", clients["model_engineer"], run_dir=store.root, max_retries=4,
                                   backoff_s=0.01)
        feedback = AnalystFeedback(target="model_engineer", diagnosis="capacity", change="wider",
                                   expected_effect="better", knobs={"WIDTH": 24})
        result = asyncio.run(agent.run(task=StructuredMessage[AnalystFeedback](content=feedback, source="analyst")))
    code = result.messages[-1].content
    sent = [k.split(":")[1] for k, n in flaky.counts.items() for _ in range(n)]
    static = [k for k in sent if k not in ("good", "shape_bug")]  # a shape bug shows only at run time
    faults = [f["kind"] for f in _lines(store.root / "model_faults.jsonl") if f["kind"] not in ("fallback", "default")]
    assert len(faults) == len(static) and set(faults) <= {"unusable_reply", "truncated"}
    if len(static) < len(sent):  # some reply got through: the model's, with the change it was asked for
        assert code.author == "model_engineer" and get_knobs(code.code)["WIDTH"] == 24
        assert ("[:, :5]" in code.code) == ("shape_bug" in sent)
