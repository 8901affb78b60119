"""Model faults through whole runs: every role an OpenAI-compatible model on the loopback fake server.

Each case is one real ``automodel run demo`` (a subprocess, through AutoGen's real OpenAI
client) carrying a group of faults on different roles (transport, content, knob values),
whose roles are answered by the seeded good model of ``tests/fake_openai.py``
(``FlakyModel`` with no bad replies), except that the first replies of the named roles are
the injected faults: a request timeout, HTTP 429 with and without ``Retry-After``, three 5xx
in a row (past the retries: the offline expert plays that turn), empty replies, prose without
code or JSON, code for the wrong component, absurd knob values (the Architect's design with
``EPOCHS = 100000``, ``LR = 1e9``, ``INPUT_SIZE = 4096``; engineers writing ``LR = 50``,
``BATCH_SIZE = 1e6``, ``DROPOUT = 1.5``; the Analyst asking for ``LR = 50``).

For each fault the table says what the run did (from ``model_faults.jsonl``: each fault's
kind and action, then whose reply was used), whether the reason was fed back to the model
(content faults: the retry request carries it), the attempts and how many were lost (recorded
as invalid, crashed or timed out; must be 0), and whether the run finished with a valid best
model (:func:`benchmarks.faults.check_run`). ``python benchmarks/faults.py --suite model``
runs it and writes its section of ``benchmarks/results/faults.md``.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "tests") not in sys.path:
    sys.path.insert(0, str(ROOT / "tests"))

from fake_openai import (  # noqa: E402
    FakeOpenAI,
    FlakyModel,
    Reply,
    empty,
    hang,
    rate_limited,
    server_error,
    text,
)

from automodel.experts import reference_source, set_knobs  # noqa: E402

ROLES = ["architect", "data_engineer", "model_engineer", "training_engineer", "analyst", "summarizer"]
MODEL_INFO = {"vision": False, "function_calling": False, "json_output": False, "family": "unknown",
              "structured_output": False}
CLIENT_TIMEOUT_S = 2.0
"""The client's own limit on one request; the timeout case hangs longer."""
RUN_ARGS = ["--iterations", "1", "--time-budget", "300", "--candidate-budget", "15", "--device", "cpu",
            "--threads", "1", "--no-try-out"]  # fmt: skip
"""Two attempts: the first pipeline, then one change asked by the Analyst. Without the try-out every
engineer is asked for its component after the design (a design that passed its try-out is taken as
it is, so the faults planned on the model and training engineers' first replies would never be sent)."""

PROSE = "I would lower the learning rate a little and add some augmentation; that should help the model."


def _code(component: str, **knobs: Any) -> Reply:
    code, _ = set_knobs(reference_source(component), knobs)
    return text(f"```python\n{code}```\nCHANGE: set {knobs}")


def _design(knobs: dict[str, dict[str, Any]]) -> Reply:
    head = json.dumps({"summary": "a small CNN trained long", "rationale": ["digits are small"],
                       "decisions": {"backbone": "small_cnn"}})
    files = {c: set_knobs(reference_source(c), k)[0] for c, k in knobs.items()}
    return text(f"```json\n{head}\n```\n" + "\n".join(f"```python\n# {c}.py\n{code}```" for c, code in files.items()))


def _feedback(**knobs: Any) -> Reply:
    body = {"target": "training_engineer", "diagnosis": "under-trained", "change": "train much longer and faster",
            "expected_effect": "higher accuracy", "knobs": knobs}
    return text(f"```json\n{json.dumps(body)}\n```")


@dataclass
class ModelFaultCase:
    """One run: the first replies of the scripted roles are faults; each row names its fault and roles."""

    name: str
    script: dict[str, list[Reply]]
    rows: list[tuple[str, list[str], bool]]
    """(fault, its roles, whether it is a content fault whose reason can be fed back)."""


def cases() -> list[ModelFaultCase]:
    wrong = text(f"```python\n{reference_source('data')}```\nCHANGE: kept the data file")
    return [
        ModelFaultCase("transport", {
            "architect": [hang(CLIENT_TIMEOUT_S * 2)],
            "data_engineer": [rate_limited(1.0)],
            "model_engineer": [rate_limited(None)],
            "training_engineer": [server_error(500), server_error(502), server_error(503)],
        }, [("request timeout", ["architect"], False), ("HTTP 429 with Retry-After", ["data_engineer"], False),
            ("HTTP 429 without Retry-After", ["model_engineer"], False),
            ("HTTP 5xx, 3 in a row", ["training_engineer"], False)]),
        ModelFaultCase("content", {
            "summarizer": [empty()],
            "analyst": [empty(), text(PROSE)],
            "data_engineer": [text(PROSE)],
            "model_engineer": [wrong],
        }, [("empty reply (the analyst's 2nd: prose)", ["summarizer", "analyst"], True), ("prose only, no code/JSON", ["data_engineer"], True),
            ("code for the wrong component", ["model_engineer"], True)]),
        ModelFaultCase("knobs", {
            "architect": [_design({"data": {"INPUT_SIZE": 4096}, "model": {"ARCH": "small_cnn", "WIDTH": 8},
                                   "training": {"EPOCHS": 100000, "LR": 1e9}})],
            "data_engineer": [_code("data", BATCH_SIZE=1e6, INPUT_SIZE=4096)],
            "model_engineer": [_code("model", DROPOUT=1.5)],
            "training_engineer": [_code("training", LR=50.0, EPOCHS=100000)],
            "analyst": [_feedback(LR=50.0, EPOCHS=100000)],
        }, [("absurd knob values", ["architect", "data_engineer", "model_engineer", "training_engineer", "analyst"],
             True)]),
    ]


@dataclass
class ModelFaultRow:
    """What one fault did in its run."""

    name: str
    run: str
    injected: int = 0
    did: list[str] = field(default_factory=list)
    fed_back: str = "n/a"
    attempts: int = 0
    lost: int = 0
    finished: bool = False
    traceback: bool = False
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0


def _config(path: Path, base_url: str) -> Path:
    spec = {role: {"provider": "OpenAIChatCompletionClient",
                   "config": {"model": role, "base_url": base_url, "api_key_env": "FAKE_OPENAI_KEY",
                              "timeout": CLIENT_TIMEOUT_S, "max_retries": 0, "model_info": MODEL_INFO}}
            for role in ROLES}
    path.write_text(yaml.safe_dump({"roles": spec, "max_retries": 2, "backoff_s": 0.2, "request_timeout_s": 30}))
    return path


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def _what_it_did(role: str, faults: list[dict[str, Any]]) -> str:
    mine = [f for f in faults if f["role"] == role]
    steps = []
    for f in mine:
        if f["kind"] == "fallback":
            steps.append("fallback: the offline expert played the turn")
        elif f["kind"] == "default":
            steps.append("the role's safe default")
        else:
            reason = f" ({f['error'][:90]})" if f["kind"] in ("unusable_reply", "truncated") else ""
            steps.append(f"{f['kind']}{reason} -> {f['action']}")
    if mine and mine[-1]["kind"] not in ("fallback", "default"):
        steps.append("the model's next reply was used")
    return f"{role}: " + "; ".join(steps or ["no fault logged"])


def run_case(case: ModelFaultCase, workdir: Path) -> list[ModelFaultRow]:
    """Run ``case`` once; its rows of the table."""
    from benchmarks.faults import check_run, run_session

    workdir.mkdir(parents=True, exist_ok=True)
    out, cache = workdir / "run", workdir.parent / "cache"
    good = FlakyModel(seed=0, bad_rate=0.0, references={c: reference_source(c) for c in ("data", "model", "training")})
    started = time.monotonic()
    with FakeOpenAI({r: list(replies) for r, replies in case.script.items()}, responder=good) as server:
        config = _config(workdir / "backends.yaml", server.base_url)
        session = run_session(out, cache, resume=False, run_args=[*RUN_ARGS, "--config", str(config)],
                              timeout_s=600)
        left = server.remaining()
        requests = list(server.requests)
    seconds = round(time.monotonic() - started, 1)
    faults = [f for f in _lines(out / "model_faults.jsonl") if f.get("backend") != "executor"]
    history = _lines(out / "history.jsonl")
    check = check_run(out, [])
    problems = list(check.problems)
    if session.returncode != 0:
        problems.append(f"exit {session.returncode}: {session.output.strip()[-300:]}")
    others = sorted({f"{f['role']}:{f['kind']}" for f in faults if f["role"] not in case.script})
    if others:
        problems.append(f"faults of roles not scripted here: {others}")
    rows = []
    for name, roles, content in case.rows:
        row = ModelFaultRow(name, case.name, seconds=seconds, attempts=len(history), problems=list(problems))
        row.injected = sum(len(case.script[r]) - left.get(r, 0) for r in roles)
        row.problems += [f"{r}: {left[r]} fault(s) not delivered (the role was never asked)" for r in roles if left.get(r)]
        row.did = [_what_it_did(r, faults) for r in roles]
        if content:
            fed = []
            for role in roles:
                mine = [q for q in requests if q.model == role]
                k = len(case.script[role])
                fed.append(len(mine) > k and "could not be used" in str(mine[k].messages[-1]["content"]))
            row.fed_back = f"{sum(fed)}/{len(fed)}"
        row.lost = sum(h.get("status") not in ("improved", "discarded") for h in history)
        row.finished = check.finished and check.best_ok and check.recorded_right and session.returncode == 0
        row.traceback = "Traceback" in session.output
        rows.append(row)
    return rows


def run_suite(workdir: Path, only: list[str] | None = None) -> list[ModelFaultRow]:
    rows = []
    for case in cases():
        if only and case.name not in only:
            continue
        for row in run_case(case, workdir / case.name):
            print(f"model fault {row.name!r} (run {row.run}): injected {row.injected}, attempts {row.attempts}, "
                  f"lost {row.lost}, finished {row.finished}, {row.seconds:.0f}s; {row.problems or ''}", flush=True)
            rows.append(row)
    return rows


def render(rows: list[ModelFaultRow], command: str, seconds: float) -> str:
    lines = [
        "## Model faults (LLM backend)",
        "",
        f"Command: `{command}`; {seconds:.0f} s on this machine. One run per group of faults: `automodel run demo "
        f"{' '.join(RUN_ARGS)} --config <every role on the fake server>` (AutoGen's real OpenAI client, client "
        f"timeout {CLIENT_TIMEOUT_S:g} s, 2 retries, backoff 0.2 s) per group: `transport`, `content`, `knobs`; in "
        "each, the named roles' first replies are the faults, then a good model answers (`tests/fake_openai.py`). "
        "Attempts, lost and finished are those of the row's run.",
        "",
        "| fault | run | injected | what the run did | reason fed back | attempts | attempts lost | "
        "finished, valid best |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        did = "<br>".join(d.replace("|", "/") for d in r.did)
        lines.append(f"| {r.name} | {r.run} | {r.injected} | {did} | {r.fed_back} | {r.attempts} | {r.lost} | "
                     f"{'yes' if r.finished else 'NO'} |")
    total = sum(r.injected for r in rows)
    runs = {r.run: r for r in rows}.values()
    lines += ["", f"{total} model faults injected in {len(runs)} runs; attempts lost: {sum(r.lost for r in runs)}; "
              f"runs finished with a valid best model: {sum(r.finished for r in runs)}/{len(runs)}; "
              f"runs that printed a traceback: {sum(r.traceback for r in runs)}; wall time per run: "
              + ", ".join(f"{r.run} {r.seconds:.0f} s" for r in runs) + ".",
              "Attempts lost: attempts recorded as invalid, crashed or timed out. Finished, valid best: exit 0, "
              "`run.json` done, a test score, `best/` is the best improved attempt and its checkpoint loads."]
    problems = sorted({f"- {r.run}: {p}" for r in rows for p in r.problems})
    if problems:
        lines += ["", "Problems:", *problems]
    return "\n".join(lines) + "\n"
