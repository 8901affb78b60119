"""Bad inputs that used to pass silently: tiny classes, tiny or extreme images, symlink loops, no test/."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from automodel.data import DataError, decode_file, prepare_dataset, resolve_source


def _png(path: Path, seed: int, size: tuple[int, int] = (16, 16)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


def _tree(base: Path, classes: dict[str, int], size: tuple[int, int] = (16, 16)) -> None:
    for ci, (name, n) in enumerate(classes.items()):
        for i in range(n):
            _png(base / name / f"{i}.png", ci * 100 + i, size)


def _prepare(spec: str | Path, tmp_path: Path):
    return prepare_dataset(str(spec), tmp_path / "out", private_dir=tmp_path / "private", workers=1)


def test_every_class_with_one_image_stops_naming_the_classes(tmp_path: Path) -> None:
    _tree(tmp_path / "ds", {"cat": 1, "dog": 1, "eel": 1})
    with pytest.raises(
        DataError, match=r"Every class .* fewer than 2 .*'cat' \(1\), 'dog' \(1\), 'eel' \(1\)"
    ):
        _prepare(tmp_path / "ds", tmp_path)
    assert not (tmp_path / "out" / "meta.json").exists()


def test_one_small_class_stops_and_counts_skips(tmp_path: Path) -> None:
    _tree(tmp_path / "ds", {"cat": 4, "dog": 4, "eel": 2})
    (tmp_path / "ds" / "eel" / "1.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"1 of 3 classes .* 'eel' \(1\).*Skipped files: \{'corrupt': 1\}"):
        _prepare(tmp_path / "ds", tmp_path)


def test_cli_train_once_stops_with_a_data_error_not_a_zero_score(tmp_path: Path) -> None:
    _tree(tmp_path / "ds", {"cat": 1, "dog": 1})
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "COLUMNS": "300"}
    cmd = [
        sys.executable,
        "-m",
        "automodel.cli",
        "train-once",
        str(tmp_path / "ds"),
        "--out",
        str(tmp_path / "run"),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "data error" in proc.stdout and "'cat' (1)" in proc.stdout
    assert "Traceback" not in proc.stdout + proc.stderr and "val accuracy" not in proc.stdout


def test_val_folder_allows_one_train_image_and_warns_about_missing_val_classes(tmp_path: Path) -> None:
    _tree(tmp_path / "ds" / "train", {"cat": 1, "dog": 3, "eel": 3})
    _tree(tmp_path / "ds" / "val", {"cat": 1, "dog": 1})
    prep = _prepare(tmp_path / "ds", tmp_path)
    assert prep.meta.counts["train"] == 7
    assert any("no image of class(es) ['eel']" in w for w in prep.meta.profile.warnings)


def test_tiny_images_are_kept_counted_and_warned(tmp_path: Path) -> None:
    _tree(tmp_path / "ds", {"a": 6, "b": 6}, size=(64, 64))
    _png(tmp_path / "ds" / "a" / "dot.png", 7, (1, 1))
    prep = _prepare(tmp_path / "ds", tmp_path)
    profile = prep.meta.profile
    assert profile.tiny_images == 1 and prep.meta.counts["train"] + prep.meta.counts["val"] == 13
    assert any("1 of 13 images are tiny" in w and "dot.png at 1x1" in w for w in profile.warnings)


def test_all_1x1_images_are_not_stored_at_1x1(tmp_path: Path) -> None:
    _tree(tmp_path / "ds", {"a": 3, "b": 3}, size=(1, 1))
    prep = _prepare(tmp_path / "ds", tmp_path)
    assert prep.meta.stored_size == 8 and prep.meta.profile.tiny_images == 6
    assert "Warning: 6 of 6 images are tiny" in prep.meta.profile.summary()


def test_extreme_aspect_ratio_is_decoded_in_bounded_memory(tmp_path: Path) -> None:
    """An 8000x1 strip squared to 160 px: the child's peak RSS grows by far less than the 614 MB
    that upscaling the whole strip to 1,280,000x160 first would take."""
    strip = _png(tmp_path / "strip.png", 0, (8000, 1))
    d = decode_file(strip, 160)
    assert not isinstance(d, tuple) and d.array.shape == (160, 160, 3) and (d.width, d.height) == (8000, 1)
    code = (
        "import resource, sys\nfrom pathlib import Path\nfrom automodel.data._decode import decode_file\n"
        "peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024\n"
        "decode_file(Path(sys.argv[1]), 8)\nbefore = peak()\n"
        "for side in (1000, 8000):\n    decode_file(Path(sys.argv[1]), 160)\n"
        "print(peak() - before)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    out = subprocess.run(
        [sys.executable, "-c", code, str(strip)], capture_output=True, text=True, env=env, check=True
    )
    assert float(out.stdout.strip()) < 100, out.stdout


def test_symlink_loops_and_dangling_links_are_counted_skips(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    _tree(root, {"a": 3, "b": 3})
    (root / "a" / "loop").symlink_to(root / "a", target_is_directory=True)
    (root / "b" / "self.png").symlink_to(root / "b" / "self.png")
    (root / "b" / "gone.png").symlink_to(tmp_path / "nowhere.png")
    (root / "c").symlink_to(root / "c")
    src = resolve_source(str(root))
    assert len(src.train) == 6
    counts = src.skips.as_dict()
    assert counts["symlink_loop"] == 3 and counts["broken_link"] == 1, counts


def test_kaggle_sample_submission_without_test_folder_says_so(tmp_path: Path) -> None:
    root = tmp_path / "comp"
    rows = [[f"i{i}", "ab"[i % 2]] for i in range(8)]
    for key, _ in rows:
        _png(root / "train" / f"{key}.png", int(key[1:]))
    for name, body in (("train.csv", [["id", "label"], *rows]), ("sample_submission.csv", [["id", "label"]] +
                       [[f"t{i}", "a"] for i in range(4)])):  # fmt: skip
        with (root / name).open("w", newline="") as fh:
            csv.writer(fh).writerows(body)
    src = resolve_source(str(root))
    assert src.skips.as_dict()["missing_test_file"] == 4 and not src.test
    [warning] = src.warnings
    assert "sample_submission.csv lists 4 test ids" in warning and "no test image folder" in warning
    prep = _prepare(root, tmp_path)
    assert warning in prep.meta.profile.warnings


def test_resumed_run_keeps_its_prepared_copy_when_the_dataset_changes(tmp_path: Path) -> None:
    _tree(tmp_path / "ds", {"a": 5, "b": 5})
    first = _prepare(tmp_path / "ds", tmp_path)
    x_before = first.arrays("train")[0].copy()
    (tmp_path / "ds" / "a" / "0.png").unlink()
    (tmp_path / "ds" / "b" / "1.png").write_bytes(b"corrupt now")
    kept = prepare_dataset(str(tmp_path / "ds"), tmp_path / "out", private_dir=tmp_path / "private", workers=1,
                           keep_prepared=True)  # fmt: skip
    assert kept.from_cache and "changed since it was prepared" in kept.source_changed
    assert np.array_equal(kept.arrays("train")[0], x_before)
    fresh = _prepare(tmp_path / "ds", tmp_path)
    assert not fresh.from_cache and fresh.meta.counts["train"] + fresh.meta.counts["val"] == 8


def test_decode_pool_workers_die_with_a_killed_parent() -> None:
    """kill -9 of a process that is decoding must not leave its pool workers waiting forever."""
    import time

    code = (
        "import multiprocessing as mp, os, signal\nfrom concurrent.futures import ProcessPoolExecutor\n"
        "from automodel.data._collect import die_with_parent\n"
        "pool = ProcessPoolExecutor(1, mp_context=mp.get_context('fork'), initializer=die_with_parent)\n"
        "print(pool.submit(os.getpid).result(), flush=True)\nos.kill(os.getpid(), signal.SIGKILL)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    worker = Path(f"/proc/{int(proc.stdout.strip())}")
    deadline = time.monotonic() + 30
    while worker.exists() and "zombie" not in _state(worker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not worker.exists() or "zombie" in _state(worker)


def _state(proc: Path) -> str:
    try:
        return next(line for line in (proc / "status").read_text().splitlines() if line.startswith("State"))
    except (OSError, StopIteration):
        return "zombie"
