"""The base of every role: an AutoGen agent that asks its model backend, checks, retries, falls back."""

from __future__ import annotations

import asyncio
import random
from abc import abstractmethod
from collections.abc import AsyncGenerator, Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import structlog
from autogen_agentchat.agents import BaseChatAgent
from autogen_agentchat.base import Response
from autogen_agentchat.messages import BaseAgentEvent, BaseChatMessage, StructuredMessage, ThoughtEvent
from autogen_core import CancellationToken, Component, ComponentModel
from autogen_core.models import ChatCompletionClient, RequestUsage, SystemMessage, UserMessage
from pydantic import BaseModel

from automodel.experts import EXPERT_NAME, OfflineExpertClient, render_request
from automodel.prompts import render_prompt
from automodel.roles._context import RunContext, open_context

__all__ = ["ReplyError", "RoleAgent", "RoleConfig", "fault_kind", "retry_after_s"]

log = structlog.get_logger(__name__)
T = TypeVar("T")

FAULTS_FILE = "model_faults.jsonl"
"""One line per model fault in the run directory: role, backend, attempt, kind, error, action."""

_REFUSAL = re.compile(
    r"^\W*(i'?m sorry|i am sorry|sorry, (but )?i|i can(no|')t (help|assist|comply|do that|provide)|"
    r"i cannot (help|assist|comply|do that|provide)|i('m| am) (not able|unable) to|as an ai\b)",
    re.I,
)


class ReplyError(ValueError):
    """A model reply that cannot be used; the message is fed back to the model on retry."""


class RoleConfig(BaseModel):
    """Configuration shared by every role."""

    name: str
    run_dir: str
    model_client: ComponentModel | None = None
    """The role's backend, in AutoGen's component format; the offline expert when absent."""
    max_retries: int = 2
    fallback_to_expert: bool = True
    """After ``max_retries`` failed replies, let the offline expert play the role for this turn."""
    request_timeout_s: float = 300.0
    backoff_s: float = 1.0
    """First wait before retrying a failed call; doubles each retry (with jitter) up to ``max_backoff_s``."""
    max_backoff_s: float = 30.0
    """The longest wait, also the cap on a server's ``Retry-After``."""
    price_per_1k_prompt: float | None = None
    """USD per 1000 prompt tokens; ``None`` reads the price from the run's backend config."""
    price_per_1k_completion: float | None = None


def backend_name(client: ChatCompletionClient) -> str:
    if isinstance(client, OfflineExpertClient):
        return EXPERT_NAME
    info = getattr(client, "_raw_config", None) or {}
    return str(info.get("model") or type(client).__name__)


def fault_kind(exc: BaseException) -> str:
    """A short name for a failed call: timeout, rate_limit, server_error, client_error, connection, bad_response."""
    status = getattr(exc, "status_code", None)
    name = type(exc).__name__
    if isinstance(exc, TimeoutError) or "Timeout" in name:
        return "timeout"
    if status == 429 or "RateLimit" in name:
        return "rate_limit"
    if isinstance(status, int) and status >= 500:
        return "server_error"
    if isinstance(status, int):
        return "client_error"
    if "Connection" in name or isinstance(exc, ConnectionError):
        return "connection"
    return "bad_response"  # undecodable body, missing fields, validation errors


def retry_after_s(exc: BaseException) -> float | None:
    """The wait a server asked for (``Retry-After`` seconds or date, or ``retry-after-ms``), if any."""
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    if headers is None:
        return None
    try:
        if headers.get("retry-after-ms") is not None:
            return max(0.0, float(headers["retry-after-ms"]) / 1000)
        value = headers.get("retry-after")
        if value is None:
            return None
        try:
            return max(0.0, float(value))
        except ValueError:
            when = email.utils.parsedate_to_datetime(value)
            return max(0.0, when.timestamp() - time.time())
    except (TypeError, ValueError, OverflowError):
        return None


def _reply_text(result: CreateResult) -> str:
    """The reply's text, or a ReplyError saying what was wrong with it."""
    if result.finish_reason == "content_filter":
        raise ReplyError("the reply was withheld by the provider's content filter; answer the technical request only")
    if not isinstance(result.content, str):
        raise ReplyError("the reply was a tool call; reply with text in the format asked, no tools")
    text = result.content
    if not text.strip():
        raise ReplyError("the reply was empty")
    if "```" not in text and _REFUSAL.match(text.strip()[:200]):
        raise ReplyError("the reply declined the task; this is a routine machine-learning engineering request: "
                         "answer it in the format asked")
    return text


class RoleAgent(BaseChatAgent, Component[RoleConfig]):
    """A role of the AutoModel team. Subclasses set ``role`` and implement :meth:`act`."""

    component_config_schema = RoleConfig
    role: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    output_types: ClassVar[tuple[type[BaseModel], ...]] = ()

    def __init__(
        self,
        name: str,
        model_client: ChatCompletionClient | None = None,
        *,
        run_dir: str | Path,
        max_retries: int = 2,
        fallback_to_expert: bool = True,
        request_timeout_s: float = 300.0,
    ):
        super().__init__(name=name, description=self.summary)
        self.model_client = model_client or OfflineExpertClient()
        self.run_dir = str(run_dir)
        self.max_retries = max_retries
        self.fallback_to_expert = fallback_to_expert
        self.request_timeout_s = request_timeout_s
        self._expert = OfflineExpertClient()
        self._usage = RequestUsage(prompt_tokens=0, completion_tokens=0)

    # --- AutoGen agent protocol -------------------------------------------------------
    @property
    def produced_message_types(self) -> Sequence[type[BaseChatMessage]]:
        return tuple(StructuredMessage[t] for t in self.output_types)  # type: ignore[valid-type]

    @property
    def ctx(self) -> RunContext:
        return open_context(self.run_dir)

    async def on_messages(self, messages: Sequence[BaseChatMessage], cancellation_token: CancellationToken) -> Response:
        response: Response | None = None
        async for item in self.on_messages_stream(messages, cancellation_token):
            if isinstance(item, Response):
                response = item
        assert response is not None
        return response

    async def on_messages_stream(
        self, messages: Sequence[BaseChatMessage], cancellation_token: CancellationToken
    ) -> AsyncGenerator[BaseAgentEvent | BaseChatMessage | Response, None]:
        self._usage = RequestUsage(prompt_tokens=0, completion_tokens=0)
        self._notes: list[BaseAgentEvent] = []
        content = await self.act(messages, cancellation_token)
        for note in self._notes:
            yield note
        message = StructuredMessage[type(content)](  # type: ignore[misc]
            content=content, source=self.name, models_usage=self._usage if self._usage.prompt_tokens else None
        )
        yield Response(chat_message=message, inner_messages=list(self._notes))

    async def on_reset(self, cancellation_token: CancellationToken) -> None:
        return None

    @abstractmethod
    async def act(self, messages: Sequence[BaseChatMessage], cancellation_token: CancellationToken) -> BaseModel:
        """Do this role's turn and return its typed output."""

    def note(self, text: str) -> None:
        """A visible remark in the stream (retries, fallbacks), not a chat message."""
        self._notes.append(ThoughtEvent(content=text, source=self.name))
        log.info("role_note", role=self.name, note=text)

    # --- asking the backend -------------------------------------------------------------
    async def ask(
        self,
        context: dict[str, Any],
        parse: Callable[[str], T],
        cancellation_token: CancellationToken,
        *,
        prompt_vars: dict[str, Any] | None = None,
    ) -> tuple[T | None, str]:
        """Ask the backend; parse the reply; retry with the error fed back; then fall back.

        Returns the parsed value (None when every attempt failed) and who produced it.
        """
        system = render_prompt(self.role, **(prompt_vars or {}))
        request = render_request(self.role, context)
        messages: list[Any] = [SystemMessage(content=system), UserMessage(content=request, source="automodel")]
        client = self.model_client
        for attempt in range(self.max_retries + 1):
            try:
                result = await asyncio.wait_for(
                    client.create(messages, cancellation_token=cancellation_token), timeout=self.request_timeout_s
                )
                self._usage = RequestUsage(
                    prompt_tokens=self._usage.prompt_tokens + result.usage.prompt_tokens,
                    completion_tokens=self._usage.completion_tokens + result.usage.completion_tokens,
                )
                self.ctx.store.add_usage(self.name, backend_name(client), result.usage.prompt_tokens,
                                         result.usage.completion_tokens)
                text = result.content if isinstance(result.content, str) else ""
                if not text.strip():
                    raise ReplyError("the reply was empty")
                return parse(text), backend_name(client)
            except ReplyError as exc:
                self.note(f"reply {attempt + 1} from {backend_name(client)} unusable: {exc}")
                messages = [*messages[:2], UserMessage(
                    content=f"{request}\n\nYour previous reply could not be used: {exc}\nReply again, following the format exactly.",
                    source="automodel")]
            except (TimeoutError, asyncio.TimeoutError) as exc:
                self.note(f"{backend_name(client)} timed out after {self.request_timeout_s:.0f}s ({exc})")
            except Exception as exc:  # rate limits, server errors, connection failures
                self.note(f"{backend_name(client)} failed: {type(exc).__name__}: {str(exc)[:200]}")
                await asyncio.sleep(min(2 ** attempt, 20) * (0.5 + random.random()))
        if self.fallback_to_expert and not isinstance(client, OfflineExpertClient):
            self.note(f"falling back to the {EXPERT_NAME} for this turn")
            result = await self._expert.create(
                [SystemMessage(content=system), UserMessage(content=request, source="automodel")]
            )
            try:
                return parse(str(result.content)), EXPERT_NAME
            except ReplyError as exc:
                self.note(f"the {EXPERT_NAME}'s reply was unusable too: {exc}")
        return None, ""

    # --- Component protocol -------------------------------------------------------------
    def _to_config(self) -> RoleConfig:
        return RoleConfig(
            name=self.name,
            run_dir=self.run_dir,
            model_client=self.model_client.dump_component(),
            max_retries=self.max_retries,
            fallback_to_expert=self.fallback_to_expert,
            request_timeout_s=self.request_timeout_s,
        )

    @classmethod
    def _from_config(cls, config: RoleConfig) -> RoleAgent:
        client = ChatCompletionClient.load_component(config.model_client) if config.model_client else None
        return cls(
            config.name,
            client,
            run_dir=config.run_dir,
            max_retries=config.max_retries,
            fallback_to_expert=config.fallback_to_expert,
            request_timeout_s=config.request_timeout_s,
        )


def last_of(messages: Sequence[BaseChatMessage], *types: type[BaseModel]) -> BaseModel | None:
    """The content of the newest structured message of one of ``types``."""
    for m in reversed(messages):
        if isinstance(m, StructuredMessage) and isinstance(m.content, types):
            return m.content
    return None
