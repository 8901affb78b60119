"""Parallel exploration in the team (parallel_candidates K): the round's speaker order, K different
changes trained at once on the digits demo, resume after kill -9 with K in flight, GPU slots, Ray options."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from autogen_agentchat.messages import StructuredMessage, TextMessage
from pydantic import BaseModel

from automodel.budget import budget_use
from automodel.config import ConfigError, load_backend_config
from automodel.executors import RayExecutor, candidate_gpus, gpu_envs, ray_options
from automodel.messages import AnalystFeedback, ComponentCode, ExecutionError, HistoryEntry, RunReport
from automodel.roles import round_segments
from automodel.roles._round import ROUND_FILE, unfinished_round, write_round
from automodel.run import RunOptions, prepare_run, run_team_async
from automodel.runtime import forget_run, open_run
from automodel.settings import RunSettings, SettingsError
from automodel.store import Attempt, RunStore
from automodel.team import select_next_speaker

TINY = {"candidate_budget_s": 15.0, "max_epochs": 1, "max_train": 300, "time_budget_s": 900.0}


def _msg(content: BaseModel, source: str = "x") -> StructuredMessage[Any]:
    return StructuredMessage[type(content)](content=content, source=source)


def _fb(target: str, slot: int, of: int, **knobs: Any) -> AnalystFeedback:
    return AnalystFeedback(target=target, diagnosis="d", change=f"set {knobs}", expected_effect="e", knobs=knobs,
                           slot=slot, of=of)


def _code(component: str, phase: str = "revision") -> ComponentCode:
    return ComponentCode(component=component, code="x = 1\n", change="c", phase=phase)  # type: ignore[arg-type]


def test_a_round_goes_slot_by_slot_then_to_the_executor_and_reports_one_by_one() -> None:
    history = _msg(HistoryEntry(iteration=1, target="architect", change="c", status="improved", summary="s"))
    first, second = _fb("model_engineer", 0, 2, WIDTH=16), _fb("training_engineer", 1, 2, LR=0.006)
    thread: list[Any] = [TextMessage(content="Build it", source="user"), history, _msg(first)]
    assert select_next_speaker(thread) == "model_engineer"
    thread.append(_msg(_code("model")))
    assert select_next_speaker(thread) == "analyst"  # the next change of the round
    thread.append(_msg(second))
    assert select_next_speaker(thread) == "training_engineer"
    assert select_next_speaker([*thread, _msg(_code("training"))]) == "executor"
    # A skip in the last slot still trains the others; a round of skips goes back to the Analyst.
    assert select_next_speaker([*thread, _msg(_code("training", "skip"))]) == "executor"
    skipped = [history, _msg(first), _msg(_code("model", "skip")), _msg(second), _msg(_code("training", "skip"))]
    assert select_next_speaker(skipped) == "analyst"
    # One report per candidate, each summarized; the Analyst speaks once none is pending.
    report = RunReport(iteration=2, status="improved", target="model_engineer", change="c", pending=1)
    assert select_next_speaker([_msg(report)]) == "summarizer"
    entry = _msg(HistoryEntry(iteration=2, target="model_engineer", change="c", status="improved", summary="s"))
    assert select_next_speaker([_msg(report), entry]) == "executor"
    last = report.model_copy(update={"iteration": 3, "pending": 0})
    assert select_next_speaker([_msg(report), entry, _msg(last), entry]) == "analyst"
    # A failed candidate of the round is repaired; a repair its engineer skips lets the Executor post the rest.
    error = ExecutionError(iteration=3, component="model", status="crashed", error_type="E", message="m", pending=1)
    assert select_next_speaker([_msg(error)]) == "model_engineer"
    assert select_next_speaker([_msg(error), _msg(_code("model", "repair"))]) == "executor"
    assert select_next_speaker([_msg(error), _msg(_code("model", "skip"))]) == "executor"
    assert select_next_speaker([_msg(error.model_copy(update={"pending": 0})), _msg(_code("model", "skip"))]) == "analyst"


def test_round_segments_pair_each_change_with_its_feedback() -> None:
    first, second = _fb("model_engineer", 0, 2, WIDTH=16), _fb("model_engineer", 1, 2, DROPOUT=0.3)
    old = _fb("data_engineer", 0, 2, HFLIP=False)
    messages = [_msg(old), _msg(_code("data")), _msg(first), _msg(_code("model")), _msg(second), _msg(_code("model"))]
    segments = round_segments(messages)
    assert segments is not None and [fb for fb, _ in segments] == [first, second]
    assert [len(msgs) for _, msgs in segments] == [1, 1]
    assert round_segments([_msg(_fb("model_engineer", 0, 1, WIDTH=16)), _msg(_code("model"))]) is None
    with pytest.raises(ValueError, match="outside a round"):
        _fb("model_engineer", 2, 2)


def test_unfinished_candidates_of_a_killed_round_are_the_ones_rerun(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "run")
    store.record(Attempt(iteration=1, target="architect", change="first", status="improved", val_accuracy=0.9))
    write_round(store, [(2, _fb("model_engineer", 0, 2, WIDTH=16)), (3, _fb("training_engineer", 1, 2, LR=0.006))])
    store.record(Attempt(iteration=3, target="training_engineer", change="lr", status="discarded", val_accuracy=0.8))
    rerun = unfinished_round(store)
    assert [(f.rerun, f.target, f.knobs) for f in rerun] == [(2, "model_engineer", {"WIDTH": 16})]
    assert all(f.slot == 0 and f.of == 1 for f in rerun)  # the next round numbers them afresh
    (store.root / ROUND_FILE).unlink()
    assert unfinished_round(store) == []


def test_gpu_slots_spread_candidates_and_device_cuda_n_is_the_one_gpu_form() -> None:
    def four() -> int:
        return 4

    assert candidate_gpus("0,1", "auto", {}, count=four) == ["0", "1"]
    assert candidate_gpus("all", "cuda", {}, count=four) == ["0", "1", "2", "3"]
    assert candidate_gpus("2", "auto", {"CUDA_VISIBLE_DEVICES": "5,7,9"}) == ["5", "7"]
    assert candidate_gpus(None, "cuda:2", {}, count=four) == ["2"]
    assert candidate_gpus(None, "cuda:1", {"CUDA_VISIBLE_DEVICES": "6,3"}) == ["3"]  # ids as this process sees them
    assert candidate_gpus(None, "auto", {}, count=four) is None and candidate_gpus(None, "cpu", {}) is None
    # Three candidates at once on two GPUs: one CUDA_VISIBLE_DEVICES each, round robin.
    assert gpu_envs(["0", "1"], 3) == [{"CUDA_VISIBLE_DEVICES": v} for v in ("0", "1", "0")]
    with pytest.raises(ValueError, match="both choose"):
        candidate_gpus("0,1", "cuda:1", {}, count=four)
    with pytest.raises(ValueError, match="both choose"):
        candidate_gpus("1", "cpu", {}, count=four)
    with pytest.raises(ValueError, match="not visible"):
        candidate_gpus(None, "cuda:4", {}, count=four)
    with pytest.raises(ValueError, match="ray_num_gpus"):
        RunSettings(data="demo", out=Path("x"), executor="ray", gpus="0,1")


def _bare_run(tmp_path: Path, **settings: Any) -> Path:
    """A run directory with settings and an environment only (enough to build runners, no data)."""
    out = tmp_path / "run"
    store = RunStore(out)
    opts = RunSettings(data="demo", out=out, **settings)
    store.update_run(settings=opts.record(), environment={"device": "cpu", "cpu_count": 2}, held_out=[])
    forget_run(out)
    return out


def test_each_candidate_of_a_round_gets_its_gpu_slot_and_threads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5")  # what this process sees: two GPUs, no CUDA needed
    run = open_run(_bare_run(tmp_path, gpus="all", executor="local", parallel_candidates=3))
    runners = [run.runner(candidate_budget_s=5.0, threads=1, candidate=i, of=3) for i in range(3)]
    assert [r.env for r in runners] == [{"CUDA_VISIBLE_DEVICES": v} for v in ("4", "5", "4")]
    assert {r.device for r in runners} == {"cuda"} and {r.threads for r in runners} == {1}
    forget_run(run.store.root)
    single = open_run(_bare_run(tmp_path / "one", device="cuda:1", executor="local"))
    assert single.runner().env == {"CUDA_VISIBLE_DEVICES": "5"}  # --device cuda:N: the one-slot form
    forget_run(single.store.root)
    plain = open_run(_bare_run(tmp_path / "plain", executor="local"))
    assert plain.runner().env == {} and plain.runner().device == "cpu"  # nothing asked: nothing pinned


def test_ray_options_come_from_the_config_file_then_the_settings(tmp_path: Path) -> None:
    cfg = tmp_path / "backends.yaml"
    cfg.write_text("ray:\n  address: ray://head:10001\n  num_cpus: 2\n  num_gpus: 0.5\n")
    config = load_backend_config(cfg)
    assert config.ray == {"address": "ray://head:10001", "num_cpus": 2, "num_gpus": 0.5}
    assert ray_options(config.ray, address=None, num_cpus=1.0, num_gpus=None) == {
        "address": "ray://head:10001", "num_cpus": 1.0, "num_gpus": 0.5}
    executor = RayExecutor(**ray_options(config.ray))  # connects to nothing until a candidate runs
    assert (executor.address, executor.num_cpus, executor.num_gpus) == ("ray://head:10001", 2, 0.5)
    run = open_run(_bare_run(tmp_path, executor="ray", config=cfg, ray_num_gpus=0.25))
    built = run.executor()
    assert isinstance(built, RayExecutor) and run.executor() is built  # one executor per run
    assert (built.address, built.num_cpus, built.num_gpus) == ("ray://head:10001", 2, 0.25)
    assert run.gpu_slots() is None  # Ray places GPUs itself
    forget_run(run.store.root)
    cfg.write_text("ray:\n  adress: auto\n")
    with pytest.raises(ConfigError, match="unknown option.*adress.*valid options: address"):
        load_backend_config(cfg)
    cfg.write_text("ray:\n  num_gpus: 1.5\n")
    with pytest.raises(ConfigError, match="num_gpus"):
        load_backend_config(cfg)


def test_bad_placement_stops_the_run_before_any_data_is_prepared(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    with pytest.raises(SettingsError, match="num_gpus"):
        prepare_run(RunOptions(data="demo", out=tmp_path / "a", executor="ray", ray_num_gpus=1.5))
    with pytest.raises(SettingsError, match="asks for 2 GPUs but this process sees 1"):
        prepare_run(RunOptions(data="demo", out=tmp_path / "b", gpus="2", parallel_candidates=2))
    assert not (tmp_path / "a" / "data").exists() and not (tmp_path / "b" / "data").exists()


def test_budget_use_counts_the_overlapping_walls_of_a_round_once() -> None:
    record = {"settings": {"time_budget_s": 100.0, "strategy": "budgeted"}}
    history = [
        {"fidelity": "explore", "wall_s": 10.0, "time": 1010.0},  # alone
        {"fidelity": "explore", "wall_s": 20.0, "time": 1030.0},  # a round of two from 1010 s
        {"fidelity": "explore", "wall_s": 18.0, "time": 1028.0},
        {"fidelity": "final", "wall_s": 40.0, "time": 1070.0},
        {"fidelity": "explore", "wall_s": 5.0},  # no end time recorded: counted as it is
    ]
    use = budget_use(record, history, elapsed_s=80.0)
    assert (use["explore_s"], use["explore_attempts"], use["final_s"], use["final_attempts"]) == (35.0, 4, 40.0, 1)


def _history(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]


def _check_round(rows: list[dict[str, Any]]) -> None:
    """Two different changes, trained at once (each started before the other ended)."""
    assert len(rows) == 2
    changes = {(r["target"], json.dumps(r["knobs"], sort_keys=True)) for r in rows}
    assert len(changes) == 2, rows
    assert all(r["started"] is not None for r in rows)
    assert max(r["started"] for r in rows) < min(r["time"] for r in rows), rows


@pytest.mark.slow
def test_two_candidates_at_once_on_digits_record_two_different_changes(tmp_path: Path) -> None:
    opts = RunOptions(data="demo", out=tmp_path / "run", device="cpu", iterations=3, parallel_candidates=2,
                      executor="local", **TINY)
    final = asyncio.run(run_team_async(opts))
    rows = _history(tmp_path / "run")
    assert sorted(r["iteration"] for r in rows) == [1, 2, 3, 4]
    _check_round(rows[1:3])
    # The attempt cap leaves one attempt: the next round is a single candidate, a change not tried before.
    assert len({(r["target"], json.dumps(r["knobs"], sort_keys=True)) for r in rows[1:]}) == 3
    summaries = [json.loads(line) for line in (tmp_path / "run" / "summaries.jsonl").read_text().splitlines()]
    assert sorted(s["iteration"] for s in summaries) == [1, 2, 3, 4]  # every report reached the chat
    scores = [r["val_accuracy"] for r in rows if r["val_accuracy"] is not None]
    assert final["best_val_accuracy"] == (max(scores) if scores else None)  # the round's best that beat the rest
    if scores:
        assert int((tmp_path / "run" / "best" / "ITERATION").read_text()) == next(
            r["iteration"] for r in rows if r["val_accuracy"] == max(scores))
    assert not (tmp_path / "run" / ROUND_FILE).exists()


def _wait_for(predicate: Any, timeout: float) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


@pytest.mark.slow
def test_resume_after_kill_with_two_in_flight_reruns_them_under_their_numbers(tmp_path: Path) -> None:
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "automodel.cli", "run", "demo", "--out", str(out), "--iterations", "2",
           "--parallel", "2", "--candidate-budget", "15", "--device", "cpu", "--executor", "local"]
    env = {**os.environ, "AUTOMODEL_LOG_LEVEL": "WARNING"}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True)
    round_file = out / ROUND_FILE

    def both_training() -> bool:
        if not round_file.is_file():
            return False
        numbers = [c["iteration"] for c in json.loads(round_file.read_text())["candidates"]]
        return len(numbers) == 2 and all((out / "iterations" / f"{n:03d}" / "log.txt").is_file() for n in numbers)

    try:
        assert _wait_for(both_training, 180), "the round never started"
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    in_flight = json.loads(round_file.read_text())["candidates"]
    before = (out / "history.jsonl").read_text().splitlines()
    done_before = {json.loads(line)["iteration"] for line in before}
    assert done_before == {1}, before  # killed with both candidates training
    forget_run(out)
    done = subprocess.run([*cmd, "--resume"], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    lines = (out / "history.jsonl").read_text().splitlines()
    assert lines[: len(before)] == before  # nothing recorded before the kill is rewritten
    rows = [json.loads(line) for line in lines]
    assert sorted(r["iteration"] for r in rows) == [1, 2, 3]  # each once: re-run under its own number
    asked = {c["iteration"]: (c["feedback"]["target"], c["feedback"]["knobs"]) for c in in_flight}
    for r in rows[1:]:
        target, knobs = asked[r["iteration"]]
        assert r["target"] == target and all(r["knobs"].get(k) == v for k, v in knobs.items()), (r, asked)
    _check_round(rows[1:])
    assert not round_file.exists()
    assert open_run(out).record["sessions"] == 2
