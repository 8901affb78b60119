"""The retry loop of one model request: backoff, ``Retry-After``, and parse errors fed back.

Two kinds of failure are retried the same number of times (``max_retries``):

- transport faults (timeout, 429, 5xx, connection, undecodable body): the same request is sent
  again after an exponential backoff with jitter, or after the wait the server asked for
  (``Retry-After`` seconds or date, or ``retry-after-ms``), capped at ``max_backoff_s``;
- unusable replies (:class:`~automodel.roles._faults.ReplyError`): the domain loop, which sends the
  reply back with the reason so the model can correct itself.

Every failure is reported through ``on_fault`` (the role logs it as a fault), whoever retries it.
"""

from __future__ import annotations

import asyncio
import email.utils
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from autogen_core import CancellationToken
from autogen_core.models import AssistantMessage, ChatCompletionClient, LLMMessage, RequestUsage, UserMessage

from automodel._logs import redact
from automodel.roles._faults import ReplyError, fault_kind, parse_reply

__all__ = ["FaultHook", "ask_with_retries", "backoff_s", "retry_after_s"]

T = TypeVar("T")
FaultHook = Callable[[int, str, str, str], None]
"""``(try number from 1, kind, error, action)``: called once per failed try."""


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


def backoff_s(attempt: int, base_s: float, max_s: float) -> float:
    """The wait before retry ``attempt + 1``: ``base_s`` doubled per try, capped at ``max_s``, with jitter."""
    return min(max_s, base_s * 2**attempt) * (0.5 + random.random() / 2)


async def ask_with_retries(
    client: ChatCompletionClient,
    first: Sequence[LLMMessage],
    parse: Callable[[str], T],
    cancellation_token: CancellationToken,
    *,
    max_retries: int,
    request_timeout_s: float,
    max_backoff_s: float,
    backoff: Callable[[int], float],
    on_usage: Callable[[RequestUsage], None],
    on_fault: FaultHook,
    source: str,
    check: Callable[[T], Awaitable[None]] | None = None,
) -> T | None:
    """Send ``first`` to ``client`` until a reply parses, at most ``max_retries + 1`` times.

    Args:
        backoff: the wait before retry ``attempt + 1`` when the server named none (see :func:`backoff_s`).
        on_usage: called with the tokens of every reply that arrived, usable or not.
        on_fault: called for every failed try, with what happens next (``retry in 1.0s`` or ``give up``).
        source: the name the role's own messages carry when a reply is sent back to the model.
        check: a further test of a parsed reply (a try-out of its code); its ``ReplyError`` is fed back
            like a parse error, and counted under the error's ``kind`` (``failed_tryout`` for a ``TryOutError``).

    Returns:
        The parsed value, or None when every try failed (the caller falls back).
    """
    messages = list(first)
    for attempt in range(max_retries + 1):
        delay = 0.0
        try:
            result = await asyncio.wait_for(
                client.create(messages, cancellation_token=cancellation_token), timeout=request_timeout_s
            )
        except (TimeoutError, asyncio.TimeoutError) as exc:
            kind, error = "timeout", f"no reply within {request_timeout_s:g}s ({type(exc).__name__})"
            delay = backoff(attempt)
        except Exception as exc:  # rate limits, server errors, connection failures, undecodable bodies
            kind, error = fault_kind(exc), redact(f"{type(exc).__name__}: {exc}")[:300]  # providers echo keys
            wait = retry_after_s(exc)
            delay = min(wait, max_backoff_s) if wait is not None else backoff(attempt)
        else:
            on_usage(result.usage)
            text = result.content if isinstance(result.content, str) else ""
            try:
                value = parse_reply(result, parse)
                if check is not None:
                    await check(value)
                return value
            except ReplyError as exc:
                kind, error = ("truncated" if result.finish_reason == "length" else exc.kind), str(exc)
                messages = [*first, AssistantMessage(content=text[:2000] or "(empty)", source=source),
                            UserMessage(content=f"Your previous reply could not be used: {error}\n"
                                        "Reply again to the request above, following the reply format exactly.",
                                        source="automodel")]
        last = attempt == max_retries
        on_fault(attempt + 1, kind, error, "give up" if last else f"retry in {delay:.1f}s")
        if not last and delay > 0:
            await asyncio.sleep(delay)
    return None
