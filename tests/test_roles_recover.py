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

    def make(base_url: str, roles: list[str], **options):
        spec = {role: {"provider": "OpenAIChatCompletionClient",
                       "config": {"model": role, "base_url": base_url, "api_key_env": "FAKE_OPENAI_KEY",
                                  "timeout": 3.0, "max_retries": 0, "model_info": MODEL_INFO}} for role in roles}
        config = tmp_path / "backends.yaml"
        config.write_text(yaml.safe_dump({"roles": spec, "max_retries": 2, "backoff_s": 0.01}))
        store = prepare_run(RunOptions(data="demo", out=tmp_path / "run", device="cpu", iterations=1, config=config,
                                       **{**FAST, **options}))
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
                                   backoff_s=0.01, try_out=False)  # the static checks alone
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


# --- code is tried before it is handed over --------------------------------------------------------

SHAPE_BUG = ("        return self.head(self.features(x))", "        return self.head(self.features(x)[:, :5])")


def _fenced(code: str, change: str = "as asked") -> str:
    return f"```python\n{code}```\nCHANGE: {change}"


def _design(files: dict[str, str], summary: str = "small CNN") -> str:
    head = json.dumps({"summary": summary, "rationale": ["fast"], "decisions": {"backbone": "small_cnn"}})
    return f"```json\n{head}\n```\n" + "\n".join(f"```python\n# {c}.py\n{code}```" for c, code in files.items())


def test_code_that_crashes_when_tried_is_refused_before_it_becomes_an_attempt(run_with):
    broken = _code("model", WIDTH=24).replace(*SHAPE_BUG)
    with FakeOpenAI({"model_engineer": [text(_fenced(broken)), text(_fenced(_code("model", WIDTH=24)))]}) as server:
        store, clients = run_with(server.base_url, ["model_engineer"])
        agent = ModelEngineerAgent("model_engineer", clients["model_engineer"], run_dir=store.root, backoff_s=0.01)
        feedback = AnalystFeedback(target="model_engineer", diagnosis="capacity", change="wider",
                                   expected_effect="better", knobs={"WIDTH": 24})
        result = asyncio.run(agent.run(task=StructuredMessage[AnalystFeedback](content=feedback, source="analyst")))
        retry = server.requests[1].messages[-1]["content"]
    code = result.messages[-1].content
    assert isinstance(code, ComponentCode) and code.phase == "revision" and "[:, :5]" not in code.code
    assert code.author == "model_engineer" and code.knobs == {"WIDTH": 24}
    # The crash went back to the model with what, where and the shapes, as a fault; no attempt ran.
    assert "model.py raised" in retry and "[:, :5]" in retry and "At the component boundaries" in retry
    assert [f["kind"] for f in _lines(store.root / "model_faults.jsonl")] == ["failed_tryout"]
    assert not _lines(store.root / "history.jsonl")
    assert not (store.root / "tryouts").exists()  # nothing left behind


def test_a_design_that_passed_its_try_out_is_taken_as_it_is_by_the_engineers(run_with):
    from automodel.messages import TechnicalDesign
    from automodel.roles import ArchitectAgent, DataEngineerAgent

    files = {"data": _code("data", HFLIP=False), "model": _code("model", ARCH="small_cnn", WIDTH=8),
             "training": _code("training", EPOCHS=1)}
    with FakeOpenAI({"architect": [text(_design(files))]}) as server:
        store, clients = run_with(server.base_url, ["architect", "data_engineer"])
        architect = ArchitectAgent("architect", clients["architect"], run_dir=store.root, backoff_s=0.01)
        design = asyncio.run(architect.run(task="Build the best classifier.")).messages[-1].content
        assert isinstance(design, TechnicalDesign) and design.tried and design.author == "architect"
        engineer = DataEngineerAgent("data_engineer", clients["data_engineer"], run_dir=store.root)
        task = StructuredMessage[TechnicalDesign](content=design, source="architect")
        code = asyncio.run(engineer.run(task=task)).messages[-1].content
        asked = [r.model for r in server.requests]
    assert asked == ["architect"]  # the engineer did not ask its model to rewrite a working file
    assert isinstance(code, ComponentCode) and code.phase == "init" and code.code == design.components["data"]
    assert same_code(code.code, files["data"])
    assert code.author == "architect" and not _lines(store.root / "model_faults.jsonl")


# --- escalation to the Architect after failed repairs ----------------------------------------------


def _msg(content):
    return StructuredMessage[type(content)](content=content, source="x")


def test_the_escalation_branch_of_the_speaker_policy():
    from automodel.messages import ExecutionError, HistoryEntry, PipelineRewrite, RunReport
    from automodel.team import escalation_speaker, select_next_speaker

    def error(n: int, of: int = 2):
        return ExecutionError(iteration=n, component="model", status="crashed", error_type="RuntimeError", message="m",
                              repair_attempt=n, max_repairs=of)

    def repair(component: str):
        return ComponentCode(component=component, code="x", change="c", phase="repair")

    feedback = AnalystFeedback(target="model_engineer", diagnosis="d", change="c", expected_effect="e")
    crashed = RunReport(iteration=3, status="crashed", target="model_engineer", change="c")
    attempt = [_msg(feedback), _msg(ComponentCode(component="model", code="x", change="c", phase="revision")),
               _msg(error(1)), _msg(repair("model")), _msg(error(2)), _msg(repair("model")), _msg(crashed)]
    assert select_next_speaker(attempt) == "architect"  # every repair used and failed
    assert escalation_speaker([*attempt[:3], _msg(crashed)]) is None  # repairs left (1 of 2 used): not escalated
    assert escalation_speaker([*attempt[:2], _msg(crashed)]) is None  # no repair allowed at all (max_repairs 0)
    timeout = crashed.model_copy(update={"status": "timeout"})
    assert select_next_speaker([*attempt[:-1], _msg(timeout)]) == "summarizer"  # a timeout is not repaired
    rewrite = PipelineRewrite(iteration=3, summary="s", components={"data": "d", "training": "t"}, author="gpt")
    relay = [*attempt, _msg(rewrite)]
    assert select_next_speaker(relay) == "data_engineer"  # each changed file, in order, by its engineer
    assert select_next_speaker([*relay, _msg(repair("data"))]) == "training_engineer"
    assert select_next_speaker([*relay, _msg(repair("data")), _msg(repair("training"))]) == "executor"
    again = [*relay, _msg(repair("data")), _msg(repair("training")), _msg(crashed)]
    assert select_next_speaker(again) == "summarizer"  # once per attempt
    assert select_next_speaker([*attempt, _msg(PipelineRewrite(iteration=3, summary="gave up"))]) == "summarizer"
    entry = HistoryEntry(iteration=4, target="t", change="c", status="crashed", summary="s")
    assert select_next_speaker([*again, _msg(entry), *attempt]) == "architect"  # the next attempt may escalate
    assert select_next_speaker([_msg(error(1)), _msg(repair("model"))]) == "executor"  # a plain repair


def test_the_escalation_prompt_names_the_evidence_and_carries_the_reference():
    from automodel.prompts import prompt_roles, render_prompt, unfilled_placeholders

    assert "architect_escalation" in prompt_roles()
    prompt = render_prompt("architect_escalation", description="digits", environment="{}")
    assert not unfilled_placeholders(prompt)
    for part in ('"failed_files"', '"boundaries"', '"repairs_tried"', '"feedback"', "def build_model(spec: ModelSpec)",
                 "multiplier of the optimizer's learning rate", "# training.py"):
        assert part in prompt


def test_a_crash_the_repairs_cannot_fix_is_escalated_to_the_architect(run_with):
    from autogen_agentchat.messages import BaseChatMessage

    from automodel.messages import PipelineRewrite
    from automodel.roles import ArchitectAgent, DataEngineerAgent, TrainingEngineerAgent
    from automodel.team import build_team

    good = {"data": _code("data", HFLIP=False), "model": _code("model", ARCH="small_cnn", WIDTH=8),
            "training": _code("training", EPOCHS=1)}
    broken = good["model"].replace(*SHAPE_BUG)
    still_broken = broken.replace("[:, :5]", "[:, :4]")
    failed = {**good, "model": still_broken}
    script = {
        "architect": [text(_design({**good, "model": broken})),
                      text(_design(failed, "the same files")),  # refused: it would crash the same way
                      text(_design(good, "model.py sliced its features; the slice is gone"))],
        "data_engineer": [text(_fenced(good["data"]))],
        "model_engineer": [text(_fenced(broken)), text(_fenced(still_broken, "sliced fewer features"))],
        "training_engineer": [text(_fenced(good["training"]))],
    }
    with FakeOpenAI(script) as server:
        # A roomy budget: one epoch (max_epochs 1) ends the run early; under load it must still fit.
        store, clients = run_with(server.base_url, list(script), max_repairs=1, candidate_budget_s=60.0)
        # try_out=False: the crashes must reach the Executor, so that the engineers' repairs fail there.
        agents = {role: cls(role, clients[role], run_dir=store.root, backoff_s=0.01, try_out=False)
                  for role, cls in (("architect", ArchitectAgent), ("data_engineer", DataEngineerAgent),
                                    ("model_engineer", ModelEngineerAgent), ("training_engineer", TrainingEngineerAgent))}
        team = build_team(store.root, agents=agents, pause_after_each_attempt=True)
        result = asyncio.run(team.run(task="Build the best classifier."))
        escalation = [r for r in server.requests if r.model == "architect"][1]
        leftover = server.remaining()
    speakers = [m.source for m in result.messages if isinstance(m, BaseChatMessage)]
    assert speakers == ["user", "architect", "data_engineer", "model_engineer", "training_engineer", "executor",
                        "model_engineer", "executor",  # the one repair allowed, which fails too
                        "architect", "model_engineer", "executor",  # escalated: the rewrite of model.py runs
                        "summarizer"]
    assert leftover == {}
    rewrite = next(m.content for m in result.messages
                   if isinstance(m, StructuredMessage) and isinstance(m.content, PipelineRewrite))
    assert set(rewrite.components) == {"model"} and rewrite.author == "architect"
    # The Architect saw all three files of the failed try, the traceback, the shapes, the repair tried.
    request = escalation.messages[1]["content"]
    assert '"phase": "escalation"' in request and "[:, :4]" in request
    for part in ('"failed_files"', '"traceback"', '"boundaries"', '"repairs_tried"', "sliced fewer features"):
        assert part in request
    history = _lines(store.root / "history.jsonl")
    assert [h["status"] for h in history] == ["crashed", "crashed", "improved"]
    assert "the Architect's rewrite" in history[2]["change"] and history[2]["authors"]["model"] == "architect"
    faults = _lines(store.root / "model_faults.jsonl")
    assert [(f["role"], f["kind"]) for f in faults] == [("architect", "unusable_reply"), ("architect", "escalation")]
    assert "rewrote model.py" in faults[1]["action"]


def test_an_unknown_feature_backbone_is_refused_at_try_out_not_a_crash_of_the_run(run_with):
    # Seen in review: a plain ValueError from the feature key escaped the try-out and ended the team.
    from automodel.roles._tryout import try_out
    from automodel.runtime import open_run

    with FakeOpenAI({}) as server:
        store, _ = run_with(server.base_url, ["data_engineer"])
    files = {"data": _code("data", FEATURES="efficientnet_lite9@224"), "model": _code("model"),
             "training": _code("training")}
    failure = try_out(open_run(store.root), files, label="data_engineer")
    assert failure is not None and failure.component == "data"
    assert "FEATURES" in failure.message and "efficientnet_lite9" in failure.message
    assert not (store.root / "tryouts").exists()


def test_an_escalation_that_falls_back_to_the_expert_keeps_the_failure_standing(run_with):
    # Seen in review: the expert's first pipeline replaced the failed files, dropping the change being made.
    from automodel.interfaces import COMPONENT_FILES
    from automodel.messages import PipelineRewrite, RunReport
    from automodel.roles import ArchitectAgent

    with FakeOpenAI({"architect": [text(""), text("")]}) as server:
        store, clients = run_with(server.base_url, ["architect"])
        folder = store.iteration_dir(3)
        folder.mkdir(parents=True, exist_ok=True)
        for component, name in COMPONENT_FILES.items():
            code = reference_source(component)
            (folder / name).write_text(code + ("\nraise RuntimeError('boom')\n" if component == "model" else ""))
        agent = ArchitectAgent("architect", clients["architect"], run_dir=store.root, max_retries=1,
                               fallback_to_expert=True, backoff_s=0.01, try_out=False)
        report = RunReport(iteration=3, status="crashed", target="model_engineer", change="wider model",
                           error="model: RuntimeError: boom")
        result = asyncio.run(agent.run(task=StructuredMessage[RunReport](content=report, source="executor")))
    rewrite = result.messages[-1].content
    assert isinstance(rewrite, PipelineRewrite) and rewrite.components == {} and rewrite.summary == "no usable rewrite"
    kinds = [f["kind"] for f in _lines(store.root / "model_faults.jsonl")]
    assert kinds[-1] == "escalation" and "fallback" in kinds
    assert "the failed attempt stands" in _lines(store.root / "model_faults.jsonl")[-1]["action"]


def test_with_parallel_candidates_a_repair_and_an_escalation_see_their_own_candidate_only():
    # Seen in review: with K=2 the newest feedback in the chat is the other slot's, so a repair was told to keep
    # another candidate's change, and an escalation listed the other candidate's errors as its own repairs.
    from automodel.messages import ExecutionError
    from automodel.roles._architect import _attempt_so_far, _feedback_of

    def fb(target: str, change: str) -> AnalystFeedback:
        return AnalystFeedback(target=target, diagnosis="d", change=change, expected_effect="e", knobs={})

    def msg(content, source: str) -> StructuredMessage:
        return StructuredMessage[type(content)](content=content, source=source)

    mine, other = fb("data_engineer", "stronger augmentation"), fb("training_engineer", "longer warmup")
    err = {"component": "data", "status": "crashed", "error_type": "RuntimeError", "message": "boom"}
    chat = [msg(mine, "analyst"), msg(other, "analyst"),
            msg(ExecutionError(iteration=5, feedback=mine, **err), "executor"),
            msg(ComponentCode(component="data", code="x", change="fix the crop", phase="repair"), "data_engineer"),
            msg(ExecutionError(iteration=6, feedback=other, **{**err, "component": "training"}), "executor"),
            msg(ComponentCode(component="training", code="y", change="fix the loop", phase="repair"), "training_engineer"),
            msg(ExecutionError(iteration=5, feedback=mine, repair_attempt=2, **err), "executor")]
    assert _feedback_of(chat, 5) == mine and _feedback_of(chat, 6) == other
    steps = _attempt_so_far(chat, 5)
    assert [s.get("try") or s.get("repair_of") for s in steps] == [5, "data", 5]
    assert all("fix the loop" not in str(s) for s in steps)
