"""The Project Architect: one coherent first pipeline in a single call (zero-shot initialization).

It is also the team's last resort for a broken attempt: when the engineers' bounded repairs
all failed, the Architect gets the three files of the failed try, the error with its traceback
and the shapes seen at the component boundaries, the repairs already tried and the Analyst's
feedback, and rewrites the pipeline (an escalation: once per attempt, see
:func:`automodel.team.escalation_speaker`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from autogen_agentchat.messages import BaseChatMessage, StructuredMessage
from autogen_core import CancellationToken
from pydantic import BaseModel

from automodel.experts import EXPERT_NAME, OfflineExpertClient, reference_source
from automodel.interfaces import COMPONENT_FILES, COMPONENTS
from automodel.messages import (
    AnalystFeedback,
    ComponentCode,
    ExecutionError,
    PipelineRewrite,
    RunReport,
    TechnicalDesign,
)
from automodel.prompts import interface_text
from automodel.roles._base import ReplyError, RoleAgent, backend_name, last_of
from automodel.roles._incumbent import incumbent_files, incumbent_source, save_design
from automodel.roles._parse import extract_json, same_code, split_components
from automodel.roles._tryout import refuse_if_it_crashes

__all__ = ["ArchitectAgent"]

ESCALATION_PROMPT = "architect_escalation"
"""The prompt file (``prompts/architect_escalation.md``) of a rewrite after failed repairs."""
TRACEBACK_CHARS = 3000
"""How much of the failed try's traceback the escalation request carries."""


def _reference_design(why: str) -> TechnicalDesign:
    return TechnicalDesign(
        summary=f"reference recipe ({why})",
        components={c: reference_source(c) for c in COMPONENTS},
        author="reference",
    )


def _parse_design(text: str) -> TechnicalDesign:
    head = extract_json(text)
    return TechnicalDesign(
        summary=str(head.get("summary", ""))[:300] or "first pipeline",
        rationale=[str(r) for r in head.get("rationale", [])][:12],
        decisions={str(k): str(v) for k, v in dict(head.get("decisions", {})).items()},
        components=split_components(text),
    )


def _error_evidence(report: RunReport, folder: Path) -> dict[str, Any]:
    """What the failed try left: the harness's ``error.json`` (traceback, lines, boundary shapes), else the report."""
    evidence: dict[str, Any] = {"status": report.status, "error": report.error, "log_tail": report.log_tail[-10:]}
    for path in sorted(folder.glob("*/error.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(data, dict):
            evidence.update({k: data[k] for k in ("component", "error_type", "message", "lines", "boundaries") if k in data})
            evidence["traceback"] = str(data.get("traceback", ""))[-TRACEBACK_CHARS:]
            break
    return evidence


def _attempt_so_far(messages: Sequence[BaseChatMessage], iteration: int) -> list[dict[str, Any]]:
    """The tries of the failed attempt ``iteration``: each error and each repair the engineers made, oldest first.

    A repair answers the error just before it; with parallel candidates the errors and repairs of other
    candidates of the round are in the chat too, and are left out.
    """
    steps: dict[int, list[dict[str, Any]]] = {}
    repairing: int | None = None
    for m in messages:
        content = m.content if isinstance(m, StructuredMessage) else None
        if isinstance(content, TechnicalDesign):
            steps, repairing = {}, None  # an earlier attempt
        elif isinstance(content, ExecutionError):
            repairing = content.iteration
            steps.setdefault(repairing, []).append({
                "try": content.iteration, "failed": f"{content.component}: {content.error_type}: "
                f"{content.message[:300]}", "repair_attempt": content.repair_attempt})
        elif isinstance(content, ComponentCode) and content.phase == "repair" and repairing is not None:
            steps[repairing].append({"repair_of": content.component, "by": m.source, "change": content.change[:200]})
    return steps.get(iteration, [])


def _feedback_of(messages: Sequence[BaseChatMessage], iteration: int) -> AnalystFeedback | None:
    """The Analyst's request the failed attempt ``iteration`` answered (carried on its errors)."""
    for m in reversed(messages):
        content = m.content if isinstance(m, StructuredMessage) else None
        if isinstance(content, ExecutionError) and content.iteration == iteration and content.feedback is not None:
            return content.feedback
    found = last_of(messages, AnalystFeedback)
    return found if isinstance(found, AnalystFeedback) else None


class ArchitectAgent(RoleAgent):
    """Designs the first pipeline from the dataset profile, the description and the environment."""

    component_provider_override = "automodel.roles.ArchitectAgent"
    role = "architect"
    summary = ("Project Architect: designs the first full pipeline and splits it into data, model and training; "
               "rewrites a pipeline whose repairs failed.")
    output_types = (TechnicalDesign, PipelineRewrite)

    async def act(self, messages: Sequence[BaseChatMessage], cancellation_token: CancellationToken) -> BaseModel:
        last = messages[-1] if messages else None
        if isinstance(last, StructuredMessage) and isinstance(last.content, RunReport):
            return await self.escalate(last.content, messages, cancellation_token)
        return await self.design(cancellation_token)

    async def design(self, cancellation_token: CancellationToken) -> TechnicalDesign:
        """The first pipeline (zero-shot initialization), kept in ``run/design/``."""
        ctx = self.ctx
        store = ctx.store
        if not ctx.settings.zero_shot:
            self.note("zero-shot initialization is off: the first candidate is the reference recipe")
            design = _reference_design("zero-shot initialization switched off")
        else:
            context = {"profile": ctx.profile, "environment": ctx.environment(), "description": ctx.description}
            prompt_vars = {f"interface_{c}": interface_text(c) for c in COMPONENTS}

            async def try_it(design: TechnicalDesign | None) -> None:
                if design is not None and self.tries_out_code():
                    await refuse_if_it_crashes(ctx, design.components, COMPONENTS, label=self.name)

            design_or_none, author = await self.ask(context, _parse_design, cancellation_token, prompt_vars=prompt_vars,
                                                    check=try_it)
            if design_or_none is None:
                self.note("no usable design from the backend; starting from the reference recipe")
                design = _reference_design("the Architect's backend gave no usable design")
            else:
                design = design_or_none
                design.author = author
                design.tried = author != EXPERT_NAME and self.tries_out_code()  # try_it passed it
        store.update_run(design=design.model_dump(exclude={"components"}))
        save_design(store, design.components)
        return design

    async def escalate(
        self, report: RunReport, messages: Sequence[BaseChatMessage], cancellation_token: CancellationToken
    ) -> PipelineRewrite:
        """Rewrite the pipeline of a try whose repairs all failed; only the files that change are sent on.

        A rewrite equal to the failed files (or, as a whole, to the best candidate's) changes nothing and is
        refused with the reason, like any unusable reply. Every escalation is a logged fault (kind
        ``escalation``) saying what happened; an empty rewrite means the failed attempt stands.
        """
        store = self.ctx.store
        folder = store.iteration_dir(report.iteration)
        failed = {c: (folder / COMPONENT_FILES[c]).read_text(encoding="utf-8") if (folder / COMPONENT_FILES[c]).is_file()
                  else "" for c in COMPONENTS}
        evidence = _error_evidence(report, folder)
        if isinstance(self.model_client, OfflineExpertClient):
            # The expert's rules write first pipelines; asked again they would only repeat the first one.
            self.note(f"attempt {report.iteration} failed after its repairs; the {EXPERT_NAME} does not rewrite "
                      "failed pipelines, so the failure stands")
            return PipelineRewrite(iteration=report.iteration, summary="no rewrite (offline expert)", author=EXPERT_NAME)
        incumbent = incumbent_files(store)
        has_best = incumbent_source(store) == "best"
        feedback = _feedback_of(messages, report.iteration)
        context: dict[str, Any] = {
            "phase": "escalation",
            "failed_iteration": report.iteration,
            "change_being_made": report.change,
            "feedback": feedback.model_dump() if isinstance(feedback, AnalystFeedback) else None,
            "failed_files": failed,
            "error": evidence,
            "repairs_tried": _attempt_so_far(messages, report.iteration),
            "profile": self.ctx.profile,
            "environment": self.ctx.environment(),
            "description": self.ctx.description,
        }

        def parse(text: str) -> tuple[str, dict[str, str]]:
            design = _parse_design(text)
            changed = {c: code for c, code in design.components.items() if not same_code(code, failed.get(c, ""))}
            if not changed:
                raise ReplyError("the three files are the same as the failed try's except for comments or whitespace: "
                                 "they would crash the same way. Fix the cause the error and the boundary shapes point "
                                 "at, in whichever file it lies")
            if has_best and all(same_code(design.components[c], incumbent.get(c, "")) for c in COMPONENTS):
                raise ReplyError("the three files are the incumbent's: running them again measures nothing new. Keep "
                                 "the change being made and fix what made it crash")
            return design.summary, changed

        async def try_it(reply: tuple[str, dict[str, str]] | None) -> None:
            if reply is not None and self.tries_out_code():
                await refuse_if_it_crashes(self.ctx, {**failed, **reply[1]}, COMPONENTS, label=self.name)

        result, author = await self.ask(context, parse, cancellation_token, prompt=ESCALATION_PROMPT,
                                        prompt_vars={f"interface_{c}": interface_text(c) for c in COMPONENTS},
                                        check=try_it)
        cause = f"{evidence.get('error_type', report.status)} in {evidence.get('component', '?')}.py"
        if result is None or author == EXPERT_NAME:
            # A fallback to the expert answers with its first pipeline, not a rewrite of the failed one:
            # taking it would drop the change being made, untried. The failure stands instead.
            self._fault(backend_name(self.model_client), 0, "escalation", f"attempt {report.iteration} failed after its repairs "
                        f"({cause})", "no usable rewrite from the Architect: the failed attempt stands")
            return PipelineRewrite(iteration=report.iteration, summary="no usable rewrite", author=author)
        summary, changed = result
        self._fault(author, 0, "escalation", f"attempt {report.iteration} failed after its repairs ({cause})",
                    f"the Architect rewrote {', '.join(f'{c}.py' for c in changed)}")
        self.note(f"attempt {report.iteration} escalated: the Architect rewrote {', '.join(changed)}")
        return PipelineRewrite(iteration=report.iteration, summary=summary, components=changed, author=author)
