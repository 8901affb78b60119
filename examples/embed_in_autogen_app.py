"""Embed the AutoModel team in your own AutoGen application.

The team is an ordinary agentchat 0.7 team: run it, stream it with ``Console``, or make it
a participant of an outer team (here, next to a reviewer agent of the application's own).

    python examples/embed_in_autogen_app.py [--out DIR] [--time-budget S] [--candidate-budget S]
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Sequence
from pathlib import Path

from autogen_agentchat.agents import BaseChatAgent
from autogen_agentchat.base import Response
from autogen_agentchat.messages import BaseChatMessage, TextMessage
from autogen_agentchat.teams import RoundRobinGroupChat
from autogen_agentchat.ui import Console
from autogen_core import CancellationToken

from automodel.messages import message_types
from automodel.run import RunOptions, finalize, prepare_run
from automodel.team import build_team


class Reviewer(BaseChatAgent):
    """The application's own agent: scores the team's best model once and signs off."""

    def __init__(self, name: str, run_dir: Path):
        super().__init__(name, description="Reviews the model the AutoModel team delivered.")
        self.run_dir = run_dir

    @property
    def produced_message_types(self) -> Sequence[type[BaseChatMessage]]:
        return (TextMessage,)

    async def on_messages(self, messages: Sequence[BaseChatMessage], cancellation_token: CancellationToken) -> Response:
        from automodel.store import RunStore

        final = await asyncio.to_thread(finalize, RunStore(self.run_dir))
        verdict = "approved" if (final.get("test_accuracy") or 0) > 0.5 else "needs more work"
        text = (f"Reviewed {len(messages)} messages from the team. Best validation accuracy "
                f"{final['best_val_accuracy']}, test accuracy {final.get('test_accuracy')}: {verdict}.")
        return Response(chat_message=TextMessage(content=text, source=self.name))

    async def on_reset(self, cancellation_token: CancellationToken) -> None:
        return None


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/embedded"))
    parser.add_argument("--time-budget", type=float, default=240.0)
    parser.add_argument("--candidate-budget", type=float, default=40.0)
    args = parser.parse_args()

    # 1. Prepare a run directory (data, budget, environment), then build the team for it.
    store = prepare_run(RunOptions(data="demo", out=args.out, iterations=1, time_budget_s=args.time_budget,
                                   candidate_budget_s=args.candidate_budget))
    team = build_team(store.root)

    # 2. Use the team as one participant of the application's own team (a nested team).
    outer = RoundRobinGroupChat(
        [team, Reviewer("reviewer", store.root)],
        max_turns=2,
        custom_message_types=message_types(),  # the inner team's structured messages
    )
    result = await Console(outer.run_stream(task="Build a digit classifier from the demo data, then review it."))
    print(f"stop reason: {result.stop_reason}")


if __name__ == "__main__":
    asyncio.run(main())
