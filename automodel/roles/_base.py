"""The base of every role: an AutoGen agent that asks its model backend, checks, retries, falls back."""

from __future__ import annotations

import asyncio
import email.utils
import json
import random
import re
import time
from abc import abstractmethod
from collections.abc import AsyncGenerator, Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import structlog
from autogen_agentchat.agents import BaseChatAgent
from autogen_agentchat.base import Response
from autogen_agentchat.messages import BaseAgentEvent, BaseChatMessage, StructuredMessage, ThoughtEvent
from autogen_core import CancellationToken, Component, ComponentModel
from autogen_core.models import (
    AssistantMessage,
    ChatCompletionClient,
    CreateResult,
    RequestUsage,
    SystemMessage,
    UserMessage,
)
from pydantic import BaseModel

from automodel._logs import redact
from automodel.config import ConfigError
from automodel.experts import EXPERT_NAME, OfflineExpertClient, render_request
from automodel.prompts import render_prompt
from automodel.runtime import Run, open_run

__all__ = ["ReplyError", "RoleAgent", "RoleConfig", "fault_kind", "retry_after_s"]

log = structlog.get_logger(__name__)
T = TypeVar("T")

_REFUSAL = re.compile(
    r"^\W*(i'?m sorry|i am sorry|sorry, (but )?i|i can(no|')t (help|assist|comply|do that|provide)|"
    r"i cannot (help|assist|comply|do that|provide)|i('m| am) (not able|unable) to|as an ai\b)",
    re.I,
)

_MARKUP = re.compile(r"<</?SYS>>|\[/?INST\]|<(start|end)_of_turn>|<\|im_(start|end)\|>|<\|eot_id\|>|</?automodel-request>")
"""Chat-template tokens and the request tag: a reply carrying them echoes the prompt, not an answer."""


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
    backoff_s: float | None = None
    """First wait before retrying a failed call; doubles each retry (with jitter) up to ``max_backoff_s``.
    ``None`` reads ``backoff_s`` from the run's backend config (1 s when it has none)."""
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
    if result.finish_reason == "length":
        raise ReplyError("the reply was cut off at the token limit (finish_reason length), so the code or JSON in it "
                         "may be incomplete even where it parses; reply again, complete and much shorter")
    if result.finish_reason == "content_filter":
        raise ReplyError("the reply was withheld by the provider's content filter; answer the technical request only")
    if not isinstance(result.content, str):
        raise ReplyError("the reply was a tool call; reply with text in the format asked, no tools")
    text = result.content
    if not text.strip():
        raise ReplyError("the reply was empty")
    markup = _MARKUP.search(text)
    if markup:
        raise ReplyError(f"the reply echoes prompt markup ({markup.group(0)}) instead of answering; reply with the "
                         "answer only, in the format asked")
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
        backoff_s: float | None = None,
        max_backoff_s: float = 30.0,
        price_per_1k_prompt: float | None = None,
        price_per_1k_completion: float | None = None,
    ):
        super().__init__(name=name, description=self.summary)
        self.model_client = model_client or OfflineExpertClient()
        self.run_dir = str(run_dir)
        self.max_retries = max_retries
        self.fallback_to_expert = fallback_to_expert
        self.request_timeout_s = request_timeout_s
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.price_per_1k_prompt = price_per_1k_prompt
        self.price_per_1k_completion = price_per_1k_completion
        self._expert = OfflineExpertClient()
        self._usage = RequestUsage(prompt_tokens=0, completion_tokens=0)
        self._backends: Any = None  # the run's BackendConfig, read on first use

    # --- AutoGen agent protocol -------------------------------------------------------
    @property
    def produced_message_types(self) -> Sequence[type[BaseChatMessage]]:
        generic: Any = StructuredMessage
        return tuple(generic[t] for t in self.output_types)

    @property
    def ctx(self) -> Run:
        return open_run(self.run_dir)

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
        generic: Any = StructuredMessage  # parametrised at run time by the output's type
        message = generic[type(content)](
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

        Every failure (timeout, rate limit, server error, malformed, empty, refused or
        schema-breaking reply) is retried ``max_retries`` times with exponential backoff (a
        server's ``Retry-After`` wins), the reason fed back to the model where it can act on it.
        Then the offline expert plays the turn (``fallback_to_expert``), else the caller's safe
        default applies. Each fault is a line of ``model_faults.jsonl`` and a count in ``usage.json``.

        Returns:
            The parsed value (None when every attempt failed) and who produced it.
        """
        ctx = self.ctx
        fields = {"description": ctx.description or "(no description given)",
                  "environment": json.dumps(ctx.environment(), default=str)}
        system = render_prompt(self.role, **{**fields, **(prompt_vars or {})})
        request = render_request(self.role, context)
        first: list[Any] = [SystemMessage(content=system), UserMessage(content=request, source="automodel")]
        messages = first
        client = self.model_client
        backend = backend_name(client)
        if not isinstance(client, OfflineExpertClient) and self._cost_cap_reached():
            self._fault(backend, 0, "cost_cap", "the run's cost cap (budget max_cost_usd) is spent", "no call")
            self.note(f"the run's cost cap is spent: {backend} is not asked")
        else:
            for attempt in range(self.max_retries + 1):
                delay = 0.0
                try:
                    result = await asyncio.wait_for(
                        client.create(messages, cancellation_token=cancellation_token), timeout=self.request_timeout_s
                    )
                except (TimeoutError, asyncio.TimeoutError) as exc:
                    kind, error = "timeout", f"no reply within {self.request_timeout_s:g}s ({type(exc).__name__})"
                    delay = self._backoff(attempt)
                except Exception as exc:  # rate limits, server errors, connection failures, undecodable bodies
                    kind, error = fault_kind(exc), redact(f"{type(exc).__name__}: {exc}")[:300]  # providers echo keys
                    wait = retry_after_s(exc)
                    delay = min(wait, self.max_backoff_s) if wait is not None else self._backoff(attempt)
                else:
                    self._account(backend, result.usage)
                    text = result.content if isinstance(result.content, str) else ""
                    try:
                        return self._parse(result, parse), backend
                    except ReplyError as exc:
                        kind, error = ("truncated" if result.finish_reason == "length" else "unusable_reply"), str(exc)
                        messages = [*first, AssistantMessage(content=text[:2000] or "(empty)", source=self.name),
                                    UserMessage(content=f"Your previous reply could not be used: {error}\n"
                                                "Reply again to the request above, following the reply format exactly.",
                                                source="automodel")]
                last = attempt == self.max_retries
                action = "give up" if last else f"retry in {delay:.1f}s"
                self._fault(backend, attempt + 1, kind, error, action)
                self.note(f"reply {attempt + 1} from {backend} unusable ({kind}): {error[:200]}; {action}")
                if not last and delay > 0:
                    await asyncio.sleep(delay)
        return await self._fall_back(first, parse, backend)

    def _parse(self, result: CreateResult, parse: Callable[[str], T]) -> T:
        text = _reply_text(result)
        try:
            return parse(text)
        except ReplyError:
            raise
        except Exception as exc:  # a reply that ignores the schema can break any parser
            raise ReplyError(f"the reply does not follow the format asked ({type(exc).__name__}: {str(exc)[:200]})") from exc

    async def _fall_back(self, messages: list[Any], parse: Callable[[str], T], backend: str) -> tuple[T | None, str]:
        if self.fallback_to_expert and not isinstance(self.model_client, OfflineExpertClient):
            self._fault(backend, 0, "fallback", f"{backend} gave no usable reply", f"the {EXPERT_NAME} plays this turn")
            self.note(f"falling back to the {EXPERT_NAME} for this turn")
            try:
                result = await self._expert.create(messages)
                return self._parse(result, parse), EXPERT_NAME
            except Exception as exc:
                self.note(f"the {EXPERT_NAME}'s reply was unusable too: {exc}")
        self._fault(backend, 0, "default", f"{backend} gave no usable reply", "the role's safe default")
        return None, ""

    def _backoff(self, attempt: int) -> float:
        base = self.backoff_s
        if base is None:
            backends = self._run_backends()
            base = backends.backoff_s if backends is not None else 1.0
        return min(self.max_backoff_s, base * 2**attempt) * (0.5 + random.random() / 2)

    # --- accounting: usage.json and model_faults.jsonl -------------------------------------
    def _account(self, backend: str, usage: RequestUsage) -> None:
        self._usage = RequestUsage(
            prompt_tokens=self._usage.prompt_tokens + usage.prompt_tokens,
            completion_tokens=self._usage.completion_tokens + usage.completion_tokens,
        )
        self.ctx.store.add_usage(self.name, backend, usage.prompt_tokens, usage.completion_tokens)
        prompt_price, completion_price = self.prices()
        cost = (usage.prompt_tokens * prompt_price + usage.completion_tokens * completion_price) / 1000
        if cost:
            self.ctx.store.update_usage(self.name, backend, lambda e: e.update(cost_usd=round(float(e.get("cost_usd", 0.0)) + cost, 6)))

    def _fault(self, backend: str, attempt: int, kind: str, error: str, action: str) -> None:
        record = {"time": round(time.time(), 3), "role": self.name, "backend": backend, "attempt": attempt,
                  "kind": kind, "error": error[:500], "action": action}
        log.warning("model_fault", **record)
        self.ctx.store.add_fault(record)

        def count(entry: dict[str, Any]) -> None:
            key = {"fallback": "fallbacks", "default": "defaults"}.get(kind)
            if key:
                entry[key] = int(entry.get(key, 0)) + 1
            else:
                faults = entry.setdefault("faults", {})
                faults[kind] = int(faults.get(kind, 0)) + 1

        self.ctx.store.update_usage(self.name, backend, count)

    def _run_backends(self) -> Any:
        """The run's backend config (``run.json`` names the file), or None."""
        if self._backends is None:
            self._backends = False
            try:
                self._backends = self.ctx.backends()
            except (ConfigError, OSError) as exc:
                log.warning("backend_config_unavailable", role=self.name, error=str(exc))
        return self._backends or None

    def prices(self) -> tuple[float, float]:
        """USD per 1000 prompt and completion tokens: set on the role, else from the run's backend config."""
        if self.price_per_1k_prompt is not None or self.price_per_1k_completion is not None:
            return float(self.price_per_1k_prompt or 0.0), float(self.price_per_1k_completion or 0.0)
        backends = self._run_backends()
        return backends.prices(self.role) if backends is not None else (0.0, 0.0)

    def _cost_cap_reached(self) -> bool:
        cap = self.ctx.settings.max_cost_usd
        if cap is None:
            return False
        spent = sum(float(e.get("cost_usd", 0.0)) for e in self.ctx.store.usage().values() if isinstance(e, dict))
        return spent >= float(cap)

    # --- Component protocol -------------------------------------------------------------
    def _to_config(self) -> RoleConfig:
        return RoleConfig(
            name=self.name,
            run_dir=self.run_dir,
            model_client=self.model_client.dump_component(),
            max_retries=self.max_retries,
            fallback_to_expert=self.fallback_to_expert,
            request_timeout_s=self.request_timeout_s,
            backoff_s=self.backoff_s,
            max_backoff_s=self.max_backoff_s,
            price_per_1k_prompt=self.price_per_1k_prompt,
            price_per_1k_completion=self.price_per_1k_completion,
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
            backoff_s=config.backoff_s,
            max_backoff_s=config.max_backoff_s,
            price_per_1k_prompt=config.price_per_1k_prompt,
            price_per_1k_completion=config.price_per_1k_completion,
        )


def last_of(messages: Sequence[BaseChatMessage], *types: type[BaseModel]) -> BaseModel | None:
    """The content of the newest structured message of one of ``types``."""
    for m in reversed(messages):
        if isinstance(m, StructuredMessage) and isinstance(m.content, types):
            return m.content
    return None
