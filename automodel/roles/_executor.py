"""The Executor: assembles the candidate from the messages, runs it in an executor process, reports back.

The messages are the channel: the code a candidate runs is the code the ``ComponentCode``
messages (and the Architect's ``TechnicalDesign``) carry. Any agent that posts a valid
``ComponentCode`` gets its code run; components nobody changed in this attempt come from
the incumbent (``best/``), or, for a repair, from the attempt being repaired.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from autogen_agentchat.messages import BaseChatMessage, StructuredMessage
from autogen_core import CancellationToken

from automodel._environment import stop_if_disk_full
from automodel.executors import ExecutionResult
from automodel.harness import declared_features
from automodel.interfaces import COMPONENT_FILES, validate_components
from automodel.messages import (
    ENGINEER_OF,
    AnalystFeedback,
    ComponentCode,
    ComponentName,
    ExecutionError,
    Fidelity,
    RunReport,
    TechnicalDesign,
)
from automodel.roles._base import RoleAgent, last_of
from automodel.roles._incumbent import incumbent_files, incumbent_source, knob_diff
from automodel.store import Attempt, AttemptStatus

__all__ = ["ExecutorAgent", "assemble_components"]


def assemble_components(
    messages: Sequence[BaseChatMessage], base: Mapping[str, str]
) -> tuple[dict[str, str], dict[str, str]]:
    """The three files of the next candidate, and who wrote each: ``base`` overlaid with the messages.

    A ``TechnicalDesign`` replaces all three; each ``ComponentCode`` (not a skip) replaces its
    component, newest last.
    """
    files = dict(base)
    authors = {c: "incumbent" for c in files}
    for m in messages:
        if not isinstance(m, StructuredMessage):
            continue
        c = m.content
        if isinstance(c, TechnicalDesign):
            files.update(c.components)
            authors.update({k: c.author or m.source for k in c.components})
        elif isinstance(c, ComponentCode) and c.phase != "skip" and c.code.strip():
            files[c.component] = c.code
            authors[c.component] = c.author or m.source
    return files, authors


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
        self._fidelity: Fidelity = "explore"
        self._warm = False
        self._last_files: dict[str, str] = {}
        self._authors: dict[str, str] = {}
        self._cycle_start = time.time()

    async def save_state(self) -> Mapping[str, Any]:
        return {"target": self._target, "change": self._change, "knobs": self._knobs, "repairs": self._repairs,
                "fidelity": self._fidelity, "warm": self._warm, "last_files": self._last_files,
                "authors": self._authors}

    async def load_state(self, state: Mapping[str, Any]) -> None:
        self._target = str(state.get("target", "architect"))
        self._change = str(state.get("change", ""))
        self._knobs = dict(state.get("knobs", {}))
        self._repairs = int(state.get("repairs", 0))
        self._fidelity = "final" if state.get("fidelity") == "final" else "explore"
        self._warm = bool(state.get("warm", False))
        self._last_files = dict(state.get("last_files", {}))
        self._authors = dict(state.get("authors", {}))
        self._cycle_start = time.time()

    def _begin(self, messages: Sequence[BaseChatMessage]) -> None:
        code = last_of(messages, ComponentCode)
        design = last_of(messages, TechnicalDesign)
        feedback = last_of(messages, AnalystFeedback)
        if isinstance(design, TechnicalDesign) or code is None:
            self._target = "architect"
            self._change = f"first pipeline: {design.summary}" if isinstance(design, TechnicalDesign) else "first pipeline"
            self._knobs, self._repairs, self._fidelity, self._warm = {}, 0, "explore", False
        elif isinstance(code, ComponentCode) and code.phase == "repair":
            self._repairs += 1
            self._change = f"{self._change.split(' [repair')[0]} [repair {self._repairs}: {code.change[:120]}]"
        elif isinstance(code, ComponentCode):
            self._target = ENGINEER_OF[code.component]
            self._change = code.change
            self._knobs, self._repairs = dict(code.knobs), 0
            self._fidelity = feedback.fidelity if isinstance(feedback, AnalystFeedback) else "explore"
            self._warm = bool(feedback.warm_start) if isinstance(feedback, AnalystFeedback) else False

    def _base_files(self, messages: Sequence[BaseChatMessage]) -> dict[str, str]:
        store = self.ctx.store
        code = last_of(messages, ComponentCode)
        if isinstance(code, ComponentCode) and code.phase == "repair" and self._last_files:
            return dict(self._last_files)  # the attempt being repaired
        source = incumbent_source(store)
        if source != "best" and self._target != "architect":
            # No candidate succeeded yet: the change starts from the Architect's design (its knobs on the
            # reference files), never silently from the bare reference. Either way it is a logged fault.
            what = ("the reference files with the Architect's design knobs" if source == "design"
                    else "the bare reference (no design was kept)")
            self._fault("executor", 0, "design_fallback", "no candidate has succeeded yet, so there is no incumbent",
                        f"{self._target}'s change starts from {what}")
            self.note(f"no incumbent yet: {self._target}'s change starts from {what}")
        return incumbent_files(store)

    async def act(self, messages: Sequence[BaseChatMessage], cancellation_token: CancellationToken) -> RunReport | ExecutionError:
        run = self.ctx
        store = run.store
        self._begin(messages)
        base = self._base_files(messages)
        files, authors = assemble_components(messages, base)
        if self._target != "architect":  # history records the knobs actually in the files, not those asked for
            self._knobs = knob_diff(base if self._repairs == 0 else incumbent_files(store), files)
        if self._repairs == 0:
            self._authors = authors
        else:
            self._authors.update({c: a for c, a in authors.items() if a != "incumbent"})
        self._last_files = files
        iteration = store.next_iteration()
        workdir = store.iteration_dir(iteration)
        if workdir.exists():  # left by a run killed mid-attempt
            shutil.rmtree(workdir)
        workdir.mkdir(parents=True)
        for component, code in files.items():
            (workdir / COMPONENT_FILES[component]).write_text(code, encoding="utf-8")
        # Warm start only when the architecture is the incumbent's (same model file).
        best_model = store.best_dir / "model.py"
        warm = (self._warm and best_model.is_file() and (store.best_dir / "checkpoint.pt").is_file()
                and best_model.read_text(encoding="utf-8") == files["model"])
        plan = run.plan()
        budget = plan.candidate_budget_s(self._fidelity)
        (workdir / "candidate.json").write_text(json.dumps(
            {"iteration": iteration, "target": self._target, "change": self._change, "knobs": self._knobs,
             "fidelity": self._fidelity, "budget_s": round(budget, 1), "warm_start": warm, "authors": self._authors},
            indent=1), encoding="utf-8")
        max_repairs = run.settings.max_repairs
        best_before = store.best_val_accuracy()
        features = declared_features(workdir / "data.py")

        issues = validate_components(workdir)
        result: ExecutionResult | None = None
        extract_s = 0.0
        lines: list[str] = []
        boundaries: dict[str, str] = {}
        if issues:
            status, seconds, component = "invalid", 0.0, issues[0].component
            error_type, message = "InterfaceError", "; ".join(str(i) for i in issues[:5])
        else:
            runner = run.runner(candidate_budget_s=budget)
            extraction: ExecutionResult | None = None
            try:
                # The extraction may use what is left of the run, never more (the estimate can be wrong).
                _, extraction = await asyncio.to_thread(runner.ensure_features, workdir, workdir,
                                                        timeout_s=max(1.0, plan.usable_s()), on_event=run.emit)
                extract_s = extraction.duration_s if extraction is not None else 0.0
            except ValueError as exc:  # a malformed or unknown feature set name
                status, seconds, component, error_type, message = "invalid", 0.0, "data", "FeatureError", str(exc)
            else:
                status = "ok"
            if status == "ok" and extraction is not None and not extraction.ok:
                status, seconds, component = "crashed", extraction.duration_s, "data"
                error_type = "FeatureExtractionError"
                message = (f"extracting features {features} failed ({extraction.status}): "
                           f"{extraction.error.message if extraction.error else ''}")
                if extraction.status == "timeout":
                    # Not a code fault: the set does not fit in what is left of the run. The
                    # Analyst makes the next change cheaper; no engineer repair.
                    error_type = "Infeasible"
                    message = (f"extracting features {features} did not finish in the {extraction.duration_s:.0f}s "
                               f"left of the run; choose a cheaper backbone or keep the cached features")
            if status == "ok":
                # Extraction took clock time: plan the training budget again.
                budget = run.plan().candidate_budget_s(self._fidelity)
                runner = run.runner(candidate_budget_s=budget)
                run.emit({"event": "candidate", "iteration": iteration, "target": self._target, "change": self._change,
                          "budget_s": budget, "fidelity": self._fidelity, "warm_start": warm})
                init = store.best_dir / "checkpoint.pt" if warm else None
                result = await asyncio.to_thread(runner.train, workdir, workdir, time_budget_s=budget,
                                                 seed=run.settings.seed, init_checkpoint=init, on_event=run.emit)
                seconds = result.duration_s
                if result.ok and result.result is not None:
                    status, component, error_type, message = "ok", "", "", ""
                else:
                    status = "timeout" if result.status == "timeout" else "crashed"
                    err = result.error
                    component = err.component if err else "harness"
                    error_type = err.error_type if err else result.status
                    message = err.message if err else f"candidate ended with status {result.status}"
                    lines = [str(x) for x in (err.lines if err else [])]
                    boundaries = _boundaries(workdir)
                    blamed = _blame_by_evidence(component, boundaries)
                    if boundaries:
                        message += "\nAt the component boundaries: " + "; ".join(
                            f"{k}: {v}" for k, v in boundaries.items() if k != "suspect")
                    if blamed != component:
                        message += (f"\nThe error was raised in {component}.py, but the evidence points at {blamed}.py: "
                                    f"{boundaries.get('suspect', '')}")
                        self.note(f"{error_type} raised in {component}.py; blamed on {blamed}.py by the boundary shapes")
                        component = blamed
        wall = round(time.time() - self._cycle_start, 1)
        common: dict[str, Any] = {
            "iteration": iteration, "target": self._target, "change": self._change, "knobs": self._knobs,
            "seconds": round(seconds, 1), "fidelity": self._fidelity, "budget_s": round(budget, 1),
            "warm_start": warm, "features": features, "authors": dict(self._authors), "wall_s": wall,
            "extract_s": round(extract_s, 1),
        }
        self._cycle_start = time.time()

        if status == "ok":
            assert result is not None and result.result is not None
            metrics = result.result
            val = float(metrics["val_accuracy"])
            improved = best_before is None or val > best_before
            final_status: AttemptStatus = "improved" if improved else "discarded"
            best_after = val if improved else best_before
            store.record(Attempt(status=final_status, val_accuracy=val, best_val_accuracy=best_after,
                                 train_s=float(metrics.get("train_seconds") or 0.0), **common))
            if improved:
                store.promote(iteration)
            else:
                store.drop_checkpoint(iteration)
            run.update(elapsed_before_s=run.record.get("elapsed_before_s", 0.0))
            return RunReport(
                iteration=iteration, status=final_status, target=self._target, change=self._change,
                val_accuracy=val, best_val_accuracy=best_after,
                epochs=[{k: e.get(k) for k in ("epoch", "train_loss", "val_loss", "val_accuracy", "lr", "seconds")}
                        for e in metrics.get("history", [])],
                per_class_val_accuracy=metrics.get("per_class_val_accuracy") or [],
                stopped_by_budget=bool(metrics.get("stopped_by_budget")), seconds=round(seconds, 1),
                images_per_s=float(metrics.get("images_per_s", 0.0)), fidelity=self._fidelity,
                budget_s=round(budget, 1), warm_start=warm, features=features,
            )

        stop_if_disk_full(store.root, iteration, f"{error_type}: {message}", result)  # the machine's fault: no attempt
        record_status: Literal["invalid", "crashed", "timeout"] = (
            "invalid" if status == "invalid" else "timeout" if status == "timeout" else "crashed"
        )
        store.record(Attempt(status=record_status, component=component or None, error=f"{error_type}: {message}"[:500],
                             best_val_accuracy=best_before, **common))
        # A plan that cannot fit one epoch is not a bug to repair: the Analyst makes it cheaper.
        repairable = status in ("crashed", "invalid") and error_type != "Infeasible" and self._repairs < max_repairs
        if repairable:
            owner = _as_component(component) if component in ENGINEER_OF else _owner_of(self._target)
            return ExecutionError(
                iteration=iteration, component=owner, status=record_status,
                error_type=error_type, message=message[:1500], lines=lines[:12],
                traceback_tail=(result.error.traceback[-1500:] if result and result.error else ""),
                repair_attempt=self._repairs + 1, max_repairs=max_repairs,
            )
        return RunReport(
            iteration=iteration, status=record_status, target=self._target, change=self._change,
            best_val_accuracy=best_before, seconds=round(seconds, 1), error=f"{component}: {error_type}: {message}"[:800],
            log_tail=(result.log_tail[-15:] if result else []), fidelity=self._fidelity, budget_s=round(budget, 1),
            warm_start=warm, features=features,
        )


def _boundaries(workdir: Path) -> dict[str, str]:
    """What the harness saw cross the component boundaries before a crash (``error.json``'s ``boundaries``)."""
    for path in sorted(workdir.glob("*/error.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        found = data.get("boundaries") if isinstance(data, dict) else None
        if isinstance(found, dict):
            return {str(k): str(v) for k, v in found.items()}
    return {}


def _blame_by_evidence(raised_in: str, boundaries: Mapping[str, str]) -> str:
    """The component at fault: the one that raised, unless the boundary shapes point upstream.

    A wrong permute or size in ``data.py`` raises inside ``model.forward`` (or the loss): when the
    harness saw the data transform return a shape other than the one its recipe declared, the
    data file is at fault.
    """
    suspect = boundaries.get("suspect", "")
    if raised_in in ("model", "training") and suspect.startswith("data:"):
        return "data"
    return raised_in


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

