"""AutoModel: a team of AutoGen agents that builds, trains and improves an image classifier.

Start with the command line (``automodel run DATA``) or, from Python,
:func:`automodel.team.build_team` to embed the team in an AutoGen application.
:func:`load` gives a finished (or running) run's best model, or its export, with ``predict(images)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from automodel.deploy import ExportedClassifier, LoadedModel

__version__ = "0.1.0"

__all__ = ["__version__", "load"]


def load(run: str | Path, **options: Any) -> LoadedModel | ExportedClassifier:
    """A model with ``.predict(images)`` and ``.classes``: the best model of the run directory ``run``,
    or the exported model in ``run`` when it is a folder written by ``automodel export``.

    For a run, predictions run the model's (generated) code as an executor job, in the sandbox
    where one starts, never in this process (:class:`automodel.deploy.LoadedModel`; ``options``:
    ``executor``, ``device``). An export runs here with ONNX Runtime or TorchScript: a traced
    graph, no Python of the run (:class:`automodel.deploy.ExportedClassifier`).

    Raises:
        DeployError: neither a run directory with a best model nor an export folder.
    """
    from automodel.deploy import load as load_run

    return load_run(run, **options)
