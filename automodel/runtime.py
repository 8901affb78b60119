"""The run: one object that owns a run directory's store, its typed settings and its runner.

Roles hold only the path of the run directory in their config (so a team dumps to JSON
and loads back); the run is opened from ``run.json`` on first use and cached per path.
Everything the roles, the team and the CLI need about the run comes from here: the
settings (validated), the budget plan, the prepared data, the candidate runner, the
backend config (loaded once), and live harness events.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from automodel.budget import BudgetPlan
from automodel.config import BackendConfig, load_backend_config
from automodel.data import PreparedData
from automodel.executors import Executor, candidate_gpus, create_executor, gpu_envs, ray_options
from automodel.experts import get_knobs
from automodel.features import measured_cost_scale
from automodel.harness import CandidateRunner
from automodel.interfaces import COMPONENTS, PretrainedInfo
from automodel.settings import RunSettings
from automodel.store import RunStore
from automodel.workspace import make_runner

__all__ = ["Run", "forget_run", "open_run"]

_RUNS: dict[str, Run] = {}


@dataclass(repr=False)
class Run:
    """One run's shared state: ``run.json`` (with its typed settings) and the store."""

    store: RunStore
    record: dict[str, Any]
    settings: RunSettings
    on_event: list[Callable[[dict[str, Any]], None]] = field(default_factory=list)
    """Live harness events (epochs, progress) go to these callbacks."""
    session_start: float = field(default_factory=time.time)
    _backends: BackendConfig | None = None
    _executor: Executor | None = None

    def __repr__(self) -> str:
        return f"Run({str(self.store.root)!r})"

    @property
    def profile(self) -> dict[str, Any]:
        return dict(self.record.get("profile", {}))

    @property
    def description(self) -> str:
        return str(self.record.get("description", ""))

    def refresh(self) -> None:
        """Re-read ``run.json`` (after another writer changed it)."""
        self.record = self.store.read_run()

    def update(self, **fields: Any) -> None:
        self.record = self.store.update_run(**fields)

    def elapsed_s(self) -> float:
        """Seconds spent on this run, over all its sessions (a resumed run keeps counting)."""
        return float(self.record.get("elapsed_before_s", 0.0)) + (time.time() - self.session_start)

    def plan(self) -> BudgetPlan:
        """The budget arithmetic now (see :mod:`automodel.budget`)."""
        history = [a.model_dump() for a in self.store.history()]
        return BudgetPlan(self.settings, self.elapsed_s(), history)

    def environment(self) -> dict[str, Any]:
        """The machine and the budget, as the roles' prompts show them."""
        env = dict(self.record.get("environment", {}))
        plan = self.plan()
        env["candidate_budget_s"] = round(plan.candidate_budget_s("final" if plan.final_due() else "explore"), 1)
        env["budget"] = plan.describe()
        env["features"] = self.features_available()
        env["extraction_scale"] = round(measured_cost_scale(self.store.root / "features"), 3)
        return env

    def features_available(self) -> list[str]:
        """Feature sets already extracted in this run (reusing them costs no extraction)."""
        root = self.store.root / "features"
        if not root.is_dir():
            return []
        out = []
        for meta in sorted(root.glob("*/meta.json")):
            try:
                out.append(str(json.loads(meta.read_text(encoding="utf-8"))["key"]))
            except (OSError, ValueError, KeyError):
                continue
        return out

    def pretrained(self) -> PretrainedInfo:
        env = self.record.get("environment", {})
        return PretrainedInfo(hub_available=bool(env.get("pretrained", {}).get("hub")),
                              local=dict(self.record.get("local_weights", {})))

    def runner(self, *, candidate_budget_s: float | None = None, threads: int | None = None,
               candidate: int = 0, of: int = 1) -> CandidateRunner:
        """The candidate runner (the one factory, :func:`automodel.workspace.make_runner`).

        ``candidate`` of ``of`` started at once: its GPU slot (``--gpus`` / ``--device cuda:N``,
        :func:`automodel.executors.gpu_envs`); ``threads``: its CPU threads (default: the setting).
        """
        s = self.settings
        budget = candidate_budget_s if candidate_budget_s is not None else self.plan().explore_budget_s()
        slots = self.gpu_slots()
        env = gpu_envs(slots, of)[candidate] if slots else {}
        device = str(self.record.get("environment", {}).get("device", "cpu"))
        return make_runner(
            self.store,
            pretrained=self.pretrained(),
            held_out=[Path(p) for p in self.record.get("held_out", [])],
            device="cuda" if slots else device,
            description=self.description,
            memory_limit_mb=s.memory_limit_mb,
            max_epochs=s.max_epochs,
            threads=s.threads if threads is None else threads,
            executor=self.executor(),
            grace_s=max(45.0, 0.5 * budget),
            env=env,
        )

    def gpu_slots(self) -> list[str] | None:
        """The GPUs candidates spread over (``--gpus``, or ``--device cuda:N``); None: the environment decides.

        Raises:
            ValueError: the settings name GPUs this process does not see, or disagree.
        """
        if self.settings.executor == "ray":
            return None  # Ray gives each task its GPUs (ray_num_gpus)
        return candidate_gpus(self.settings.gpus, self.settings.device)

    def executor(self) -> Executor | str:
        """Where candidates run: the setting's name, or for ``ray`` one executor with the run's options
        (settings over the backend config's ``ray:`` section), made once per run object."""
        s = self.settings
        if s.executor != "ray":
            return s.executor
        if self._executor is None:
            options = ray_options(self.backends().ray, address=s.ray_address, num_cpus=s.ray_num_cpus,
                                  num_gpus=s.ray_num_gpus)
            self._executor = create_executor("ray", **options)
        return self._executor

    def backends(self) -> BackendConfig:
        """The backend config named by the settings, loaded once per run object."""
        if self._backends is None:
            self._backends = load_backend_config(self.settings.config)
        return self._backends

    def data(self) -> PreparedData:
        return PreparedData.load(self.store.data_dir)

    def knobs(self, *, best: bool = True) -> dict[str, dict[str, Any]]:
        return {c: get_knobs(self.store.read_component(c, best=best)) for c in COMPONENTS}

    def summaries(self) -> list[dict[str, Any]]:
        path = self.store.root / "summaries.jsonl"
        if not path.is_file():
            return []
        out = []
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out

    def emit(self, event: dict[str, Any]) -> None:
        for callback in list(self.on_event):
            callback(event)


def open_run(run_dir: str | Path) -> Run:
    """The run in ``run_dir`` (opened once per process).

    Raises:
        FileNotFoundError: no ``run.json`` there.
        SettingsError: ``run.json`` was written by another version, or edited into nonsense.
    """
    key = str(Path(run_dir).resolve())
    run = _RUNS.get(key)
    if run is None:
        store = RunStore(key)
        record = store.read_run()
        if not record:
            raise FileNotFoundError(
                f"{key}/run.json does not exist: create the run with automodel.run.prepare_run (or `automodel run`) first"
            )
        run = Run(store=store, record=record, settings=RunSettings.from_run_record(record, f"{key}/run.json"))
        _RUNS[key] = run
    return run


def forget_run(run_dir: str | Path) -> None:
    """Drop the cached run object (after run.json changed on disk)."""
    _RUNS.pop(str(Path(run_dir).resolve()), None)
