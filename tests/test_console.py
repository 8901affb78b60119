"""What a run shows: a live view on a terminal, plain lines on a pipe or in CI, JSON events with --json."""

from __future__ import annotations

import io
import json

from autogen_agentchat.messages import StructuredMessage
from rich.console import Console

from automodel._console import JsonDisplay, LiveDisplay, PlainDisplay, make_display
from automodel.messages import AnalystFeedback, RunReport

RUN = {"budget": {"max_attempts": 3}, "data": "demo", "backends": {"architect": "offline expert"}}


def _msg(content) -> StructuredMessage:
    return StructuredMessage[type(content)](content=content, source="executor")


def test_the_renderer_follows_the_terminal(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    assert isinstance(make_display("auto", Console(file=io.StringIO())), PlainDisplay)  # a pipe
    assert isinstance(make_display("auto", Console(file=io.StringIO(), force_terminal=True)), LiveDisplay)
    monkeypatch.setenv("CI", "true")
    assert not isinstance(make_display("auto", Console(file=io.StringIO(), force_terminal=True)), LiveDisplay)
    assert isinstance(make_display("json", Console(file=io.StringIO())), JsonDisplay)


def test_live_view_shows_speaker_attempt_epoch_best_and_spend(tmp_path):
    (tmp_path / "usage.json").write_text(json.dumps({
        "architect": {"backend": "gpt", "calls": 1, "prompt_tokens": 1200, "completion_tokens": 300, "cost_usd": 0.0125}}))
    out = io.StringIO()
    display = LiveDisplay(Console(file=out, force_terminal=True, width=110))
    display.start(tmp_path, RUN)
    try:
        display.on_message(_msg(RunReport(iteration=1, status="improved", target="architect", change="c",
                                          val_accuracy=0.91, best_val_accuracy=0.91)))
        display.on_message(_msg(AnalystFeedback(target="training_engineer", diagnosis="d", change="raise LR",
                                                expected_effect="e")))
        panel = Console(file=io.StringIO(), width=110, record=True)
        panel.print(display.render())
        text = panel.export_text()
        assert "training_engineer: writing training.py" in text
        assert "2 of 3; best val acc 0.9100" in text  # attempt 1 is done, attempt 2 is being prepared
        assert "1500 tokens, 0.0125 USD" in text
        display.on_event({"event": "smoke", "epochs": 8, "steps_per_epoch": 10, "params": 1e5, "input_size": 32,
                          "batch_size": 64, "est_step_s": 0.1, "device": "cpu"})
        display.on_event({"event": "progress", "epoch": 3, "epochs": 8, "step": 5, "steps": 10, "train_loss": 0.5,
                          "elapsed_s": 25.0})
        panel = Console(file=io.StringIO(), width=110, record=True)
        panel.print(display.render())
        text = panel.export_text()
        assert "candidate #2 epoch 3/8" in text and "31%" in text  # 25 of 80 steps
    finally:
        display.stop()
    assert "smoke test passed" in out.getvalue()  # finished lines scroll above the live panel


def test_json_events_one_per_line_on_stdout(tiny_run):
    done, run = tiny_run
    lines = done.stdout.splitlines()
    events = [json.loads(line) for line in lines]  # every stdout line is JSON: human lines went to stderr
    kinds = [e["event"] for e in events]
    assert kinds[0] == "run.start" and kinds[-1] == "run.end"
    assert {"message", "candidate.smoke", "candidate.epoch"} <= set(kinds)
    assert len({e["run_id"] for e in events}) == 1 and events[0]["run_id"].startswith("run-")
    reports = [e for e in events if e["event"] == "message" and e.get("type") == "RunReport"]
    history = (run / "history.jsonl").read_text().splitlines()
    assert [r["iteration"] for r in reports] == [json.loads(h)["iteration"] for h in history]
    assert events[-1]["best_val_accuracy"] == json.loads((run / "final.json").read_text())["best_val_accuracy"]
    assert "report:" in done.stderr
