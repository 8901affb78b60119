"""AutoModel: a team of AutoGen agents that builds, trains and improves an image classifier.

Start with the command line (``automodel run DATA``) or, from Python,
:func:`automodel.team.build_team` to embed the team in an AutoGen application.
:func:`load` gives a finished (or running) run's best model with ``predict(images)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from automodel.deploy import LoadedModel

__version__ = "0.1.0"

__all__ = ["__version__", "load"]


def load(run: str | Path, **options: Any) -> LoadedModel:
    """The best model of the run directory ``run``, with ``.predict(images)`` and ``.classes``.

    Predictions run the model's (generated) code as an executor job, in the sandbox where one
    starts, never in this process; see :class:`automodel.deploy.LoadedModel`. ``options``:
    ``executor``, ``device``.

    Raises:
        DeployError: ``run`` is not a run directory with a best model.
    """
    from automodel.deploy import load as load_run

    return load_run(run, **options)
