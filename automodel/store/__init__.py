"""The run directory: history, candidates, the best model, resume."""

from automodel.store._store import Attempt, AttemptStatus, RunStore, write_text_atomic

__all__ = ["Attempt", "AttemptStatus", "RunStore", "write_text_atomic"]
