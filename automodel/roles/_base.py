"""The base of every role: an AutoGen agent that asks its model backend, checks, retries, falls back.

The pieces live beside it: :mod:`._retry` (the retry loop, backoff, ``Retry-After``),
:mod:`._faults` (what a fault is and where it is written) and :mod:`._usage` (tokens and cost).
"""

from __future__ import annotations

import json
from abc import abstractmethod
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import structlog
from autogen_agentchat.agents import BaseChatAgent
from autogen_agentchat.base import Response
from autogen_agentchat.messages import BaseAgentEvent, BaseChatMessage, StructuredMessage, ThoughtEvent
from autogen_core import CancellationToken, Component, ComponentModel
from autogen_core.models import ChatCompletionClient, LLMMessage, RequestUsage, SystemMessage, UserMessage
from pydantic import BaseModel

from automodel.config import ConfigError
from automodel.experts import EXPERT_NAME, OfflineExpertClient, render_request
from automodel.prompts import render_prompt
from automodel.retry import DEFAULT_RETRY
from automodel.roles._faults import ReplyError, parse_reply, record_fault
from automodel.roles._retry import ask_with_retries, backoff_s
from automodel.roles._usage import add_call, cost_spent, sum_usage
from automodel.runtime import Run, open_run

__all__ = ["ReplyError", "RoleAgent", "RoleConfig", "backend_name", "last_of"]

log = structlog.get_logger(__name__)
T = TypeVar("T")


class RoleConfig(BaseModel):
    """Configuration shared by every role."""

    name: str
    run_dir: str
    model_client: ComponentModel | None = None
    """The role's backend, in AutoGen's component format; the offline expert when absent."""
    max_retries: int = DEFAULT_RETRY.max_retries
    fallback_to_expert: bool = DEFAULT_RETRY.fallback_to_expert
    """After ``max_retries`` failed replies, let the offline expert play the role for this turn."""
    request_timeout_s: float = DEFAULT_RETRY.request_timeout_s
    backoff_s: float | None = None
    """First wait before retrying a failed call; doubles each retry (with jitter) up to ``max_backoff_s``.
    ``None`` reads ``backoff_s`` from the run's backend config (the default policy's when it has none)."""
    max_backoff_s: float = DEFAULT_RETRY.max_backoff_s
    """The longest wait, also the cap on a server's ``Retry-After``."""
    price_per_1k_prompt: float | None = None
    """USD per 1000 prompt tokens; ``None`` reads the price from the run's backend config."""
    price_per_1k_completion: float | None = None
    try_out: bool = True
    """Roles that write code try it (the harness's smoke test, as an executor job) before handing it over;
    code from the offline expert is not tried."""


def backend_name(client: ChatCompletionClient) -> str:
    """The name history and faults give a backend: the model's name, or ``offline expert``."""
    if isinstance(client, OfflineExpertClient):
        return EXPERT_NAME
    info = getattr(client, "_raw_config", None) or {}
    return str(info.get("model") or type(client).__name__)


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
        max_retries: int = DEFAULT_RETRY.max_retries,
        fallback_to_expert: bool = DEFAULT_RETRY.fallback_to_expert,
        request_timeout_s: float = DEFAULT_RETRY.request_timeout_s,
        backoff_s: float | None = None,
        max_backoff_s: float = DEFAULT_RETRY.max_backoff_s,
        price_per_1k_prompt: float | None = None,
        price_per_1k_completion: float | None = None,
        try_out: bool = True,
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
        self.try_out = try_out
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
        prompt: str | None = None,
        check: Callable[[T], Awaitable[None]] | None = None,
    ) -> tuple[T | None, str]:
        """Ask the backend; parse the reply; retry with the error fed back; then fall back.

        Every failure (timeout, rate limit, server error, malformed, empty, refused or
        schema-breaking reply) is retried ``max_retries`` times with exponential backoff (a
        server's ``Retry-After`` wins), the reason fed back to the model where it can act on it
        (:func:`~automodel.roles._retry.ask_with_retries`). Then the offline expert plays the turn
        (``fallback_to_expert``), else the caller's safe default applies. Each fault is a line of
        ``model_faults.jsonl`` and a count in ``usage.json``.

        Args:
            prompt: the prompt file to use (``prompts/<prompt>.md``) when not the role's own.
            check: a further test of the parsed reply (a try-out of its code, see :mod:`._tryout`);
                the ``ReplyError`` it raises is fed back and retried like a parse error.

        Returns:
            The parsed value (None when every attempt failed) and who produced it.
        """
        ctx = self.ctx
        fields = {"description": ctx.description or "(no description given)",
                  "environment": json.dumps(ctx.environment(), default=str)}
        system = render_prompt(prompt or self.role, **{**fields, **(prompt_vars or {})})
        request = render_request(self.role, context)
        first: list[LLMMessage] = [SystemMessage(content=system), UserMessage(content=request, source="automodel")]
        client = self.model_client
        backend = backend_name(client)
        if not isinstance(client, OfflineExpertClient) and self._cost_cap_reached():
            self._fault(backend, 0, "cost_cap", "the run's cost cap (budget max_cost_usd) is spent", "no call")
            self.note(f"the run's cost cap is spent: {backend} is not asked")
        else:
            def on_fault(attempt: int, kind: str, error: str, action: str) -> None:
                self._fault(backend, attempt, kind, error, action)
                self.note(f"reply {attempt} from {backend} unusable ({kind}): {error[:200]}; {action}")

            value = await ask_with_retries(
                client, first, parse, cancellation_token, max_retries=self.max_retries,
                request_timeout_s=self.request_timeout_s, max_backoff_s=self.max_backoff_s, backoff=self._backoff,
                on_usage=lambda usage: self._account(backend, usage), on_fault=on_fault, source=self.name,
                check=check,
            )
            if value is not None:
                return value, backend
        return await self._fall_back(first, parse, backend)

    async def _fall_back(self, messages: list[LLMMessage], parse: Callable[[str], T], backend: str) -> tuple[T | None, str]:
        if self.fallback_to_expert and not isinstance(self.model_client, OfflineExpertClient):
            self._fault(backend, 0, "fallback", f"{backend} gave no usable reply", f"the {EXPERT_NAME} plays this turn")
            self.note(f"falling back to the {EXPERT_NAME} for this turn")
            try:
                result = await self._expert.create(messages)
                return parse_reply(result, parse), EXPERT_NAME
            except Exception as exc:
                self.note(f"the {EXPERT_NAME}'s reply was unusable too: {exc}")
        self._fault(backend, 0, "default", f"{backend} gave no usable reply", "the role's safe default")
        return None, ""

    def tries_out_code(self) -> bool:
        """Whether code this role writes is tried before it is handed over (not the offline expert's)."""
        return self.try_out and not isinstance(self.model_client, OfflineExpertClient)

    def _backoff(self, attempt: int) -> float:
        base = self.backoff_s
        if base is None:
            backends = self._run_backends()
            base = backends.backoff_s if backends is not None else DEFAULT_RETRY.backoff_s
        return backoff_s(attempt, base, self.max_backoff_s)

    # --- accounting: usage.json and model_faults.jsonl -------------------------------------
    def _account(self, backend: str, usage: RequestUsage) -> None:
        self._usage = sum_usage(self._usage, usage)
        add_call(self.ctx.store, self.name, backend, usage, self.prices())

    def _fault(self, backend: str, attempt: int, kind: str, error: str, action: str) -> None:
        """Log one fault of this role (see :func:`~automodel.roles._faults.record_fault`)."""
        record_fault(self.ctx.store, self.name, backend, attempt, kind, error, action)

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
        return cap is not None and cost_spent(self.ctx.store) >= float(cap)

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
            try_out=self.try_out,
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
            try_out=config.try_out,
        )


def last_of(messages: Sequence[BaseChatMessage], *types: type[BaseModel]) -> BaseModel | None:
    """The content of the newest structured message of one of ``types``."""
    for m in reversed(messages):
        if isinstance(m, StructuredMessage) and isinstance(m.content, types):
            return m.content
    return None
