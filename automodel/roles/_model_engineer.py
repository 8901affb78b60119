"""The Model Engineer: owns `model.py`."""

from automodel.roles._engineer import EngineerAgent

__all__ = ["ModelEngineerAgent"]


class ModelEngineerAgent(EngineerAgent):
    """Owns model.py: architecture, pretrained weights, head, regularization."""

    component_provider_override = "automodel.roles.ModelEngineerAgent"
    role = "model_engineer"
    component = "model"
    summary = "Model Engineer: owns model.py: architecture, pretrained weights, head, regularization."
