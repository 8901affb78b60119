"""The offline expert as an AutoGen model client: selectable per role like any LLM backend."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import Any, Literal

from autogen_core import CancellationToken, Component
from autogen_core.models import (
    ChatCompletionClient,
    CreateResult,
    LLMMessage,
    ModelCapabilities,
    ModelFamily,
    ModelInfo,
    RequestUsage,
)
from autogen_core.tools import Tool, ToolSchema
from pydantic import BaseModel

from automodel.experts import _rules

__all__ = ["REQUEST_TAG", "OfflineExpertClient", "OfflineExpertConfig", "render_request"]

REQUEST_TAG = "automodel-request"
_REQUEST_RE = re.compile(rf"<{REQUEST_TAG}>\s*(.*?)\s*</{REQUEST_TAG}>", re.S)


def render_request(role: str, context: Mapping[str, Any]) -> str:
    """The machine-readable part of a role's prompt (LLMs read it too)."""
    return f"<{REQUEST_TAG}>\n{json.dumps({'role': role, 'context': context}, default=str, indent=1)}\n</{REQUEST_TAG}>"


def _reply(role: str, ctx: dict[str, Any]) -> str:
    if role == "architect":
        design = _rules.architect(ctx)
        head = {k: design[k] for k in ("summary", "rationale", "decisions")}
        blocks = "\n\n".join(f"```python\n# {name}.py\n{code}```" for name, code in design["components"].items())
        return f"```json\n{json.dumps(head, indent=1)}\n```\n\n{blocks}"
    if role in ("data_engineer", "model_engineer", "training_engineer"):
        out = _rules.engineer(ctx)
        if out.get("skip"):
            return f"SKIP: {out['change']}"
        return f"```python\n{out['code']}```\nCHANGE: {out['change']}"
    if role == "summarizer":
        return _rules.summarize(ctx)
    if role == "analyst":
        return f"```json\n{json.dumps(_rules.analyst(ctx), indent=1)}\n```"
    raise ValueError(f"the offline expert does not play role {role!r}")


class OfflineExpertConfig(BaseModel):
    """No settings: the expert's knowledge is its rules."""

    name: str = _rules.EXPERT_NAME


class OfflineExpertClient(ChatCompletionClient, Component[OfflineExpertConfig]):
    """A model client that plays every AutoModel role by rules, with no network.

    It answers the ``<automodel-request>`` block that every role puts in its prompt,
    in the same reply format the role asks of an LLM.
    """

    component_type = "model"
    component_config_schema = OfflineExpertConfig
    component_provider_override = "automodel.experts.OfflineExpertClient"

    def __init__(self, name: str = _rules.EXPERT_NAME):
        self.name = name
        self._last = RequestUsage(prompt_tokens=0, completion_tokens=0)
        self._total = RequestUsage(prompt_tokens=0, completion_tokens=0)
        self._info = ModelInfo(
            vision=False, function_calling=False, json_output=False, family=ModelFamily.UNKNOWN, structured_output=False
        )

    async def create(
        self,
        messages: Sequence[LLMMessage],
        *,
        tools: Sequence[Tool | ToolSchema] = [],
        tool_choice: Tool | Literal["auto", "required", "none"] = "auto",
        json_output: bool | type[BaseModel] | None = None,
        extra_create_args: Mapping[str, Any] = {},
        cancellation_token: CancellationToken | None = None,
    ) -> CreateResult:
        request = None
        for message in reversed(messages):
            content = message.content if isinstance(message.content, str) else ""
            match = _REQUEST_RE.search(content)
            if match:
                request = json.loads(match.group(1))
                break
        if request is None:
            text = "The offline expert answers AutoModel role requests only; no <automodel-request> block was found."
        else:
            text = _reply(request["role"], request.get("context", {}))
        self._last = RequestUsage(prompt_tokens=0, completion_tokens=0)  # rules cost no tokens
        return CreateResult(finish_reason="stop", content=text, usage=self._last, cached=False)

    async def create_stream(
        self,
        messages: Sequence[LLMMessage],
        *,
        tools: Sequence[Tool | ToolSchema] = [],
        tool_choice: Tool | Literal["auto", "required", "none"] = "auto",
        json_output: bool | type[BaseModel] | None = None,
        extra_create_args: Mapping[str, Any] = {},
        cancellation_token: CancellationToken | None = None,
    ) -> AsyncGenerator[str | CreateResult, None]:
        result = await self.create(messages)
        yield result

    async def close(self) -> None:
        return None

    def actual_usage(self) -> RequestUsage:
        return self._last

    def total_usage(self) -> RequestUsage:
        return self._total

    def count_tokens(self, messages: Sequence[LLMMessage], *, tools: Sequence[Tool | ToolSchema] = []) -> int:
        return sum(len(str(m.content)) // 4 for m in messages)

    def remaining_tokens(self, messages: Sequence[LLMMessage], *, tools: Sequence[Tool | ToolSchema] = []) -> int:
        return 1_000_000 - self.count_tokens(messages)

    @property
    def capabilities(self) -> ModelCapabilities:
        return self._info

    @property
    def model_info(self) -> ModelInfo:
        return self._info

    def _to_config(self) -> OfflineExpertConfig:
        return OfflineExpertConfig(name=self.name)

    @classmethod
    def _from_config(cls, config: OfflineExpertConfig) -> OfflineExpertClient:
        return cls(name=config.name)
