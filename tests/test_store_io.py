"""The one durable-write helper (automodel._io): atomic replace, torn JSONL lines, full disk."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from automodel._io import (
    DiskFullError,
    append_line,
    atomic_open,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    durable_replace,
    read_jsonl,
)


def test_atomic_writes_replace_and_leave_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "run.json"
    atomic_write_json(target, {"a": 1, "p": Path("/x")})
    atomic_write_text(tmp_path / "t.txt", "héllo")
    atomic_write_bytes(tmp_path / "b.bin", b"\x00\x01")
    assert json.loads(target.read_text()) == {"a": 1, "p": "/x"}
    assert (tmp_path / "t.txt").read_text(encoding="utf-8") == "héllo"
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.bin", "run.json", "t.txt"]


def test_failed_block_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "f.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_open(target, "w") as fh:
        fh.write("half of the new")
        raise RuntimeError("writer died")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]


def test_durable_replace_moves_a_folder(tmp_path: Path) -> None:
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "x").write_text("1")
    durable_replace(tmp_path / "new", tmp_path / "best")
    assert (tmp_path / "best" / "x").read_text() == "1" and not (tmp_path / "new").exists()


def test_append_after_a_torn_line_is_not_lost(tmp_path: Path) -> None:
    path = tmp_path / "history.jsonl"
    append_line(path, json.dumps({"iteration": 1}))
    with path.open("ab") as fh:  # a writer killed mid-line
        fh.write(b'{"iteration": 2, "sta')
    append_line(path, json.dumps({"iteration": 3}))
    records, torn = read_jsonl(path)
    assert records == [{"iteration": 1}, {"iteration": 3}] and torn == 1
    append_line(path, json.dumps({"iteration": 4}))
    assert read_jsonl(path) == ([{"iteration": 1}, {"iteration": 3}, {"iteration": 4}], 1)


def test_append_refuses_a_newline_and_missing_file_reads_empty(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="newline"):
        append_line(tmp_path / "x.jsonl", "a\nb")
    assert read_jsonl(tmp_path / "nothing.jsonl") == ([], 0)


def test_kill_during_appends_leaves_only_whole_records(tmp_path: Path) -> None:
    """A child appends as fast as it can and is SIGKILLed; every line read back is whole."""
    path = tmp_path / "h.jsonl"
    code = (
        "import json, sys\nfrom automodel._io import append_line\n"
        "for i in range(10**6):\n    append_line(sys.argv[1], json.dumps({'i': i, 'pad': 'x' * 300}))\n"
        "    print(i, flush=True) if i == 20 else None\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "20"
    proc.kill()
    proc.wait()
    records, _torn = read_jsonl(path)
    assert [r["i"] for r in records] == list(range(len(records))) and len(records) >= 21
    append_line(path, json.dumps({"i": -1}))
    assert read_jsonl(path)[0][-1] == {"i": -1}


def _tmpfs(path: Path, size: str) -> bool:
    path.mkdir()
    if os.geteuid() != 0:
        return False
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True).returncode == 0  # fmt: skip


def test_disk_full_is_a_clear_error_and_keeps_the_old_file(tmp_path: Path) -> None:
    disk = tmp_path / "disk"
    if not _tmpfs(disk, "256k"):
        pytest.skip("needs root to mount a small tmpfs (the faults suite covers the injected variant)")
    try:
        atomic_write_text(disk / "run.json", "old")
        append_line(disk / "h.jsonl", "{}")
        with pytest.raises(DiskFullError, match="No space left.*run.json.*--resume"):
            atomic_write_bytes(disk / "run.json", b"x" * 1024 * 1024)
        assert (disk / "run.json").read_text() == "old"
        assert sorted(p.name for p in disk.iterdir()) == ["h.jsonl", "run.json"]
    finally:
        subprocess.run(["umount", str(disk)], check=False)


def test_files_a_candidate_wrote_are_read_only_when_regular_and_never_block(tmp_path):
    # Seen in review: a FIFO planted in place of an output hung the reader (open blocks until a writer comes).
    from automodel._io import open_regular
    from automodel.executors._output import read_json_dict
    from automodel.executors._scorer import read_predictions
    from automodel.harness._client import _copy_out

    for name in ("val_1.npy", "model.onnx", "result.json"):
        os.mkfifo(tmp_path / name)
    (tmp_path / "real.json").write_text('{"ok": 1}')
    (tmp_path / "link.json").symlink_to(tmp_path / "real.json")
    assert open_regular(tmp_path / "val_1.npy") is None
    assert read_predictions(tmp_path / "val_1.npy", 3, 2) is None
    assert _copy_out(tmp_path, "model.onnx", tmp_path / "copied.onnx") is False
    assert read_json_dict(tmp_path / "result.json") is None and read_json_dict(tmp_path / "link.json") is None
    assert read_json_dict(tmp_path / "real.json") == {"ok": 1}
    fd = open_regular(tmp_path / "real.json")
    assert fd is not None and os.get_blocking(fd)
    os.close(fd)
