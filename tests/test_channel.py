"""Messages are the channel: any agent that posts a valid ComponentCode gets its code run."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence

import pytest
from autogen_agentchat.agents import BaseChatAgent
from autogen_agentchat.base import Response
from autogen_agentchat.messages import BaseChatMessage, StructuredMessage
from autogen_core import CancellationToken
from autogen_ext.models.replay import ReplayChatCompletionClient

from automodel.experts import reference_source, set_knobs
from automodel.messages import AnalystFeedback, ComponentCode, TechnicalDesign
from automodel.roles import assemble_components
from automodel.run import RunOptions, prepare_run
from automodel.team import build_team

MARK = "# written by the app's own model engineer"


class AppModelEngineer(BaseChatAgent):
    """An engineer from the embedding application: it writes model.py its own way."""

    def __init__(self) -> None:
        super().__init__("model_engineer", "the application's own model engineer")
        self.turns = 0

    @property
    def produced_message_types(self) -> Sequence[type[BaseChatMessage]]:
        return (StructuredMessage[ComponentCode],)

    async def on_messages(self, messages: Sequence[BaseChatMessage], cancellation_token: CancellationToken) -> Response:
        self.turns += 1
        revision = any(isinstance(m, StructuredMessage) and isinstance(m.content, AnalystFeedback) for m in messages)
        code, _ = set_knobs(reference_source("model"), {"ARCH": "small_cnn", "WIDTH": 8 + 4 * self.turns})
        content = ComponentCode(component="model", code=f"{MARK} (turn {self.turns})\n{code}",
                                change=f"app engineer turn {self.turns}", phase="revision" if revision else "init",
                                author="app")
        return Response(chat_message=StructuredMessage[ComponentCode](content=content, source=self.name))

    async def on_reset(self, cancellation_token: CancellationToken) -> None:
        self.turns = 0


def test_assembly_overlays_messages_on_the_base():
    base = {"data": "D0", "model": "M0", "training": "T0"}
    design = TechnicalDesign(summary="s", components={"data": "D1", "model": "M1", "training": "T1"}, author="arch")
    msgs = [
        StructuredMessage[TechnicalDesign](content=design, source="architect"),
        StructuredMessage[ComponentCode](content=ComponentCode(component="model", code="M2", change="c", author="llm"),
                                         source="model_engineer"),
        StructuredMessage[ComponentCode](content=ComponentCode(component="data", code="ignored", change="c",
                                                               phase="skip"), source="data_engineer"),
    ]
    files, authors = assemble_components(msgs, base)
    assert files == {"data": "D1", "model": "M2", "training": "T1"}
    assert authors == {"data": "arch", "model": "llm", "training": "arch"}
    only_revision = assemble_components(msgs[1:2], base)[0]
    assert only_revision == {"data": "D0", "model": "M2", "training": "T0"}


@pytest.mark.slow
def test_an_app_agent_in_place_of_a_role_gets_its_code_run(tmp_path):
    store = prepare_run(RunOptions(data="demo", out=tmp_path / "run", device="cpu", iterations=1,
                                   candidate_budget_s=10.0, max_epochs=2, time_budget_s=900.0))
    app_engineer = AppModelEngineer()
    analyst = ReplayChatCompletionClient([
        '```json\n{"target": "model_engineer", "diagnosis": "capacity", "change": "your own model", '
        '"expected_effect": "better", "knobs": {}}\n```'])
    team = build_team(store.root, {"analyst": analyst}, agents={"model_engineer": app_engineer},
                      fallback_to_expert=False)
    asyncio.run(team.run(task="Build the best classifier."))
    history = [json.loads(line) for line in (store.root / "history.jsonl").read_text().splitlines()]
    assert len(history) == 2 and app_engineer.turns == 2
    for attempt, turn in ((1, 1), (2, 2)):
        ran = (store.iteration_dir(attempt) / "model.py").read_text()
        assert ran.startswith(f"{MARK} (turn {turn})")
        assert history[attempt - 1]["authors"]["model"] == "app"
    assert history[0]["val_accuracy"] is not None


def test_an_app_agent_must_carry_the_role_name(tmp_path):
    store = prepare_run(RunOptions(data="demo", out=tmp_path / "run", device="cpu", iterations=0, time_budget_s=60.0))
    agent = AppModelEngineer()
    with pytest.raises(ValueError, match="must be named"):
        build_team(store.root, agents={"data_engineer": agent})
