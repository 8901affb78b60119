"""AutoModel: a team of AutoGen agents that builds, trains and improves an image classifier.

Start with the command line (``automodel run DATA``) or, from Python,
:func:`automodel.team.build_team` to embed the team in an AutoGen application.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
