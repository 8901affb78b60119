"""The AutoGen agents of the team, one module per role.

Every role is a ``BaseChatAgent`` and a ``Component`` (``RoleConfig``): it holds the path
of the run directory and its model backend, so a whole team dumps to JSON and loads back.
"""

from automodel.messages import ROLE_NAMES
from automodel.roles._analyst import AnalystAgent
from automodel.roles._architect import ArchitectAgent
from automodel.roles._base import ReplyError, RoleAgent, RoleConfig
from automodel.roles._data_engineer import DataEngineerAgent
from automodel.roles._engineer import EngineerAgent
from automodel.roles._executor import ExecutorAgent, assemble_components
from automodel.roles._model_engineer import ModelEngineerAgent
from automodel.roles._round import round_segments
from automodel.roles._summarizer import SummarizerAgent
from automodel.roles._training_engineer import TrainingEngineerAgent

ROLE_CLASSES: dict[str, type[RoleAgent]] = {
    "architect": ArchitectAgent,
    "data_engineer": DataEngineerAgent,
    "model_engineer": ModelEngineerAgent,
    "training_engineer": TrainingEngineerAgent,
    "executor": ExecutorAgent,
    "summarizer": SummarizerAgent,
    "analyst": AnalystAgent,
}
"""Role name (also the agent's name in the group chat) -> its class."""
assert tuple(ROLE_CLASSES) == ROLE_NAMES, "automodel.messages.ROLE_NAMES and ROLE_CLASSES disagree"

__all__ = [
    "ROLE_CLASSES",
    "AnalystAgent",
    "ArchitectAgent",
    "DataEngineerAgent",
    "EngineerAgent",
    "ExecutorAgent",
    "ModelEngineerAgent",
    "ReplyError",
    "RoleAgent",
    "RoleConfig",
    "SummarizerAgent",
    "TrainingEngineerAgent",
    "assemble_components",
    "round_segments",
]
