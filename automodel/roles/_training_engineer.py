"""The Training Engineer: owns `training.py`."""

from automodel.roles._engineer import EngineerAgent

__all__ = ["TrainingEngineerAgent"]


class TrainingEngineerAgent(EngineerAgent):
    """Owns training.py: optimizer, schedule, loss, epochs, precision, EMA, clipping."""

    component_provider_override = "automodel.roles.TrainingEngineerAgent"
    role = "training_engineer"
    component = "training"
    summary = "Training Engineer: owns training.py: optimizer, schedule, loss, epochs, precision, EMA, clipping."
