"""The Executor: assembles the candidate, runs it in an executor process, reports back."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from autogen_agentchat.messages import BaseChatMessage
from autogen_core import CancellationToken

from automodel.executors import ExecutionResult
from automodel.interfaces import COMPONENT_FILES, REFERENCE_DIR, validate_components
from automodel.messages import (
    ENGINEER_OF,
    ComponentCode,
    ComponentName,
    ExecutionError,
    RunReport,
    TechnicalDesign,
)
from automodel.roles._base import RoleAgent, last_of
from automodel.store import Attempt, AttemptStatus

__all__ = ["ExecutorAgent"]


class ExecutorAgent(RoleAgent):
    """Runs each assembled candidate through the harness and posts the run report as a message."""

    component_provider_override = "automodel.roles.ExecutorAgent"
    role = "executor"
    summary = "Executor: runs the assembled candidate in a separate process and reports its metrics or errors."
    output_types = (RunReport, ExecutionError)

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._target = "architect"
        self._change = ""
        self._knobs: dict[str, Any] = {}
        self._repairs = 0

    async def save_state(self) -> Mapping[str, Any]:
        return {"target": self._target, "change": self._change, "knobs": self._knobs, "repairs": self._repairs}

    async def load_state(self, state: Mapping[str, Any]) -> None:
        self._target = str(state.get("target", "architect"))
        self._change = str(state.get("change", ""))
        self._knobs = dict(state.get("knobs", {}))
        self._repairs = int(state.get("repairs", 0))

    def _begin(self, code: ComponentCode | None, design: TechnicalDesign | None) -> None:
        if code is None or code.phase == "init":
            self._target = "architect"
            self._change = f"first pipeline: {design.summary}" if design else "first pipeline"
            self._knobs, self._repairs = {}, 0
        elif code.phase == "repair":
            self._repairs += 1
            self._change = f"{self._change.split(' [repair')[0]} [repair {self._repairs}: {code.change[:120]}]"
        else:
            self._target = ENGINEER_OF[code.component]
            self._change = code.change
            self._knobs, self._repairs = dict(code.knobs), 0

    async def act(self, messages: Sequence[BaseChatMessage], cancellation_token: CancellationToken) -> RunReport | ExecutionError:
        ctx = self.ctx
        store = ctx.store
        code, design = last_of(messages, ComponentCode), last_of(messages, TechnicalDesign)
        self._begin(code if isinstance(code, ComponentCode) else None,
                    design if isinstance(design, TechnicalDesign) else None)
        iteration = store.next_iteration()
        workdir = store.iteration_dir(iteration)
        if workdir.exists():  # left by a run killed mid-attempt
            shutil.rmtree(workdir)
        workdir.mkdir(parents=True)
        for name in COMPONENT_FILES.values():
            shutil.copyfile(store.draft_dir / name, workdir / name)
        (workdir / "candidate.json").write_text(json.dumps(
            {"iteration": iteration, "target": self._target, "change": self._change, "knobs": self._knobs}, indent=1))
        max_repairs = int(ctx.budget.get("max_repairs", 2))
        best_before = store.best_val_accuracy()

        issues = validate_components(workdir)
        result: ExecutionResult | None = None
        if issues:
            status, seconds, component = "invalid", 0.0, issues[0].component
            error_type, message = "InterfaceError", "; ".join(str(i) for i in issues[:5])
            lines: list[str] = []
        else:
            budget = ctx.candidate_budget_s()
            ctx.emit({"event": "candidate", "iteration": iteration, "target": self._target, "change": self._change,
                      "budget_s": budget})
            runner = ctx.runner()
            result = await asyncio.to_thread(runner.train, workdir, workdir, time_budget_s=budget, on_event=ctx.emit)
            seconds = result.duration_s
            if result.ok and result.result is not None:
                status, component, error_type, message, lines = "ok", "", "", "", []
            else:
                status = "timeout" if result.status == "timeout" else "crashed"
                err = result.error
                component = err.component if err else "harness"
                error_type = err.error_type if err else result.status
                message = err.message if err else f"candidate ended with status {result.status}"
                lines = [str(x) for x in (err.lines if err else [])]

        if status == "ok":
            assert result is not None and result.result is not None
            metrics = result.result
            val = float(metrics["val_accuracy"])
            improved = best_before is None or val > best_before
            if improved:
                store.promote(iteration)
            else:
                store.drop_checkpoint(iteration)
            final_status: AttemptStatus = "improved" if improved else "discarded"
            best_after = val if improved else best_before
            store.record(Attempt(iteration=iteration, target=self._target, change=self._change, status=final_status,
                                 val_accuracy=val, seconds=round(seconds, 1), best_val_accuracy=best_after,
                                 knobs=self._knobs))
            store.reset_draft()
            ctx.run = store.update_run(elapsed_before_s=ctx.run.get("elapsed_before_s", 0.0))
            return RunReport(
                iteration=iteration, status=final_status, target=self._target, change=self._change,
                val_accuracy=val, best_val_accuracy=best_after,
                epochs=[{k: e.get(k) for k in ("epoch", "train_loss", "val_loss", "val_accuracy", "lr", "seconds")}
                        for e in metrics.get("history", [])],
                per_class_val_accuracy=metrics.get("per_class_val_accuracy") or [],
                stopped_by_budget=bool(metrics.get("stopped_by_budget")), seconds=round(seconds, 1),
                images_per_s=float(metrics.get("images_per_s", 0.0)),
            )

        record_status: Literal["invalid", "crashed", "timeout"] = (
            "invalid" if status == "invalid" else "timeout" if status == "timeout" else "crashed"
        )
        store.record(Attempt(iteration=iteration, target=self._target, change=self._change, status=record_status,
                             seconds=round(seconds, 1), component=component or None,
                             error=f"{error_type}: {message}"[:500], best_val_accuracy=best_before, knobs=self._knobs))
        repairable = status in ("crashed", "invalid") and self._repairs < max_repairs
        if repairable:
            owner = _as_component(component) if component in ENGINEER_OF else _owner_of(self._target)
            return ExecutionError(
                iteration=iteration, component=owner, status=record_status,
                error_type=error_type, message=message[:1500], lines=lines[:12],
                traceback_tail=(result.error.traceback[-1500:] if result and result.error else ""),
                repair_attempt=self._repairs + 1, max_repairs=max_repairs,
            )
        store.reset_draft(None if store.best_dir.exists() else REFERENCE_DIR)
        return RunReport(
            iteration=iteration, status=record_status, target=self._target, change=self._change,
            best_val_accuracy=best_before, seconds=round(seconds, 1), error=f"{component}: {error_type}: {message}"[:800],
            log_tail=(result.log_tail[-15:] if result else []),
        )


def _as_component(name: str) -> ComponentName:
    if name == "data":
        return "data"
    if name == "model":
        return "model"
    return "training"


def _owner_of(target: str) -> ComponentName:
    """The component whose engineer answers for an unattributed failure of ``target``'s change."""
    for component, role in ENGINEER_OF.items():
        if role == target:
            return _as_component(component)
    return "training"
