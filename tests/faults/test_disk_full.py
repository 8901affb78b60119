"""A full disk during a candidate is the machine's fault: the run stops cleanly, nothing is "repaired".

The Executor runs a real candidate (through the harness) that fails the way a full disk makes
it fail (``OSError: [Errno 28]``): it raises ``DiskFullError`` with one line that says where
space is short and what to free; no attempt is recorded and no engineer is asked to repair it.
Other failures are recorded and go to repair as before (``is_disk_full`` tells them apart). A
real full tmpfs under the whole orchestrator is ``test_orchestrator_faults.py``'s.
"""

from __future__ import annotations

import asyncio
import errno
import logging
from pathlib import Path

import pytest
from autogen_agentchat.messages import StructuredMessage

from automodel._environment import agent_errors_to_log, is_disk_full
from automodel._io import DiskFullError
from automodel.experts import reference_source
from automodel.messages import ComponentCode
from automodel.roles import ExecutorAgent
from automodel.run import RunOptions, prepare_run

pytestmark = pytest.mark.faults


def _failing_training(err: str) -> ComponentCode:
    code = reference_source("training").replace(
        "def build_training(spec: TrainSpec, model: torch.nn.Module) -> TrainRecipe:\n",
        "def build_training(spec: TrainSpec, model: torch.nn.Module) -> TrainRecipe:\n"
        f"    import errno\n    raise OSError(errno.{err}, 'writing the schedule cache')\n",
    )
    assert "raise OSError" in code
    return ComponentCode(component="training", code=code, change="a change", phase="revision", iteration=1,
                         author="training_engineer", knobs={})


def test_a_candidate_that_hits_a_full_disk_stops_the_run_instead_of_going_to_repair(tmp_path):
    store = prepare_run(RunOptions(data="demo", out=tmp_path / "run", device="cpu", iterations=3,
                                   candidate_budget_s=10.0, max_epochs=1, time_budget_s=900.0))
    agent = ExecutorAgent("executor", run_dir=store.root)
    task = StructuredMessage[ComponentCode](content=_failing_training("ENOSPC"), source="training_engineer")
    with pytest.raises(DiskFullError) as raised:
        asyncio.run(agent.run(task=task))
    message = str(raised.value)
    assert raised.value.errno == errno.ENOSPC and "\n" not in message  # one line: the CLI prints its first line
    assert "No space left on the device while running attempt 1" in message
    assert f"The disk of {store.root} has" in message and "This run holds" in message
    assert "Free space on that disk" in message and "--resume" in message
    assert store.history() == [] and not store.best_dir.exists()  # not recorded: it runs again on --resume


def test_what_counts_as_a_full_disk(tmp_path):
    assert is_disk_full("OSError: [Errno 28] No space left on device", tmp_path)
    assert is_disk_full("DiskFullError: [Errno 28] No space left on the device while writing 'x'", tmp_path)
    assert is_disk_full("OSError: [Errno 122] Disk quota exceeded", tmp_path)
    assert not is_disk_full("RuntimeError: mat1 and mat2 shapes cannot be multiplied (64x5 and 128x10)", tmp_path)
    assert not is_disk_full("PermissionError: [Errno 13] Permission denied: 'ckpt'", tmp_path)
    # torch.save's own words for a failed write count only when the disk is nearly full (this one is not)
    assert not is_disk_full("RuntimeError: [enforce fail at inline_container.cc:595] . unexpected pos 64 vs 0",
                            tmp_path)


def test_autogen_tracebacks_of_an_agent_go_to_the_log_not_the_console(caplog):
    runtime = logging.getLogger("autogen_core")
    try:
        raise DiskFullError(errno.ENOSPC, "No space left on the device while running attempt 3")
    except DiskFullError:
        with caplog.at_level(logging.ERROR):
            with agent_errors_to_log():
                runtime.error("Error processing publish message for executor/abc", exc_info=True)
                runtime.error("an unrelated error")
            runtime.error("Error processing publish message for executor/abc", exc_info=True)
    shown = [r.getMessage() for r in caplog.records]
    assert shown == ["an unrelated error", "Error processing publish message for executor/abc"]  # the filter is gone


def test_the_message_names_the_largest_parts_of_the_run(tmp_path: Path):
    from automodel._environment import disk_full_message

    (tmp_path / "iterations").mkdir()
    (tmp_path / "iterations" / "checkpoint.pt").write_bytes(b"\0" * 3 * 2**20)
    (tmp_path / "history.jsonl").write_text("{}\n")
    message = disk_full_message(tmp_path, "writing best/")
    assert message.startswith("No space left on the device while writing best/.")
    assert "This run holds 3.0 MB there (largest: iterations 3.0 MB, history.jsonl 0.0 MB)." in message


def test_a_full_disk_wrapped_by_autogen_reaches_the_caller_as_itself_and_other_errors_as_they_came():
    wrapped = RuntimeError("DiskFullError: [Errno 28] No space left on the device while running attempt 3. Free "
                           "space on that disk, then continue with --resume.\nTraceback:\n  File ...")
    with pytest.raises(DiskFullError) as raised, agent_errors_to_log():
        raise wrapped
    assert raised.value.errno == errno.ENOSPC
    assert str(raised.value) == ("[Errno 28] No space left on the device while running attempt 3. Free space on that "
                                 "disk, then continue with --resume.")
    with pytest.raises(DiskFullError, match=r"No space left on device: 'x/y'; free space on that disk, then "
                                            r"continue with --resume"), agent_errors_to_log():
        raise RuntimeError("OSError: [Errno 28] No space left on device: 'x/y'\nTraceback:\n  File ...")
    with pytest.raises(RuntimeError, match="ValueError: shapes"), agent_errors_to_log():
        raise RuntimeError("ValueError: shapes do not match\nTraceback:\n  File ...")
