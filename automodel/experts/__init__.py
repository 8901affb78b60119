"""The offline expert: a model backend that plays every role by rules, with no network.

It is the default backend when no configuration names another, and it is selectable
per role like any ``ChatCompletionClient``::

    {"provider": "automodel.experts.OfflineExpertClient", "config": {}}
"""

from automodel.experts._client import REQUEST_TAG, OfflineExpertClient, OfflineExpertConfig, render_request
from automodel.experts._knobs import get_knobs, reference_source, set_knobs
from automodel.experts._rules import EXPERT_NAME, change_key, summarize

__all__ = [
    "EXPERT_NAME",
    "REQUEST_TAG",
    "OfflineExpertClient",
    "OfflineExpertConfig",
    "change_key",
    "get_knobs",
    "reference_source",
    "render_request",
    "set_knobs",
    "summarize",
]
