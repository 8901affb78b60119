"""The Executor: assembles the candidate from the messages, runs it in an executor process, reports back.

The messages are the channel: the code a candidate runs is the code the ``ComponentCode``
messages (and the Architect's ``TechnicalDesign``) carry. Any agent that posts a valid
``ComponentCode`` gets its code run; components nobody changed in this attempt come from
the incumbent (``best/``), or, for a repair, from the attempt being repaired.

With ``parallel_candidates`` K > 1 the Analyst's feedback comes in rounds (slot 0..K-1 of K):
the Executor assembles one candidate per slot, trains them all at once, records each as it
ends and posts one ``RunReport`` per candidate, one per turn (``pending``: how many are left).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from autogen_agentchat.messages import BaseChatMessage, StructuredMessage
from autogen_core import CancellationToken
from pydantic import BaseModel

from automodel._environment import stop_if_disk_full
from automodel.executors import ExecutionResult
from automodel.harness import declared_features
from automodel.interfaces import COMPONENT_FILES, validate_components
from automodel.messages import (
    ENGINEER_OF,
    AnalystFeedback,
    ComponentCode,
    ExecutionError,
    Fidelity,
    RunReport,
    TechnicalDesign,
)
from automodel.roles._base import RoleAgent, last_of
from automodel.roles._candidate import (
    Candidate,
    Failure,
    as_component,
    blame_by_evidence,
    crash_boundaries,
    owner_of,
)
from automodel.roles._incumbent import incumbent_files, incumbent_source, knob_diff
from automodel.roles._round import (
    clear_round,
    code_of,
    incumbent_weights,
    queued_result,
    round_segments,
    write_round,
)
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
        self._queue: list[dict[str, Any]] = []
        """Results of the last round of parallel candidates still to be posted, one per turn."""
        self._feedback: dict[str, Any] | None = None
        """The Analyst's request the candidate being run (or repaired) answers."""

    async def save_state(self) -> Mapping[str, Any]:
        return {"target": self._target, "change": self._change, "knobs": self._knobs, "repairs": self._repairs,
                "fidelity": self._fidelity, "warm": self._warm, "last_files": self._last_files,
                "authors": self._authors, "queue": self._queue, "feedback": self._feedback}

    async def load_state(self, state: Mapping[str, Any]) -> None:
        self._target = str(state.get("target", "architect"))
        self._change = str(state.get("change", ""))
        self._knobs = dict(state.get("knobs", {}))
        self._repairs = int(state.get("repairs", 0))
        self._fidelity = "final" if state.get("fidelity") == "final" else "explore"
        self._warm = bool(state.get("warm", False))
        self._last_files = dict(state.get("last_files", {}))
        self._authors = dict(state.get("authors", {}))
        self._queue = [dict(q) for q in state.get("queue", [])]
        feedback = state.get("feedback")
        self._feedback = dict(feedback) if isinstance(feedback, Mapping) else None
        self._cycle_start = time.time()

    def _begin(self, messages: Sequence[BaseChatMessage]) -> None:
        code = last_of(messages, ComponentCode)
        design = last_of(messages, TechnicalDesign)
        feedback = last_of(messages, AnalystFeedback)
        if isinstance(design, TechnicalDesign) or code is None:
            self._target = "architect"
            self._change = f"first pipeline: {design.summary}" if isinstance(design, TechnicalDesign) else "first pipeline"
            self._knobs, self._repairs, self._fidelity, self._warm = {}, 0, "explore", False
            self._feedback = None
        elif isinstance(code, ComponentCode) and code.phase == "repair":
            self._repairs += 1
            self._change = f"{self._change.split(' [repair')[0]} [repair {self._repairs}: {code.change[:120]}]"
        elif isinstance(code, ComponentCode):
            self._target = ENGINEER_OF[code.component]
            self._change = code.change
            self._knobs, self._repairs = dict(code.knobs), 0
            self._fidelity = feedback.fidelity if isinstance(feedback, AnalystFeedback) else "explore"
            self._warm = bool(feedback.warm_start) if isinstance(feedback, AnalystFeedback) else False
            self._feedback = feedback.model_dump(mode="json") if isinstance(feedback, AnalystFeedback) else None

    def _base_files(self, messages: Sequence[BaseChatMessage]) -> dict[str, str]:
        store = self.ctx.store
        code = last_of(messages, ComponentCode)
        if isinstance(code, ComponentCode) and code.phase == "repair" and self._last_files:
            return dict(self._last_files)  # the attempt being repaired
        source = incumbent_source(store)
        if source != "best" and self._target != "architect":
            self._note_design_fallback(f"{self._target}'s change", source)
        return incumbent_files(store)

    def _note_design_fallback(self, what_changes: str, source: str) -> None:
        # No candidate succeeded yet: the change starts from the Architect's design (its knobs on the
        # reference files), never silently from the bare reference. Either way it is a logged fault.
        what = ("the reference files with the Architect's design knobs" if source == "design"
                else "the bare reference (no design was kept)")
        self._fault("executor", 0, "design_fallback", "no candidate has succeeded yet, so there is no incumbent",
                    f"{what_changes} starts from {what}")
        self.note(f"no incumbent yet: {what_changes} starts from {what}")

    async def act(self, messages: Sequence[BaseChatMessage], cancellation_token: CancellationToken) -> RunReport | ExecutionError:
        newest = last_of(messages, BaseModel)
        repair = isinstance(newest, ComponentCode) and newest.phase == "repair"
        if self._queue and not repair:  # the next result of a round already trained
            return self._pop_queued()
        segments = round_segments(messages)
        if segments is not None and any(code_of(segment) is not None for _, segment in segments):
            return await self._run_round(segments)
        out = await self._run_single(messages)
        return out.model_copy(update={"pending": len(self._queue)}) if self._queue else out

    async def _run_single(self, messages: Sequence[BaseChatMessage]) -> RunReport | ExecutionError:
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
        feedback = last_of(messages, AnalystFeedback)
        rerun = feedback.rerun if isinstance(feedback, AnalystFeedback) and self._repairs == 0 else None
        done = {a.iteration for a in store.history()}
        iteration = rerun if rerun is not None and rerun > 0 and rerun not in done else store.next_iteration()
        cand = Candidate(iteration=iteration, workdir=Path(), files=files, target=self._target,
                          change=self._change, knobs=self._knobs, fidelity=self._fidelity, want_warm=self._warm,
                          authors=dict(self._authors), repairs=self._repairs,
                          feedback=AnalystFeedback.model_validate(self._feedback) if self._feedback else None)
        self._write(cand)
        failure = await self._prepare_run(cand)
        result: ExecutionResult | None = None
        if failure is None:
            # Extraction took clock time: plan the training budget again.
            cand.budget = run.plan().candidate_budget_s(cand.fidelity)
            runner = run.runner(candidate_budget_s=cand.budget)
            run.emit({"event": "candidate", "iteration": cand.iteration, "target": cand.target, "change": cand.change,
                      "budget_s": cand.budget, "fidelity": cand.fidelity, "warm_start": cand.warm})
            init = store.best_dir / "checkpoint.pt" if cand.warm else None
            cand.started = time.time()
            result = await asyncio.to_thread(runner.train, cand.workdir, cand.workdir, time_budget_s=cand.budget,
                                             seed=run.settings.seed, init_checkpoint=init, on_event=run.emit)
        wall = round(time.time() - self._cycle_start, 1)
        self._cycle_start = time.time()
        return self._conclude(cand, failure, result, wall)

    # --- one candidate: write, check, conclude (shared by single attempts and rounds) -------------
    def _write(self, cand: Candidate) -> None:
        """The candidate's folder: its three files and candidate.json (what it tests, its planned budget)."""
        store = self.ctx.store
        cand.workdir = store.iteration_dir(cand.iteration)
        if cand.workdir.exists():  # left by a run killed mid-attempt
            shutil.rmtree(cand.workdir)
        cand.workdir.mkdir(parents=True)
        for component, code in cand.files.items():
            (cand.workdir / COMPONENT_FILES[component]).write_text(code, encoding="utf-8")
        # Warm start only when the architecture is the incumbent's (same model file).
        best_model = store.best_dir / "model.py"
        cand.warm = (cand.want_warm and best_model.is_file() and (store.best_dir / "checkpoint.pt").is_file()
                     and best_model.read_text(encoding="utf-8") == cand.files["model"])
        cand.budget = self.ctx.plan().candidate_budget_s(cand.fidelity)
        cand.features = declared_features(cand.workdir / "data.py")
        (cand.workdir / "candidate.json").write_text(json.dumps(
            {"iteration": cand.iteration, "target": cand.target, "change": cand.change, "knobs": cand.knobs,
             "fidelity": cand.fidelity, "budget_s": round(cand.budget, 1), "warm_start": cand.warm,
             "authors": cand.authors}, indent=1), encoding="utf-8")

    async def _prepare_run(self, cand: Candidate) -> Failure | None:
        """Validate the files and extract the feature set they name (once per run); None when it may train."""
        issues = validate_components(cand.workdir)
        if issues:
            return Failure("invalid", 0.0, issues[0].component, "InterfaceError", "; ".join(str(i) for i in issues[:5]))
        run = self.ctx
        runner = run.runner(candidate_budget_s=cand.budget)
        try:
            # The extraction may use what is left of the run, never more (the estimate can be wrong).
            _, extraction = await asyncio.to_thread(runner.ensure_features, cand.workdir, cand.workdir,
                                                    timeout_s=max(1.0, run.plan().usable_s()), on_event=run.emit)
        except ValueError as exc:  # a malformed or unknown feature set name
            return Failure("invalid", 0.0, "data", "FeatureError", str(exc))
        cand.extract_s = extraction.duration_s if extraction is not None else 0.0
        if extraction is not None and extraction.status == "timeout":
            # Not a code fault: the set does not fit in what is left of the run. The Analyst makes
            # the next change cheaper; no engineer repair.
            return Failure("crashed", extraction.duration_s, "data", "Infeasible",
                           f"extracting features {cand.features} did not finish in the {extraction.duration_s:.0f}s "
                           f"left of the run; choose a cheaper backbone or keep the cached features")
        if extraction is not None and not extraction.ok:
            return Failure("crashed", extraction.duration_s, "data", "FeatureExtractionError",
                            f"extracting features {cand.features} failed ({extraction.status}): "
                            f"{extraction.error.message if extraction.error else ''}")
        return None

    def _conclude(self, cand: Candidate, failure: Failure | None, result: ExecutionResult | None,
                  wall: float) -> RunReport | ExecutionError:
        """Record the attempt (promote it when it beats the best now), and say how it went."""
        run = self.ctx
        store = run.store
        lines: list[str] = []
        status: str
        if failure is not None:
            status, seconds, component, error_type, message = (failure.status, failure.seconds, failure.component,
                                                               failure.error_type, failure.message)
        else:
            assert result is not None
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
                boundaries = crash_boundaries(cand.workdir)
                blamed = blame_by_evidence(component, boundaries)
                if boundaries:
                    message += "\nAt the component boundaries: " + "; ".join(
                        f"{k}: {v}" for k, v in boundaries.items() if k != "suspect")
                if blamed != component:
                    message += (f"\nThe error was raised in {component}.py, but the evidence points at {blamed}.py: "
                                f"{boundaries.get('suspect', '')}")
                    self.note(f"{error_type} raised in {component}.py; blamed on {blamed}.py by the boundary shapes")
                    component = blamed
        common: dict[str, Any] = {
            "iteration": cand.iteration, "target": cand.target, "change": cand.change, "knobs": cand.knobs,
            "seconds": round(seconds, 1), "fidelity": cand.fidelity, "budget_s": round(cand.budget, 1),
            "warm_start": cand.warm, "features": cand.features, "authors": dict(cand.authors), "wall_s": wall,
            "extract_s": round(cand.extract_s, 1), "started": cand.started,
        }
        best_before = store.best_val_accuracy()
        if status == "ok":
            assert result is not None and result.result is not None
            metrics = result.result
            val = float(metrics["val_accuracy"])
            improved = best_before is None or val > best_before
            final_status: AttemptStatus = "improved" if improved else "discarded"
            best_after = val if improved else best_before
            confused = list(metrics.get("confused_pairs") or [])
            store.record(Attempt(status=final_status, val_accuracy=val, best_val_accuracy=best_after,
                                 train_s=float(metrics.get("train_seconds") or 0.0), confused_pairs=confused,
                                 **common))
            if improved:
                store.promote(cand.iteration)
            else:
                store.drop_checkpoint(cand.iteration)
            run.update(elapsed_before_s=run.record.get("elapsed_before_s", 0.0))
            return RunReport(
                iteration=cand.iteration, status=final_status, target=cand.target, change=cand.change,
                val_accuracy=val, best_val_accuracy=best_after,
                epochs=[{k: e.get(k) for k in ("epoch", "train_loss", "val_loss", "val_accuracy", "lr", "seconds")}
                        for e in metrics.get("history", [])],
                per_class_val_accuracy=metrics.get("per_class_val_accuracy") or [], confused_pairs=confused,
                stopped_by_budget=bool(metrics.get("stopped_by_budget")), seconds=round(seconds, 1),
                images_per_s=float(metrics.get("images_per_s", 0.0)), fidelity=cand.fidelity,
                budget_s=round(cand.budget, 1), warm_start=cand.warm, features=cand.features,
            )

        stop_if_disk_full(store.root, cand.iteration, f"{error_type}: {message}", result)  # the machine's fault: no attempt
        record_status: Literal["invalid", "crashed", "timeout"] = (
            "invalid" if status == "invalid" else "timeout" if status == "timeout" else "crashed"
        )
        store.record(Attempt(status=record_status, component=component or None, error=f"{error_type}: {message}"[:500],
                             best_val_accuracy=best_before, **common))
        # A plan that cannot fit one epoch is not a bug to repair: the Analyst makes it cheaper.
        max_repairs = run.settings.max_repairs
        repairable = status in ("crashed", "invalid") and error_type != "Infeasible" and cand.repairs < max_repairs
        if repairable:
            owner = as_component(component) if component in ENGINEER_OF else owner_of(cand.target)
            return ExecutionError(
                iteration=cand.iteration, component=owner, status=record_status,
                error_type=error_type, message=message[:1500], lines=lines[:12],
                traceback_tail=(result.error.traceback[-1500:] if result and result.error else ""),
                repair_attempt=cand.repairs + 1, max_repairs=max_repairs, feedback=cand.feedback,
            )
        return RunReport(
            iteration=cand.iteration, status=record_status, target=cand.target, change=cand.change,
            best_val_accuracy=best_before, seconds=round(seconds, 1), error=f"{component}: {error_type}: {message}"[:800],
            log_tail=(result.log_tail[-15:] if result else []), fidelity=cand.fidelity, budget_s=round(cand.budget, 1),
            warm_start=cand.warm, features=cand.features,
        )

    # --- a round of parallel candidates -------------------------------------------------------------
    async def _run_round(self, segments: list[tuple[AnalystFeedback, list[BaseChatMessage]]]) -> RunReport | ExecutionError:
        """Train the round's candidates at once; record each as it ends; post the first result, queue the rest.

        Each candidate is the incumbent overlaid with the code its engineer wrote for its slot.
        They share the machine: the plan's candidate budget each (wall clock, all at once) and
        the cores divided among them (``threads``), one GPU slot each (``--gpus``). A candidate
        is recorded (and promoted when it beats the best *at that moment*) as soon as it ends,
        so after a kill only the unfinished ones are run again (``round.json``).
        """
        run = self.ctx
        store = run.store
        base = incumbent_files(store)
        if incumbent_source(store) != "best":
            self._note_design_fallback("this round's changes", incumbent_source(store))
        taken = {a.iteration for a in store.history()}
        reruns = {fb.rerun for fb, _ in segments if fb.rerun is not None and fb.rerun not in taken}
        next_free = max(taken | reruns | {0}) + 1
        cands: list[Candidate] = []
        for fb, segment in segments:
            code = code_of(segment)
            if code is None:
                continue  # its engineer could not make the change
            files, authors = assemble_components(segment, base)
            if fb.rerun is not None and fb.rerun in reruns:
                iteration = fb.rerun
                reruns.discard(fb.rerun)
            else:
                iteration, next_free = next_free, next_free + 1
            cands.append(Candidate(iteration=iteration, workdir=Path(), files=files, target=ENGINEER_OF[code.component],
                                    change=code.change, knobs=knob_diff(base, files), fidelity=fb.fidelity,
                                    want_warm=fb.warm_start, authors=authors, feedback=fb))
        write_round(store, [(c.iteration, c.feedback) for c in cands if c.feedback is not None])
        for cand in cands:
            self._write(cand)
        outcomes: list[tuple[Candidate, RunReport | ExecutionError]] = []
        ready: list[Candidate] = []
        for cand in cands:  # one after another: two candidates never extract the same features at once
            failure = await self._prepare_run(cand)
            if failure is None:
                ready.append(cand)
            else:
                outcomes.append((cand, self._conclude(cand, failure, None, round(time.time() - self._cycle_start, 1))))
        errors = await self._train_round(ready, outcomes)
        if errors:
            raise errors[0]  # the executor itself failed (not a candidate): after every other one was recorded
        clear_round(store)
        self._cycle_start = time.time()
        slot = {id(c): i for i, c in enumerate(cands)}
        outcomes.sort(key=lambda o: (isinstance(o[1], ExecutionError), slot[id(o[0])]))  # repairs after the reports
        self._queue = [queued_result(c, msg) for c, msg in outcomes]
        self.note(f"trained {len(cands)} candidates at once: "
                  + ", ".join(f"#{c.iteration} {getattr(m, 'status', '?')}" for c, m in outcomes))
        return self._pop_queued()

    async def _train_round(self, ready: list[Candidate],
                           outcomes: list[tuple[Candidate, RunReport | ExecutionError]]) -> list[BaseException]:
        """Train ``ready`` at once; conclude each as it ends (into ``outcomes``); the executor's own errors."""
        if not ready:
            return []
        run = self.ctx
        store = run.store
        n = len(ready)
        budget = run.plan().candidate_budget_s("explore")  # after any extraction
        cores = int(run.record.get("environment", {}).get("cpu_count") or os.cpu_count() or 1)
        threads = run.settings.threads or max(1, cores // n)
        lock = threading.Lock()

        def emitter(iteration: int) -> Callable[[dict[str, Any]], None]:
            def emit(event: dict[str, Any]) -> None:
                with lock:  # candidates' threads report at once; the display takes one event at a time
                    run.emit({**event, "iteration": iteration})
            return emit

        async def train(index: int, cand: Candidate) -> ExecutionResult:
            cand.budget = budget if cand.fidelity == "explore" else run.plan().candidate_budget_s(cand.fidelity)
            runner = run.runner(candidate_budget_s=cand.budget, threads=threads, candidate=index, of=n)
            run.emit({"event": "candidate", "iteration": cand.iteration, "target": cand.target, "change": cand.change,
                      "budget_s": cand.budget, "fidelity": cand.fidelity, "warm_start": cand.warm,
                      "slot": index, "parallel": n, "threads": threads})
            init = incumbent_weights(store.best_dir, cand.workdir) if cand.warm else None
            cand.started = time.time()
            try:
                return await asyncio.to_thread(runner.train, cand.workdir, cand.workdir, time_budget_s=cand.budget,
                                               seed=run.settings.seed, init_checkpoint=init,
                                               on_event=emitter(cand.iteration))
            finally:
                if init is not None:
                    init.unlink(missing_ok=True)

        tasks: dict[asyncio.Future[ExecutionResult], Candidate] = {
            asyncio.ensure_future(train(i, c)): c for i, c in enumerate(ready)}
        errors: list[BaseException] = []
        waiting: set[asyncio.Future[ExecutionResult]] = set(tasks)
        while waiting:
            finished, waiting = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            for task in finished:
                cand = tasks[task]
                exc = task.exception()
                if exc is not None:
                    errors.append(exc)
                    continue
                wall = round(time.time() - self._cycle_start, 1)
                outcomes.append((cand, self._conclude(cand, None, task.result(), wall)))
        return errors

    def _pop_queued(self) -> RunReport | ExecutionError:
        """Post the next result of the round; a failure to repair makes its candidate the one being repaired."""
        item = self._queue.pop(0)
        if item["kind"] == "error":
            ctx = item["context"]
            self._target, self._change, self._knobs = str(ctx["target"]), str(ctx["change"]), dict(ctx["knobs"])
            self._repairs, self._fidelity, self._warm = 0, "explore", bool(ctx["warm"])
            self._last_files, self._authors = dict(ctx["files"]), dict(ctx["authors"])
            self._feedback = item["message"].get("feedback")
            return ExecutionError.model_validate({**item["message"], "pending": len(self._queue)})
        return RunReport.model_validate({**item["message"], "pending": len(self._queue)})
