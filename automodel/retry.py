"""How a role retries its model backend: the defaults, defined once.

The backend config (:mod:`automodel.config`), the team (:func:`automodel.team.build_team`)
and every role read these; a config file or a caller overrides only what it sets.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

__all__ = ["DEFAULT_RETRY", "RetryPolicy"]


class RetryPolicy(BaseModel):
    """Retries of a failed or unusable model reply, before the logged fallback to the offline expert."""

    max_retries: int = Field(default=2, ge=0)
    """Retries after the first try (each with the error fed back to the model)."""
    backoff_s: float = Field(default=1.0, ge=0)
    """First wait before a retry; doubles each retry (with jitter); a server's Retry-After wins."""
    max_backoff_s: float = Field(default=30.0, ge=0)
    """The longest wait, also the cap on a server's Retry-After."""
    request_timeout_s: float = Field(default=300.0, gt=0)
    """AutoModel's own limit on one call, over the client's own retries."""
    fallback_to_expert: bool = True
    """After the retries, let the offline expert play the role for that turn (a logged fault)."""


DEFAULT_RETRY = RetryPolicy()
