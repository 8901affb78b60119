"""A round of parallel candidates on disk: what the Executor is training, so a killed run re-runs the rest.

With ``parallel_candidates`` K > 1 the Executor writes ``round.json`` before it starts the
round's candidates: one entry per candidate, its iteration and the Analyst's feedback that
asked for it. Each candidate is recorded in ``history.jsonl`` when it ends; once all are,
the file is removed. A run killed in between resumes with the file still there: the
Analyst proposes the candidates that have no history line again, first in the next round
(``AnalystFeedback.rerun``), and the Executor runs each under its old iteration number.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import structlog
from autogen_agentchat.messages import BaseChatMessage, StructuredMessage

from automodel._io import atomic_write_json
from automodel.messages import AnalystFeedback, ComponentCode, ExecutionError, RunReport
from automodel.roles._candidate import Candidate
from automodel.store import RunStore

__all__ = ["ROUND_FILE", "clear_round", "code_of", "incumbent_weights", "queued_result", "round_segments",
           "unfinished_round", "write_round"]

ROUND_FILE = "round.json"

log = structlog.get_logger(__name__)


def write_round(store: RunStore, entries: list[tuple[int, AnalystFeedback]]) -> None:
    """Record the round about to train: (iteration, the feedback that asked for it) per candidate."""
    atomic_write_json(store.root / ROUND_FILE, {"candidates": [
        {"iteration": iteration, "feedback": feedback.model_dump(mode="json")} for iteration, feedback in entries
    ]})


def clear_round(store: RunStore) -> None:
    """Every candidate of the round is in the history: nothing is left to re-run."""
    (store.root / ROUND_FILE).unlink(missing_ok=True)


def unfinished_round(store: RunStore) -> list[AnalystFeedback]:
    """The feedback of each candidate of a killed round that never reached the history, marked ``rerun``."""
    path = store.root / ROUND_FILE
    try:
        data: Any = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:  # written atomically, so only a hand edit gets here
        log.warning("round_file_unreadable", path=str(path), error=str(exc))
        return []
    done = {a.iteration for a in store.history()}
    out = []
    for entry in data.get("candidates", []) if isinstance(data, dict) else []:
        try:
            iteration = int(entry["iteration"])
            feedback = AnalystFeedback.model_validate({**entry["feedback"], "slot": 0, "of": 1})
        except (KeyError, TypeError, ValueError) as exc:
            log.warning("round_entry_unreadable", path=str(path), error=str(exc))
            continue
        if iteration not in done:
            out.append(feedback.model_copy(update={"rerun": iteration}))
    return out


def round_segments(messages: Sequence[BaseChatMessage]) -> list[tuple[AnalystFeedback, list[BaseChatMessage]]] | None:
    """The changes of the newest round of parallel candidates in ``messages``: each slot's feedback and
    the engineers' messages that answered it; None when the newest feedback is not part of a round."""
    segments: list[tuple[AnalystFeedback, list[BaseChatMessage]]] = []
    for m in messages:
        content = m.content if isinstance(m, StructuredMessage) else None
        if isinstance(content, AnalystFeedback):
            if content.of <= 1:
                segments = []
                continue
            if content.slot == 0:
                segments = []
            segments.append((content, []))
        elif segments and isinstance(content, ComponentCode):
            segments[-1][1].append(m)
    return segments or None


def code_of(segment: Sequence[BaseChatMessage]) -> ComponentCode | None:
    """The newest real change (not a skip) among a slot's messages."""
    code = None
    for m in segment:
        content = m.content if isinstance(m, StructuredMessage) else None
        if isinstance(content, ComponentCode) and content.phase != "skip" and content.code.strip():
            code = content
    return code


def queued_result(cand: Candidate, message: RunReport | ExecutionError) -> dict[str, Any]:
    """A result waiting to be posted, with what a repair of its candidate needs (saved with the team state)."""
    return {"kind": "error" if isinstance(message, ExecutionError) else "report",
            "message": message.model_dump(mode="json"),
            "context": {"target": cand.target, "change": cand.change, "knobs": cand.knobs, "warm": cand.want_warm,
                        "files": cand.files, "authors": cand.authors}}


def incumbent_weights(best_dir: Path, workdir: Path) -> Path:
    """The best checkpoint as this candidate's own file: a sibling that ends first may replace ``best/``."""
    src, dst = best_dir / "checkpoint.pt", workdir / "incumbent.pt"
    dst.unlink(missing_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)
    return dst
