"""The Project Architect: one coherent first pipeline in a single call (zero-shot initialization)."""

from __future__ import annotations

from collections.abc import Sequence

from autogen_agentchat.messages import BaseChatMessage
from autogen_core import CancellationToken

from automodel.experts import reference_source
from automodel.interfaces import COMPONENTS
from automodel.messages import TechnicalDesign
from automodel.prompts import interface_text
from automodel.roles._base import RoleAgent
from automodel.roles._incumbent import save_design
from automodel.roles._parse import extract_json, split_components

__all__ = ["ArchitectAgent"]


def _reference_design(why: str) -> TechnicalDesign:
    return TechnicalDesign(
        summary=f"reference recipe ({why})",
        components={c: reference_source(c) for c in COMPONENTS},
        author="reference",
    )


class ArchitectAgent(RoleAgent):
    """Designs the first pipeline from the dataset profile, the description and the environment."""

    component_provider_override = "automodel.roles.ArchitectAgent"
    role = "architect"
    summary = "Project Architect: designs the first full pipeline and splits it into data, model and training."
    output_types = (TechnicalDesign,)

    async def act(self, messages: Sequence[BaseChatMessage], cancellation_token: CancellationToken) -> TechnicalDesign:
        ctx = self.ctx
        store = ctx.store
        if not ctx.settings.zero_shot:
            self.note("zero-shot initialization is off: the first candidate is the reference recipe")
            design = _reference_design("zero-shot initialization switched off")
        else:
            context = {"profile": ctx.profile, "environment": ctx.environment(), "description": ctx.description}

            def parse(text: str) -> TechnicalDesign:
                head = extract_json(text)
                return TechnicalDesign(
                    summary=str(head.get("summary", ""))[:300] or "first pipeline",
                    rationale=[str(r) for r in head.get("rationale", [])][:12],
                    decisions={str(k): str(v) for k, v in dict(head.get("decisions", {})).items()},
                    components=split_components(text),
                )

            prompt_vars = {f"interface_{c}": interface_text(c) for c in COMPONENTS}
            design_or_none, author = await self.ask(context, parse, cancellation_token, prompt_vars=prompt_vars)
            if design_or_none is None:
                self.note("no usable design from the backend; starting from the reference recipe")
                design = _reference_design("the Architect's backend gave no usable design")
            else:
                design = design_or_none
                design.author = author
        store.update_run(design=design.model_dump(exclude={"components"}))
        save_design(store, design.components)
        return design
