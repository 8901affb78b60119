"""Shared fixtures: the digits demo, prepared once per test session."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory):
    """Built-in datasets are written into a fresh cache, not the user's ~/.cache/automodel."""
    os.environ["AUTOMODEL_CACHE"] = str(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="session")
def digits_workspace(tmp_path_factory: pytest.TempPathFactory):
    """The digits demo written in the Kaggle layout and prepared into a run directory."""
    from automodel.workspace import open_workspace

    root = tmp_path_factory.mktemp("digits")
    return open_workspace("demo", root / "run", device="cpu", root=root / "digits")


@pytest.fixture
def reference_copy(tmp_path: Path) -> Path:
    """A writable copy of the reference recipe."""
    from automodel.interfaces import REFERENCE_DIR

    dst = tmp_path / "components"
    dst.mkdir()
    for name in ("data.py", "model.py", "training.py"):
        shutil.copyfile(REFERENCE_DIR / name, dst / name)
    return dst


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))
