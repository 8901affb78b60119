"""Token and cost accounting of a role's model calls: ``usage.json`` and the run's cost cap.

Tokens are counted per call as the backend reports them; the cost is tokens times the
price per 1000 tokens (set on the role, else read from the run's backend config) and is
kept beside the tokens in the role's ``usage.json`` entry, so the cost cap reads one file.
"""

from __future__ import annotations

from typing import Any

from autogen_core.models import RequestUsage

from automodel.store import RunStore

__all__ = ["add_call", "cost_of", "cost_spent", "sum_usage"]


def sum_usage(a: RequestUsage, b: RequestUsage) -> RequestUsage:
    """The tokens of both."""
    return RequestUsage(prompt_tokens=a.prompt_tokens + b.prompt_tokens,
                        completion_tokens=a.completion_tokens + b.completion_tokens)


def cost_of(usage: RequestUsage, prices: tuple[float, float]) -> float:
    """USD for ``usage`` at ``prices`` (per 1000 prompt and completion tokens)."""
    prompt_price, completion_price = prices
    return (usage.prompt_tokens * prompt_price + usage.completion_tokens * completion_price) / 1000


def add_call(store: RunStore, role: str, backend: str, usage: RequestUsage, prices: tuple[float, float]) -> None:
    """Count one model call of ``role`` in ``usage.json``: tokens, and its cost when it has one."""
    store.add_usage(role, backend, usage.prompt_tokens, usage.completion_tokens)
    cost = cost_of(usage, prices)
    if cost:
        def add_cost(entry: dict[str, Any]) -> None:
            entry["cost_usd"] = round(float(entry.get("cost_usd", 0.0)) + cost, 6)

        store.update_usage(role, backend, add_cost)


def cost_spent(store: RunStore) -> float:
    """USD spent by every role of the run so far."""
    return sum(float(e.get("cost_usd", 0.0)) for e in store.usage().values() if isinstance(e, dict))
