"""What the three engineers share: check, revise or repair one component file."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

from autogen_agentchat.messages import BaseChatMessage
from autogen_core import CancellationToken

from automodel.experts import get_knobs
from automodel.interfaces import COMPONENT_FILES, REFERENCE_DIR, validate_component
from automodel.messages import (
    AnalystFeedback,
    ComponentCode,
    ComponentName,
    ExecutionError,
    PipelineRewrite,
    TechnicalDesign,
)
from automodel.roles._base import ReplyError, RoleAgent, last_of
from automodel.roles._incumbent import incumbent_files
from automodel.roles._parse import component_code, same_code, unused_new_knobs
from automodel.roles._tryout import refuse_if_it_crashes

__all__ = ["EngineerAgent"]

SIBLING_CHARS = 6000
"""How much of each sibling file a repair request carries."""


def _parse_reply(component: str, current: str = "", phase: str = "init") -> Callable[[str], tuple[str, str, bool]]:
    """Parse an engineer's reply; refuse (with the reason, for the retry) a no-op change or invented knobs."""

    def parse(text: str) -> tuple[str, str, bool]:
        if text.strip().upper().startswith("SKIP:"):
            return "", text.strip()[5:].strip(), True
        code = component_code(text, component)
        if phase in ("revision", "repair") and current and same_code(code, current):
            what = "the incumbent's" if phase == "revision" else "the file that failed"
            raise ReplyError(f"{component}.py is the same as {what} except for comments or whitespace: it would "
                             f"change nothing. Make the change asked (edit the code or the knob values), or reply "
                             f"SKIP: <reason> if it cannot be done")
        invented = unused_new_knobs(current, code) if current else []
        if invented:
            known = ", ".join(sorted(k for k in get_knobs(current) if k != "INTERFACE_VERSION"))
            raise ReplyError(f"{component}.py sets knob(s) {', '.join(invented)} that the file does not define and no "
                             f"code reads, so they change nothing; use the file's own knobs ({known}) or change "
                             f"the code that does the work")
        change = ""
        for line in text.splitlines():
            if line.strip().upper().startswith("CHANGE:"):
                change = line.split(":", 1)[1].strip()
        return code, change or "updated the file", False

    return parse


class EngineerAgent(RoleAgent):
    """Owns one component file and its interface."""

    component: ClassVar[ComponentName] = "data"
    output_types = (ComponentCode,)

    def _file_of(self, folder: Path) -> str:
        return self._file_of_component(folder, self.component)

    @staticmethod
    def _file_of_component(folder: Path, component: str) -> str:
        path = folder / COMPONENT_FILES[component]
        return path.read_text(encoding="utf-8") if path.is_file() else ""

    def _take_over(self, rewrite: PipelineRewrite) -> ComponentCode:
        """Hand the Architect's rewrite of this file to the Executor, as a repair of the failed try.

        The Architect wrote it (escalation after failed repairs): the message credits its backend.
        """
        code = rewrite.components.get(self.component, "")
        if not code.strip():
            raise ValueError(f"the Architect's rewrite of attempt {rewrite.iteration} has no {self.component}.py, "
                             f"yet the speaker policy sent it to the {self.name}: the policy and the rewrite disagree")
        return ComponentCode(component=self.component, code=code, phase="repair", iteration=self.ctx.store.next_iteration(),
                             change=f"the Architect's rewrite after failed repairs: {rewrite.summary}"[:300],
                             author=rewrite.author)

    async def act(self, messages: Sequence[BaseChatMessage], cancellation_token: CancellationToken) -> ComponentCode:
        trigger = last_of(messages, TechnicalDesign, AnalystFeedback, ExecutionError, PipelineRewrite)
        store = self.ctx.store
        if isinstance(trigger, PipelineRewrite):
            return self._take_over(trigger)
        phase: Literal["init", "revision", "repair"]
        # The code to work on comes from the channel: the design, the attempt that failed, or the incumbent.
        if isinstance(trigger, ExecutionError):
            phase = "repair"
            current = self._file_of(store.iteration_dir(trigger.iteration))
            extra: dict[str, Any] = {"error": trigger.model_dump(exclude={"feedback"})}
            # The sibling files of the failed attempt: the fault may lie where they meet this one.
            failed = store.iteration_dir(trigger.iteration)
            siblings = {c: self._file_of_component(failed, c) for c in COMPONENT_FILES if c != self.component}
            extra["sibling_code"] = {c: code[:SIBLING_CHARS] for c, code in siblings.items()}
            # The failed candidate's own request (parallel candidates: the newest in the chat is another's).
            asked = trigger.feedback or last_of(messages, AnalystFeedback)
            if isinstance(asked, AnalystFeedback):  # a repair must keep the change it repairs
                extra["feedback"] = asked.model_dump()
        elif isinstance(trigger, AnalystFeedback):
            phase = "revision"
            incumbent = incumbent_files(store)
            current = incumbent[self.component]
            siblings = {c: code for c, code in incumbent.items() if c != self.component}
            extra = {"feedback": trigger.model_dump()}
        else:
            phase = "init"
            design = trigger.components if isinstance(trigger, TechnicalDesign) else {}
            current = design.get(self.component, "") or self._file_of(REFERENCE_DIR)
            siblings = {c: design.get(c, "") or self._file_of_component(REFERENCE_DIR, c)
                        for c in COMPONENT_FILES if c != self.component}
            extra = {}
        iteration = store.next_iteration()
        if isinstance(trigger, TechnicalDesign) and trigger.tried and trigger.components.get(self.component):
            # The Architect's three files already ran the smoke test together: nothing to check or fix, and
            # asking a model to rewrite a working file could only break it.
            return ComponentCode(component=self.component, code=current, phase="init", iteration=iteration,
                                 change="the Architect's file as designed (it passed its try-out with the other two)",
                                 author=trigger.author)
        if isinstance(trigger, AnalystFeedback) and trigger.fidelity == "final" and not trigger.knobs:
            # The final phase trains the incumbent as it is: nothing to write, nothing to ask.
            return ComponentCode(component=self.component, code=current, phase="revision", iteration=iteration,
                                 change="final phase: the incumbent's file unchanged, trained with the rest of the budget",
                                 author="incumbent")
        context = {
            "component": self.component,
            "phase": phase,
            "current_code": current,
            "environment": self.ctx.environment(),
            "profile": self.ctx.profile,
            "description": self.ctx.description,
            **extra,
        }

        async def try_it(reply: tuple[str, str, bool] | None) -> None:
            if reply is None:
                return
            code, _, skip = reply
            if not skip and self.tries_out_code():  # a bug it can fix now costs no attempt
                await refuse_if_it_crashes(self.ctx, {**siblings, self.component: code}, {self.component},
                                           label=self.name)

        result, author = await self.ask(context, _parse_reply(self.component, current, phase), cancellation_token,
                                        prompt_vars={"component": self.component}, check=try_it)
        knobs = dict(trigger.knobs) if isinstance(trigger, AnalystFeedback) else {}
        if result is None or result[2]:
            reason = result[1] if result else "no valid code from the backend"
            if phase == "init" and not validate_component(self.component, current):
                return ComponentCode(component=self.component, code=current, phase="init", iteration=iteration,
                                     change=f"kept the Architect's file ({reason})",
                                     author=trigger.author if isinstance(trigger, TechnicalDesign) and trigger.author
                                     else "unchanged")
            return ComponentCode(component=self.component, code=current, change=reason, phase="skip",
                                 iteration=iteration, author=author, knobs=knobs)
        code, change, _ = result
        if phase == "revision":  # the knobs actually in the file, not the ones asked for
            before, after = get_knobs(current), get_knobs(code)
            knobs = {k: v for k, v in after.items() if before.get(k) != v and isinstance(v, str | float | int | bool)}
        return ComponentCode(component=self.component, code=code, change=change, phase=phase,
                             iteration=iteration, author=author, knobs=knobs)

