"""Fault injection against the real orchestrator: kill -9, a full disk, a dataset that changes, a faulty LLM.

Each scenario runs ``automodel run demo`` as a subprocess with small budgets and injects
faults, one per session, chained on one run directory: a ``kill -9`` of the orchestrator
at a chosen moment (during a model call, while training, while writing a history line,
between promoting ``best/`` and its history line, in the middle of swapping ``best/``,
while scoring the final model) or at a random time; a full disk (a small tmpfs filled
while the run writes); source files that vanish, turn corrupt or appear after the data was
prepared. After each fault ``--resume`` continues; the last session must finish the run.

What is checked afterwards (:func:`check_run`): every history line seen after any fault is
still there, unchanged (results lost must be 0); no iteration twice; ``best/`` names an
``improved`` iteration whose folder exists, holds the best validation score, and its
checkpoint loads with ``torch.load``; statuses agree with the scores (improved iff better
than every earlier one); no half-done promotion left; ``run.json`` says ``done`` and
``final.json`` has a test score.

A moment inside the orchestrator is hit exactly by running it through this file's
``orchestrate`` mode, which wraps one function so that the process SIGKILLs itself there
(the same signal an outside ``kill -9`` sends); outside moments (training, random times)
are real ``kill -9`` from this process. The disk is a real tmpfs (``mount -t tmpfs``, root
needed; without it the disk-full scenario is reported as not run).

    python benchmarks/faults.py                 # both suites: 20 kills, disk full, data faults; model faults
    python benchmarks/faults.py --suite process --kills 5   # fewer kill moments
    python benchmarks/faults.py --suite model   # faults of the LLM backend (benchmarks/faults_model.py, ~5 min)

Writes ``benchmarks/results/faults.md`` (each suite its own section). The CI version is ``tests/faults/`` (``pytest -m faults``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "faults.md"
RUN_ARGS = ["--iterations", "3", "--time-budget", "75", "--candidate-budget", "5", "--device", "cpu",
            "--threads", "1"]  # fmt: skip
"""Small budgets: three or four attempts of a few seconds each on the digits demo (the team stops
when less than 35 s of the time budget is left)."""

POINTS = ("llm", "history", "promote", "swap", "final", "enospc")
"""Moments inside the orchestrator (see :func:`install_point`)."""
OUTSIDE = ("training", "random")
"""Moments hit from outside with a real ``kill -9``."""


# ------------------------------------------------------------------ inside the orchestrator


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _patch(owner: Any, name: str, replacement: Any) -> None:
    setattr(owner, name, replacement)


def install_point(point: str, nth: int) -> None:
    """Make this process SIGKILL itself at the ``nth`` time it reaches ``point``."""
    from automodel.experts._client import OfflineExpertClient
    from automodel.harness import CandidateRunner
    from automodel.store import RunStore
    from automodel.store import _store as store_module

    calls = {"n": 0}

    def due() -> bool:
        calls["n"] += 1
        return calls["n"] == nth

    if point == "llm":
        create = OfflineExpertClient.create

        async def create_then_die(self: Any, *args: Any, **kwargs: Any) -> Any:
            if due():
                _die()
            return await create(self, *args, **kwargs)

        _patch(OfflineExpertClient, "create", create_then_die)
    elif point == "history":
        append = store_module.append_line

        def torn_append(path: Any, line: str) -> None:
            if Path(path).name == "history.jsonl" and due():
                with open(path, "ab") as fh:  # half a line reaches the disk, then the process dies
                    fh.write(line.encode()[: len(line) // 2])
                    fh.flush()
                    os.fsync(fh.fileno())
                _die()
            append(path, line)

        _patch(store_module, "append_line", torn_append)
    elif point == "promote":
        promote = RunStore.promote

        def promote_then_die(self: RunStore, iteration: int) -> None:
            promote(self, iteration)
            if due():
                _die()

        _patch(RunStore, "promote", promote_then_die)
    elif point == "swap":
        swap = RunStore._swap_best

        def half_swap(self: RunStore, new: Path) -> None:
            if due():  # best.new is complete; the old best/ (if any) is moved aside, the new one not in yet
                if self.best_dir.exists():
                    store_module.durable_replace(self.best_dir, self.root / "best.old")
                _die()
            swap(self, new)

        _patch(RunStore, "_swap_best", half_swap)
    elif point == "final":
        predict = CandidateRunner.predict

        def predict_and_die(self: CandidateRunner, *args: Any, **kwargs: Any) -> Any:
            if due():
                threading.Timer(1.0, _die).start()
            return predict(self, *args, **kwargs)

        _patch(CandidateRunner, "predict", predict_and_die)
    elif point == "enospc":  # the disk-full fallback without root: every later write in the run dir fails
        append_first = store_module.append_line

        def append_then_fill(path: Any, line: str) -> None:
            append_first(path, line)
            if Path(path).name == "history.jsonl" and due():
                _refuse_writes(Path(path).resolve().parent)

        _patch(store_module, "append_line", append_then_fill)
    else:
        raise SystemExit(f"unknown point {point!r}; choose one of {', '.join(POINTS)}")


def _refuse_writes(root: Path) -> None:
    """From now on, opening a file under ``root`` for writing fails with ENOSPC (an injected full disk)."""
    import builtins
    import errno

    real_open, real_os_open = builtins.open, os.open
    prefix = str(root)

    def full(path: Any) -> OSError:
        return OSError(errno.ENOSPC, "No space left on device (injected)", str(path))

    def guarded_open(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if (
            isinstance(file, str | os.PathLike)
            and str(Path(file).resolve()).startswith(prefix)
            and (set(mode) & set("wax+"))
        ):
            raise full(file)
        return real_open(file, mode, *args, **kwargs)

    def guarded_os_open(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        writing = flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND)
        if writing and str(Path(path).resolve()).startswith(prefix):
            raise full(path)
        return real_os_open(path, flags, *args, **kwargs)

    _patch(builtins, "open", guarded_open)
    _patch(os, "open", guarded_os_open)


def orchestrate(argv: list[str]) -> int:
    """``faults.py orchestrate [--point P --nth N] -- <automodel CLI args>``."""
    parser = argparse.ArgumentParser(prog="faults.py orchestrate")
    parser.add_argument("--point", default=None)
    parser.add_argument("--nth", type=int, default=1)
    parser.add_argument("cli", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    if args.point:
        install_point(args.point, args.nth)
    from automodel.cli import main

    return main([a for a in args.cli if a != "--"])


# ------------------------------------------------------------------ driving sessions


@dataclass
class Session:
    """One orchestrator process and what happened to it."""

    fault: str
    returncode: int | None = None
    fired: bool = False
    seconds: float = 0.0
    output: str = ""
    orphans: int = 0
    orphan_cmds: list[str] = field(default_factory=list)
    """Command lines of the orphans (what outlived the kill)."""


def _env(cache: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "AUTOMODEL_CACHE": str(cache), "COLUMNS": "200",
            "HF_HUB_OFFLINE": "1"}  # fmt: skip


def _reap_orphans(out: Path, wait_s: float = 30.0, found: list[str] | None = None) -> int:
    """Candidate processes of ``out`` still alive ``wait_s`` after their orchestrator was killed (then killed).

    Processes that die within the wait (a harness ends with its parent: ``PR_SET_PDEATHSIG`` or the
    sandbox's die-with-parent) are not orphans; only those the benchmark itself had to kill count.
    """
    marker = str(out).encode()

    def alive() -> list[int]:
        pids = []
        for proc in Path("/proc").iterdir():
            if proc.name.isdigit() and int(proc.name) != os.getpid():
                with contextlib.suppress(OSError):
                    if marker in (proc / "cmdline").read_bytes():
                        pids.append(int(proc.name))
        return pids

    deadline = time.monotonic() + wait_s
    while alive() and time.monotonic() < deadline:
        time.sleep(0.2)
    survivors = alive()
    for pid in survivors:
        if found is not None:
            with contextlib.suppress(OSError):
                cmd = (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ")
                found.append(f"pid {pid}: {cmd.decode(errors='replace')[:160]}")
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    return len(survivors)


def run_session(
    out: Path,
    cache: Path,
    *,
    resume: bool,
    point: str | None = None,
    nth: int = 1,
    kill_when: Callable[[str, float], bool] | None = None,
    on_line: Callable[[str], None] | None = None,
    timeout_s: float = 240.0,
    run_args: list[str] | None = None,
) -> Session:
    """Run one orchestrator session on ``out``; ``kill_when(line, elapsed)`` sends ``kill -9`` from outside."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "orchestrate"]
    if point:
        cmd += ["--point", point, "--nth", str(nth)]
    cmd += ["--", "run", "demo", "--out", str(out), *(run_args or RUN_ARGS)] + (
        ["--resume"] if resume else []
    )
    session = Session(fault=point or ("outside" if kill_when else "none"))
    started = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env(cache),
                            cwd=REPO, start_new_session=True)  # fmt: skip
    lines: list[str] = []
    killed = threading.Event()
    killing = threading.Lock()

    def kill() -> None:
        # Under the lock, so that the session cannot end (and the next one, whose command line holds the
        # same run directory, cannot start) while this kill still looks for its orphans.
        with killing:
            if not killed.is_set() and proc.poll() is None:
                killed.set()
                proc.send_signal(signal.SIGKILL)  # re-checks that it is not reaped yet
                # Orphans would hold the output pipe open.
                session.orphans += _reap_orphans(out, wait_s=10.0, found=session.orphan_cmds)

    def watch_clock() -> None:
        while proc.poll() is None and not killed.is_set():
            if kill_when is not None and kill_when("", time.monotonic() - started):
                kill()
            time.sleep(0.1)

    clock = threading.Thread(target=watch_clock, daemon=True)
    clock.start()
    timer = threading.Timer(timeout_s, kill)
    timer.start()
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line)
        if on_line is not None:
            on_line(line)
        if kill_when is not None and kill_when(line, time.monotonic() - started):
            kill()
    proc.wait()
    timer.cancel()
    clock.join()
    with killing:  # a kill in flight (the timer's) has finished reaping
        pass
    session.returncode = proc.returncode
    session.fired = proc.returncode == -signal.SIGKILL
    session.seconds = round(time.monotonic() - started, 1)
    session.output = "".join(lines)
    session.orphans += _reap_orphans(out, found=session.orphan_cmds)
    return session


# ------------------------------------------------------------------ checking a run directory


def history_lines(out: Path) -> list[dict[str, Any]]:
    """The whole (parseable) lines of ``history.jsonl``."""
    path = out / "history.jsonl"
    if not path.is_file():
        return []
    records = []
    for raw in path.read_text(encoding="utf-8", errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            records.append(json.loads(raw))
    return [r for r in records if isinstance(r, dict) and "iteration" in r]


def _key(line: dict[str, Any]) -> tuple[Any, ...]:
    return (line["iteration"], line["status"], line.get("val_accuracy"), line.get("change"))


@dataclass
class Check:
    """What :func:`check_run` found in a finished run directory."""

    finished: bool = False
    status_done: bool = False
    lost: int = 0
    duplicates: int = 0
    best_ok: bool = False
    statuses_ok: bool = False
    leftovers: list[str] = field(default_factory=list)
    attempts: int = 0
    disk_full_attempts: int = 0
    """Attempts recorded as failures because the disk was full (must be 0: a full disk is not the code's fault)."""
    problems: list[str] = field(default_factory=list)

    @staticmethod
    def combine(checks: list[Check]) -> Check:
        """One check for several run directories: all must be right; losses and problems add up."""
        out = Check(finished=all(c.finished for c in checks), status_done=all(c.status_done for c in checks),
                    best_ok=all(c.best_ok for c in checks), statuses_ok=all(c.statuses_ok for c in checks))  # fmt: skip
        for c in checks:
            out.lost += c.lost
            out.duplicates += c.duplicates
            out.attempts += c.attempts
            out.disk_full_attempts += c.disk_full_attempts
            out.leftovers += c.leftovers
            out.problems += c.problems
        return out

    @property
    def recorded_right(self) -> bool:
        return (
            self.status_done
            and self.best_ok
            and self.statuses_ok
            and not self.duplicates
            and not self.leftovers
        )


_DISK_FULL = re.compile(r"Errno 28|No space left", re.IGNORECASE)


def check_run(out: Path, seen: list[dict[str, Any]]) -> Check:
    """Check a run directory after its last session against every history line ``seen`` earlier."""
    import torch

    check = Check()
    final_lines = history_lines(out)
    check.attempts = len(final_lines)
    keys = {_key(line) for line in final_lines}
    lost = {_key(line) for line in seen} - keys
    check.lost = len(lost)
    if lost:
        check.problems.append(f"lost history lines: {sorted(lost, key=str)[:3]}")
    check.disk_full_attempts = sum(bool(_DISK_FULL.search(str(line.get("error") or ""))) for line in final_lines)
    if check.disk_full_attempts:
        check.problems.append(f"{check.disk_full_attempts} attempt(s) recorded as failed because the disk was full")
    iterations = [line["iteration"] for line in final_lines]
    check.duplicates = len(iterations) - len(set(iterations))
    run = json.loads((out / "run.json").read_text()) if (out / "run.json").is_file() else {}
    final = json.loads((out / "final.json").read_text()) if (out / "final.json").is_file() else {}
    check.status_done = run.get("status") == "done"
    check.finished = final.get("best_val_accuracy") is not None and "test_accuracy" in final
    check.leftovers = [n for n in ("promotion.json", "best.new", "best.old") if (out / n).exists()]
    best, ok = -1.0, True
    for line in final_lines:
        val = line.get("val_accuracy")
        better = val is not None and float(val) > best
        if (line["status"] == "improved") != better:
            ok = False
            check.problems.append(
                f"iteration {line['iteration']} is {line['status']} with val {val} (best {best})"
            )
        if better and val is not None:
            best = float(val)
    check.statuses_ok = ok
    try:
        best_it = int((out / "best" / "ITERATION").read_text())
        line = next(x for x in final_lines if x["iteration"] == best_it)
        metrics = json.loads((out / "best" / "metrics.json").read_text())
        torch.load(out / "best" / "checkpoint.pt", map_location="cpu", weights_only=False)
        check.best_ok = (line["status"] == "improved" and (out / "iterations" / f"{best_it:03d}").is_dir()
                         and metrics["val_accuracy"] == best == line["val_accuracy"])  # fmt: skip
        if not check.best_ok:
            check.problems.append(f"best/ is iteration {best_it} ({line['status']}, {metrics['val_accuracy']}), "
                                  f"history's best is {best}")  # fmt: skip
    except (OSError, ValueError, StopIteration, KeyError, RuntimeError) as exc:
        check.problems.append(f"best/ unusable: {type(exc).__name__}: {exc}")
    return check


# ------------------------------------------------------------------ scenarios


@dataclass
class Outcome:
    """Faults of one kind across scenarios: the table's row."""

    kind: str
    injected: int = 0
    contained: int = 0
    recorded: int = 0
    lost: int = 0
    orphans: int = 0
    notes: list[str] = field(default_factory=list)


@dataclass
class Scenario:
    """A chain of faults on one run directory, then clean resumes until the run finishes."""

    name: str
    faults: list[tuple[str, dict[str, Any]]]
    """(kind, options): kind is a point, ``training``, ``random``, ``disk_full`` or ``data``."""
    disk: str | None = None
    """Size of a tmpfs that holds the run directory (needed by ``disk_full``)."""
    run_args: list[str] = field(default_factory=lambda: list(RUN_ARGS))
    sessions: list[Session] = field(default_factory=list)
    check: Check | None = None
    segment_checks: list[Check] = field(default_factory=list)
    """One check per run directory (a fault that missed its moment starts a fresh one)."""
    errors: list[str] = field(default_factory=list)


def _training_killer(epoch: str = "epoch 1/") -> Callable[[str, float], bool]:
    return lambda line, _t: epoch in line


def _random_killer(at_s: float) -> Callable[[str, float], bool]:
    return lambda _line, t: t >= at_s


def _damage_dataset(cache: Path, rng: random.Random) -> str:
    """Files vanish, turn corrupt, appear; the labels CSV gains rows without images."""
    root = next(cache.rglob("train.csv")).parent
    images = sorted((root / "train").glob("*.png"))
    picked = rng.sample(images, 40)
    for p in picked[:20]:
        p.unlink()
    for p in picked[20:]:
        p.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage")
    (root / "train" / "stray.png").write_bytes(b"not an image")
    with (root / "train.csv").open("a", encoding="utf-8") as fh:
        fh.write("ghost_0001,3\nghost_0002,4\n")
    return f"20 train files deleted, 20 corrupted, 1 stray file, 2 rows without images in {root}"


@contextlib.contextmanager
def tmpfs(path: Path, size: str | None) -> Any:
    """A small tmpfs at ``path`` (root only); yields False when none is asked for or it cannot be mounted."""
    path.mkdir(parents=True, exist_ok=True)
    ok = size is not None and os.geteuid() == 0 and subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                                              capture_output=True).returncode == 0  # fmt: skip
    try:
        yield ok
    finally:
        if ok:
            subprocess.run(["umount", "-l", str(path)], check=False)


def _fill(disk: Path) -> Path:
    """Fill the filesystem of ``disk`` to the last byte."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        for block in (1 << 20, 1 << 14, 1 << 10, 64, 1):
            with contextlib.suppress(OSError):
                while os.write(fd, b"\0" * block):
                    pass
    finally:
        os.close(fd)
    return filler


def _fault_session(
    kind: str, opts: dict[str, Any], out: Path, cache: Path, resume: bool, mounted: bool, scenario: Scenario,
    rng: random.Random,
) -> Session:  # fmt: skip
    args = scenario.run_args
    if kind == "data":
        if not resume:  # the data must change after profiling: start the run, stop it at its first epoch
            first = run_session(out, cache, resume=False, run_args=args, kill_when=_training_killer())
            if not (out / "run.json").is_file():
                return Session(fault="data", fired=False, output="the run never started: " + first.output[-200:])
        return Session(fault="data", fired=True, output=_damage_dataset(cache, rng))
    if kind == "disk_full":
        return _disk_full_session(out, cache, resume, mounted, args)
    if kind in POINTS:
        session = run_session(
            out, cache, resume=resume, run_args=args, point=kind, nth=int(opts.get("nth", 1))
        )
    elif kind == "training":
        session = run_session(out, cache, resume=resume, run_args=args, kill_when=_training_killer())
    elif kind == "random":
        session = run_session(
            out, cache, resume=resume, run_args=args, kill_when=_random_killer(float(opts["at_s"]))
        )
    else:
        raise ValueError(f"unknown fault kind {kind!r}")
    session.fault = kind
    return session


def run_scenario(scenario: Scenario, workdir: Path, rng: random.Random) -> Scenario:
    """Run ``scenario``'s faults one session each on one run directory, then resume until the run finishes.

    A fault whose session finished the whole run before the moment came is retried once on a
    fresh run directory (a new segment); the finished segment is checked like the last one.
    """
    base = workdir / scenario.name
    cache = base / "cache"
    checks: list[Check] = []
    with tmpfs(base / "disk", scenario.disk) as mounted:
        if scenario.disk and not mounted:
            scenario.errors.append("tmpfs not available (needs root): disk-full faults injected in-process")
        segment = 1
        out = base / "disk" / "run1"
        seen: list[dict[str, Any]] = []
        resume = False
        for kind, opts in scenario.faults:
            for _try in range(2):
                session = _fault_session(kind, opts, out, cache, resume, mounted, scenario, rng)
                scenario.sessions.append(session)
                seen += history_lines(out)
                resume = resume or (out / "run.json").is_file()
                if session.fired or session.returncode != 0:
                    break
                checks.append(check_run(out, seen))  # this run is over: the fault gets a new one
                segment += 1
                out, seen, resume = base / "disk" / f"run{segment}", [], False
        for _ in range(3):
            session = run_session(out, cache, resume=resume, run_args=scenario.run_args)
            scenario.sessions.append(session)
            resume = True
            if session.returncode == 0:
                break
        checks.append(check_run(out, seen))
    scenario.segment_checks = list(checks)
    scenario.check = Check.combine(checks)
    return scenario


def _disk_full_session(out: Path, cache: Path, resume: bool, mounted: bool, run_args: list[str]) -> Session:
    """Fill the run's tmpfs to the last byte while a candidate trains; free it after the session.

    Without a tmpfs (not root) the orchestrator's own writes fail with an injected ENOSPC instead.
    """
    if not mounted:
        session = run_session(out, cache, resume=resume, point="enospc", timeout_s=180, run_args=run_args)
        session.fired = "(injected)" in session.output or session.returncode not in (0, -signal.SIGKILL)
        session.fault = "disk_full_injected"
        return session
    filled: list[Path] = []

    def on_line(line: str) -> None:
        if not filled and "epoch 1/" in line:  # a candidate is training: its checkpoint and record come next
            filled.append(_fill(out.parent))

    session = run_session(out, cache, resume=resume, on_line=on_line, timeout_s=180, run_args=run_args)
    session.fault = "disk_full"
    session.fired = bool(filled)
    for f in filled:
        f.unlink()
    return session


# ------------------------------------------------------------------ the benchmark


KILLS = ("promote", "llm", "history", "training", "swap", "random", "final")
"""The kill moments, cycled; ``final`` is kept last in its chain (it needs a session that reaches the end)."""


def plan(kills: int, seed: int) -> list[Scenario]:
    """``kills`` kill moments in chains of five, plus one scenario for a damaged dataset and a full disk."""
    rng = random.Random(seed)
    moments: list[tuple[str, dict[str, Any]]] = []
    for i in range(kills):
        kind = KILLS[i % len(KILLS)]
        opts: dict[str, Any] = {}
        if kind in ("llm", "history"):
            opts["nth"] = rng.randint(1, 2)
        if kind == "random":
            opts["at_s"] = round(rng.uniform(4.0, 30.0), 1)
        moments.append((kind, opts))
    chains = [moments[i : i + 5] for i in range(0, len(moments), 5)]
    for chain in chains:
        chain.sort(key=lambda m: m[0] == "final")
    scenarios = [Scenario(f"kills{i + 1}", chain) for i, chain in enumerate(chains)]
    scenarios.append(Scenario("disk+data", [("random", {"at_s": 14.0}), ("data", {}), ("disk_full", {}),
                                            ("training", {})], disk="64m"))  # fmt: skip
    return scenarios


def tabulate(scenarios: list[Scenario]) -> list[Outcome]:
    """One row per fault kind (a fault counts as contained/recorded when its scenario ends well)."""
    rows: dict[str, Outcome] = {}
    for sc in scenarios:
        assert sc.check is not None
        for s in sc.sessions:
            if s.fault == "none":
                continue
            row = rows.setdefault(s.fault, Outcome(s.fault))
            if not s.fired:
                row.notes.append(f"{sc.name}: not fired ({s.output.strip()[-80:] or 'session ended first'})")
                continue
            row.injected += 1
            row.contained += int(sc.check.finished)
            row.recorded += int(sc.check.recorded_right and sc.check.finished)
            row.lost += sc.check.lost
            row.orphans += s.orphans
            if s.orphan_cmds:
                row.notes.append(f"{sc.name}: {s.fault}: what outlived the kill: {'; '.join(s.orphan_cmds)}")
            if s.fault.startswith("disk_full"):
                # The last message, which the console wraps over several lines.
                tail = " ".join(s.output.strip().splitlines()[-4:])
                clear = "no space left" in tail.lower() and "--resume" in tail
                row.notes.append(f"{sc.name}: disk full -> exit {s.returncode}; clear last message: {clear}; "
                                 f"a traceback printed on the way: {'Traceback' in s.output}")  # fmt: skip
    return list(rows.values())


def render(rows: list[Outcome], scenarios: list[Scenario], seconds: float, command: str) -> str:
    lines = [
        "# Fault injection (`benchmarks/faults.py`)",
        "",
        f"Command: `{command}`; {seconds:.0f} s on this machine ({os.cpu_count()} CPUs). Run: `automodel run demo "
        f"{' '.join(RUN_ARGS)}`, faults chained one per session on one run directory, then `--resume`.",
        "",
        "| fault | injected | contained | recorded with the right status | results lost | orphan candidates |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r.kind} | {r.injected} | {r.contained} | {r.recorded} | {r.lost} | {r.orphans} |")
    total = Outcome("total")
    for r in rows:
        total.injected += r.injected
        total.contained += r.contained
        total.recorded += r.recorded
        total.lost += r.lost
        total.orphans += r.orphans
    lines.append(f"| **total** | {total.injected} | {total.contained} | {total.recorded} | {total.lost} | "
                 f"{total.orphans} |")  # fmt: skip
    lines += ["", "Contained: the run finished after `--resume` (final score written). Recorded with the right "
              "status: `run.json` done, statuses agree with the scores, `best/` is the best improved iteration "
              "and its checkpoint loads, no iteration twice, no half-done promotion. Results lost: history lines "
              "seen after any fault and missing or changed at the end. Orphan candidates: harness processes "
              "still alive 10 s after their orchestrator was killed, then killed by the benchmark (a harness is "
              "meant to die with its parent: `PR_SET_PDEATHSIG`, the sandbox's die-with-parent).", "", "## Scenarios", ""]  # fmt: skip
    for sc in scenarios:
        assert sc.check is not None
        faults = ", ".join(f"{s.fault}{'' if s.fired else ' (not fired)'} [{s.returncode}, {s.seconds:.0f}s]"
                           for s in sc.sessions)  # fmt: skip
        lines.append(f"- **{sc.name}**: {faults}; attempts {sc.check.attempts}, finished {sc.check.finished}, "
                     f"problems: {sc.check.problems or 'none'}")  # fmt: skip
    notes = [n for r in rows for n in r.notes]
    if notes:
        lines += ["", "Notes:", *[f"- {n}" for n in notes]]
    return "\n".join(lines) + "\n"


MODEL_MARKER = "<!-- model faults: written by `benchmarks/faults.py --suite model` -->"
"""Where the model-fault section of ``faults.md`` starts (each suite rewrites only its own part)."""


def write_section(path: Path, text: str, *, model: bool) -> None:
    """Write the process-fault part (``model=False``) or the model-fault part of ``path``, keeping the other."""
    old = path.read_text(encoding="utf-8") if path.is_file() else ""
    process_part, _, model_part = old.partition(MODEL_MARKER)
    if model:
        model_part = "\n" + text
    else:
        process_part = text
    path.parent.mkdir(parents=True, exist_ok=True)
    body = process_part.rstrip("\n") + "\n"
    if model_part.strip():
        body += "\n" + MODEL_MARKER + "\n" + model_part.lstrip("\n")
    path.write_text(body, encoding="utf-8")


def run_model_suite(args: argparse.Namespace, command: str) -> bool:
    """The model-fault runs (:mod:`benchmarks.faults_model`); True when none lost an attempt or failed to finish."""
    from benchmarks.faults_model import render as render_model
    from benchmarks.faults_model import run_suite

    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="automodel-model-faults-") as tmp:
        rows = run_suite(Path(tmp), only=args.only)
    text = render_model(rows, command, time.monotonic() - started)
    print(text)
    write_section(args.out, text, model=True)
    return all(r.lost == 0 and r.finished for r in rows)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["orchestrate"]:
        return orchestrate(argv[1:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--suite", choices=("process", "model", "all"), default="all",
                        help="process: kill -9, full disk, damaged data; model: faults of the LLM backend")
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", nargs="*", default=None, help="scenario or model-fault case names (default: all)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--logs", type=Path, default=None, help="write every session's output here")
    args = parser.parse_args(argv)
    command = "python benchmarks/faults.py " + " ".join(argv)
    ok = True
    if args.suite in ("process", "all"):
        ok = run_process_suite(args, command)
    if args.suite in ("model", "all"):
        ok = run_model_suite(args, command) and ok
    return 0 if ok else 1


def run_process_suite(args: argparse.Namespace, command: str) -> bool:
    """kill -9 at chosen moments, a full disk, a damaged dataset; True when nothing was lost or left unfinished."""
    started = time.monotonic()
    scenarios = [s for s in plan(args.kills, args.seed) if not args.only or s.name in args.only]
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="automodel-faults-") as tmp:
        for sc in scenarios:
            run_scenario(sc, Path(tmp), rng)
            done = [x for x in scenarios if x.check is not None]
            write_section(args.out, render(tabulate(done), done, time.monotonic() - started, command), model=False)
            if args.logs is not None:
                args.logs.mkdir(parents=True, exist_ok=True)
                for i, s in enumerate(sc.sessions):
                    (args.logs / f"{sc.name}-{i}-{s.fault}.log").write_text(s.output, encoding="utf-8")
            assert sc.check is not None
            print(f"{sc.name}: {[(s.fault, s.fired, s.returncode) for s in sc.sessions]} -> "
                  f"finished {sc.check.finished}, lost {sc.check.lost}, problems {sc.check.problems}", flush=True)  # fmt: skip
    rows = tabulate(scenarios)
    text = render(rows, scenarios, time.monotonic() - started, command)
    print(text)
    write_section(args.out, text, model=False)
    return all(r.lost == 0 and r.contained == r.injected for r in rows)


if __name__ == "__main__":
    sys.exit(main())
