"""The harness and its client: real training, attributed failures, held-out data."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from automodel.harness import CandidateRunner
from tests.conftest import edit


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"


def test_reference_recipe_learns_digits_and_predicts(digits_workspace, reference_copy, tmp_path):
    # A fixed number of epochs, so the test does not depend on how loaded the machine is.
    edit(reference_copy / "training.py", "EPOCHS = 0", "EPOCHS = 4")
    runner = digits_workspace.runner()
    events: list[dict] = []
    seen: dict[str, object] = {}

    def look(event: dict) -> None:  # what the candidate's job directory holds while it runs
        events.append(event)
        if event["event"] == "start":
            job = tmp_path / "it" / "job"
            seen["data"] = sorted(p.name for p in (job / "data").iterdir())
            seen["job"] = json.loads((job / "job.json").read_text())

    result = runner.train(reference_copy, tmp_path / "it", time_budget_s=120, on_event=look)
    assert result.status == "ok", result.log_tail
    # Train images and labels, validation images: no validation labels, no path outside the job.
    assert seen["data"] == ["meta.json", "train_x.npy", "train_y.npy", "val_x.npy"]
    job = seen["job"]
    assert isinstance(job, dict)
    assert not any(str(v).startswith("/") for v in [*job.values(), *job["local_weights"].values()])
    assert result.result is not None and result.result["scored_by"] == "orchestrator"
    metrics = json.loads((tmp_path / "it" / "metrics.json").read_text())
    assert metrics["val_accuracy"] > 0.5  # chance is 0.1
    assert metrics["epochs_run"] >= 1 and len(metrics["history"]) == metrics["epochs_run"]
    assert (tmp_path / "it" / "checkpoint.pt").is_file()
    kinds = [e["event"] for e in events]
    assert "smoke" in kinds and "epoch" in kinds and kinds[-1] == "done"

    shutil.copyfile(tmp_path / "it" / "checkpoint.pt", reference_copy / "checkpoint.pt")
    log_probs = runner.predict_split(reference_copy, "test", workdir=tmp_path / "pred")
    assert log_probs.shape == (len(digits_workspace.data.test_ids), 10)
    out = json.loads((tmp_path / "pred" / "predictions.json").read_text())
    assert out["pred"] == log_probs.argmax(1).tolist()
    assert len(out["pred"]) == len(digits_workspace.data.test_ids)
    # The trusted side scores predictions against the private labels.
    private = json.loads((digits_workspace.store.private_dir / "test_labels.json").read_text())
    assert private["ids"] == digits_workspace.data.test_ids
    acc = sum(p == t for p, t in zip(out["pred"], private["targets"], strict=True)) / len(out["pred"])
    assert acc > 0.5


def test_shape_error_is_attributed_to_the_model_file(digits_workspace, reference_copy, tmp_path):
    edit(reference_copy / "model.py", "        return self.head(self.features(x))",
         "        return self.head(self.features(x)[:, :3])  # wrong slice")
    result = digits_workspace.runner().train(reference_copy, tmp_path / "it", time_budget_s=10)
    assert result.status == "crashed"
    assert result.error is not None and result.error.component == "model"
    assert any("wrong slice" in str(line) for line in result.error.lines)


def test_hanging_component_times_out_and_leaves_nothing_running(digits_workspace, reference_copy, tmp_path):
    # (A hang in build_training is caught by the smoke test's own limit: see test_roles_recover.py.)
    edit(reference_copy / "model.py", "def build_model(spec: ModelSpec) -> nn.Module:\n",
         "def build_model(spec: ModelSpec) -> nn.Module:\n    import time\n    time.sleep(1000)\n")
    runner = CandidateRunner(digits_workspace.store.data_dir, device="cpu", grace_s=12)
    events: list[dict] = []
    result = runner.train(reference_copy, tmp_path / "it", time_budget_s=2, on_event=events.append)
    assert result.status == "timeout"
    assert result.duration_s < 40
    pids = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]
    leftovers = [p for p in pids if _alive(p) and str(tmp_path) in Path(f"/proc/{p}/cmdline").read_text(errors="ignore")]
    assert leftovers == []


def test_memory_hungry_component_is_stopped_as_oom(digits_workspace, reference_copy, tmp_path):
    edit(reference_copy / "model.py", "def build_model(spec: ModelSpec) -> nn.Module:\n",
         "def build_model(spec: ModelSpec) -> nn.Module:\n"
         "    hoard = [torch.ones(50_000_000) for _ in range(100)]  # 20 GB\n")
    runner = CandidateRunner(digits_workspace.store.data_dir, device="cpu", memory_limit_mb=2500)
    result = runner.train(reference_copy, tmp_path / "it", time_budget_s=5)
    assert result.status == "oom"


def test_component_code_cannot_open_test_labels(digits_workspace, reference_copy, tmp_path):
    labels = digits_workspace.store.private_dir / "test_labels.json"
    assert labels.is_file()
    edit(reference_copy / "data.py", "def build_data(spec: DataSpec) -> DataRecipe:\n",
         "def build_data(spec: DataSpec) -> DataRecipe:\n"
         f"    stolen = open({str(labels)!r}).read()\n")
    runner = digits_workspace.runner()
    result = runner.train(reference_copy, tmp_path / "it", time_budget_s=5)
    assert result.status == "crashed"
    assert result.error is not None and result.error.component == "data"
    # In a sandbox the file does not exist; under `local` the honest-mistake guard refuses it.
    expected = "FileNotFoundError" if runner.executor.isolates_filesystem else "PermissionError"
    assert result.error.error_type == expected
    # The raw dataset (whose layout could reveal labels) is closed to component code as well.
    assert any(Path(p).name == "digits" for p in digits_workspace.held_out)
    # And nothing of the private folder sits next to the arrays candidates read.
    assert not any("label" in p.name and "test" in p.name for p in digits_workspace.store.data_dir.iterdir())


def test_missing_component_file_is_reported(digits_workspace, reference_copy, tmp_path):
    (reference_copy / "training.py").unlink()
    result = digits_workspace.runner().train(reference_copy, tmp_path / "it", time_budget_s=5)
    assert result.status == "crashed"
    assert result.error is not None and result.error.component == "training"
    assert "missing" in result.error.message
