"""What counts as a model fault, and where each one is written down.

A fault is any reply or call a role could not use: a transport failure (timeout, 429, 5xx,
connection), a reply that breaks the format, or a decision the team took instead of the
model (fallback to the offline expert, the role's safe default, a design fallback). Every
fault is a line of ``model_faults.jsonl`` and a count in ``usage.json``, whoever retries it.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any, TypeVar

import structlog
from autogen_core.models import CreateResult

from automodel.store import RunStore

__all__ = ["ReplyError", "TryOutError", "fault_kind", "parse_reply", "record_fault", "reply_text"]

log = structlog.get_logger(__name__)
T = TypeVar("T")

_REFUSAL = re.compile(
    r"^\W*(i'?m sorry|i am sorry|sorry, (but )?i|i can(no|')t (help|assist|comply|do that|provide)|"
    r"i cannot (help|assist|comply|do that|provide)|i('m| am) (not able|unable) to|as an ai\b)",
    re.I,
)

_MARKUP = re.compile(r"<</?SYS>>|\[/?INST\]|<(start|end)_of_turn>|<\|im_(start|end)\|>|<\|eot_id\|>|</?automodel-request>")
"""Chat-template tokens and the request tag: a reply carrying them echoes the prompt, not an answer."""

_COUNTED_APART = {"fallback": "fallbacks", "default": "defaults"}
"""Fault kinds counted under their own key of a role's ``usage.json`` entry (the rest under ``faults``)."""


class ReplyError(ValueError):
    """A model reply that cannot be used; the message is fed back to the model on retry."""

    kind: str = "unusable_reply"
    """The fault kind it is logged as."""


class TryOutError(ReplyError):
    """Code that crashed when tried before it ran as a candidate; the message goes back to its writer."""

    kind = "failed_tryout"


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


def reply_text(result: CreateResult) -> str:
    """The reply's text, or a :class:`ReplyError` saying what was wrong with it.

    A ``length`` finish is refused even when the cut text parses: the code or JSON may be incomplete.
    """
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


def parse_reply(result: CreateResult, parse: Callable[[str], T]) -> T:
    """``parse`` applied to the reply's text; any failure is a :class:`ReplyError` (fed back on retry)."""
    text = reply_text(result)
    try:
        return parse(text)
    except ReplyError:
        raise
    except Exception as exc:  # a reply that ignores the schema can break any parser
        raise ReplyError(f"the reply does not follow the format asked ({type(exc).__name__}: {str(exc)[:200]})") from exc


def record_fault(store: RunStore, role: str, backend: str, attempt: int, kind: str, error: str, action: str) -> None:
    """Write one fault: a line of ``model_faults.jsonl`` and a count in ``role``'s ``usage.json`` entry.

    Args:
        attempt: the try it happened on (1-based), 0 for a decision rather than a call.
        action: what happens next (``retry in 1.0s``, ``give up``, ``the offline expert plays this turn``).
    """
    record = {"time": round(time.time(), 3), "role": role, "backend": backend, "attempt": attempt,
              "kind": kind, "error": error[:500], "action": action}
    log.warning("model_fault", **record)
    store.add_fault(record)

    def count(entry: dict[str, Any]) -> None:
        key = _COUNTED_APART.get(kind)
        if key:
            entry[key] = int(entry.get(key, 0)) + 1
        else:
            faults = entry.setdefault("faults", {})
            faults[kind] = int(faults.get(kind, 0)) + 1

    store.update_usage(role, backend, count)
