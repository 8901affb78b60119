"""The Data Engineer: owns `data.py`."""

from automodel.roles._engineer import EngineerAgent

__all__ = ["DataEngineerAgent"]


class DataEngineerAgent(EngineerAgent):
    """Owns data.py: input size, batched transforms and augmentation, batch mixing, sampling."""

    component_provider_override = "automodel.roles.DataEngineerAgent"
    role = "data_engineer"
    component = "data"
    summary = "Data Engineer: owns data.py: input size, batched transforms and augmentation, batch mixing, sampling."
