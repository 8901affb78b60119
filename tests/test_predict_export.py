"""Predict, export and load a trained run: the model's code runs as executor jobs, never in this process.

All tests share ``tiny_run`` (conftest: one real ``automodel run demo``), read it only, and
write their outputs under ``tmp_path``. Each job is a real harness process under the default
executor (the sandbox where bubblewrap starts).
"""

from __future__ import annotations

import csv
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import automodel
from automodel.cli import main
from automodel.deploy import DeployError, TrainedRun, export_model, predict_images, to_model_input


def _component_code_loaded() -> list[str]:
    """Modules the harness creates when it imports component files (``am_component_<name>``)."""
    return [name for name in sys.modules if name.startswith("am_component_")]


@pytest.fixture(scope="module")
def run_dir(tiny_run) -> Path:
    return Path(tiny_run[1])


@pytest.fixture(scope="module")
def test_images(run_dir: Path) -> tuple[list[Path], np.ndarray, list[str]]:
    """The run's own test images (files of the demo), in the order of its test split, with the
    probabilities its final scoring computed (``final/test_log_probs.npy``)."""
    record = json.loads((run_dir / "run.json").read_text())
    root = next(Path(p) for p in record["held_out"] if (Path(p) / "test").is_dir())
    ids = json.loads((run_dir / "data" / "test_ids.json").read_text())
    files = [root / "test" / f"{i}.png" for i in ids]
    assert all(f.is_file() for f in files)
    log_probs = np.load(run_dir / "final" / "test_log_probs.npy").astype(np.float64)
    probs = np.exp(log_probs - log_probs.max(1, keepdims=True))
    classes = json.loads((run_dir / "data" / "meta.json").read_text())["classes"]
    return files, probs / probs.sum(1, keepdims=True), classes


def test_predict_csv_agrees_with_the_runs_own_test_predictions(run_dir, test_images, tmp_path, capsys):
    files, expected, classes = test_images
    folder = tmp_path / "images"
    (folder / "sub").mkdir(parents=True)
    for f in files:
        shutil.copyfile(f, folder / "sub" / f.name)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    (folder / "notes.txt").write_text("not an image")
    out = tmp_path / "preds.csv"

    assert main(["predict", str(run_dir), str(folder), "--out", str(out)]) == 0

    printed = "".join(capsys.readouterr().out.split())  # rich wraps long lines
    assert "broken.png:corrupt" in printed and "notes.txt:not_image" in printed
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == len(files)
    by_name = {Path(r["file"]).name: r for r in rows}
    for k, f in enumerate(files):
        row = by_name[f.name]
        assert row["label"] == classes[int(expected[k].argmax())]
        got = np.array([float(row[f"prob_{c}"]) for c in classes])
        np.testing.assert_allclose(got, expected[k], atol=1e-5)
    assert not _component_code_loaded(), "the run's component code was imported into the test process"


def test_onnx_export_agrees_with_predict(run_dir, test_images, tmp_path):
    import onnxruntime

    files, expected, classes = test_images
    done = export_model(run_dir, "onnx", out=tmp_path / "onnx")
    assert done.path == tmp_path / "onnx" / "model.onnx" and done.path.stat().st_size > 0
    spec = json.loads(done.spec_path.read_text())
    assert spec["classes"] == classes and spec["input"]["dtype"] == "uint8"
    card = done.card_path.read_text()
    final = json.loads((run_dir / "final.json").read_text())
    assert f"{100 * final['test_accuracy']:.2f}%" in card and "onnxruntime" in card and "32x32" in card

    x, skipped = to_model_input(files, size=spec["input"]["height"], channels=spec["input"]["channels"])
    assert not skipped and x.shape == (len(files), spec["input"]["channels"], 32, 32) and x.dtype == np.uint8
    session = onnxruntime.InferenceSession(str(done.path), providers=["CPUExecutionProvider"])
    probs = session.run(None, {"images": x})[0]
    assert probs.shape == expected.shape
    assert np.mean(probs.argmax(1) == expected.argmax(1)) >= 0.99
    np.testing.assert_allclose(probs, expected, atol=1e-4)
    exported = automodel.load(done.path.parent)  # the export folder: ONNX Runtime in this process
    assert exported.classes == classes
    np.testing.assert_allclose(exported.predict(files[:20]).probabilities, expected[:20], atol=1e-4)
    assert not _component_code_loaded()


def test_torchscript_export_loads_and_agrees(run_dir, test_images, tmp_path):
    import torch

    files, expected, _ = test_images
    done = export_model(run_dir, "torchscript", out=tmp_path / "ts")
    model = torch.jit.load(str(done.path)).eval()
    x, _ = to_model_input(files[:64], size=32, channels=done.spec["input"]["channels"])
    with torch.no_grad():
        probs = model(torch.from_numpy(x)).numpy()
    assert np.mean(probs.argmax(1) == expected[:64].argmax(1)) >= 0.99
    np.testing.assert_allclose(probs, expected[:64], atol=1e-4)
    assert "torch.jit.load" in done.card_path.read_text()


def test_load_predicts_files_arrays_and_pil_images_in_a_job(run_dir, test_images, tmp_path):
    files, expected, classes = test_images
    model = automodel.load(run_dir)
    assert model.classes == classes
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff garbage")
    array = np.asarray(Image.open(files[1]))
    preds = model.predict([files[0], broken, array, Image.open(files[2]), np.zeros((4, 4), np.float32)])
    assert len(preds) == 3 and preds.names[0] == str(files[0])
    assert [s.reason for s in preds.skipped] == ["corrupt", "unsupported"]
    np.testing.assert_allclose(preds.probabilities, expected[:3], atol=1e-5)
    assert preds.labels == [classes[int(i)] for i in expected[:3].argmax(1)]
    assert preds.top_k(2)[0][0] == (preds.labels[0], pytest.approx(preds.confidences[0]))
    header, rows = preds.table(top_k=2)
    assert header == ["file", "label", "confidence", "label_1", "prob_1", "label_2", "prob_2"]
    assert rows[1][0] == "#2" and rows[1][3] == preds.labels[1]
    assert not _component_code_loaded()


def test_bad_inputs_are_clear_errors(run_dir, tmp_path, capsys):
    with pytest.raises(DeployError, match="not an AutoModel run directory"):
        TrainedRun.open(tmp_path)
    assert main(["predict", str(tmp_path), str(tmp_path)]) == 2
    assert "not an AutoModel run directory" in " ".join(capsys.readouterr().out.split())
    assert not (tmp_path / "run.json").exists()  # reading never creates anything

    no_best = tmp_path / "unfinished"
    (no_best / "data").mkdir(parents=True)
    shutil.copyfile(run_dir / "run.json", no_best / "run.json")
    shutil.copyfile(run_dir / "data" / "meta.json", no_best / "data" / "meta.json")
    with pytest.raises(DeployError, match="no best model yet"):
        TrainedRun.open(no_best)
    assert main(["export", str(no_best)]) == 2

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DeployError, match="empty: no_images"):
        predict_images(run_dir, empty)
    with pytest.raises(DeployError, match="missing.png: missing"):
        predict_images(run_dir, [tmp_path / "missing.png", empty])
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.png").write_bytes(b"nope")
    (bad / "b.jpg").write_bytes(b"")
    with pytest.raises(DeployError, match="none of the 2 image"):
        predict_images(run_dir, bad)
    assert main(["predict", str(run_dir), str(bad)]) == 2
    with pytest.raises(DeployError, match="choose one of onnx, torchscript"):
        export_model(run_dir, "tflite")


@pytest.fixture(scope="module")
def features_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run whose best model is a head on cached EfficientNet-Lite0 features (the CPU default for photos),
    built with the run's own runner: a features job, then a training job, then a promotion."""
    from automodel.harness import copy_components
    from automodel.interfaces import REFERENCE_DIR
    from automodel.run import prepare_run
    from automodel.runtime import open_run
    from automodel.settings import RunSettings
    from automodel.store import Attempt

    out = tmp_path_factory.mktemp("features") / "run"
    store = prepare_run(RunSettings.build(data="demo", out=out, device="cpu", max_train=150, threads=1))
    it = store.iteration_dir(1)
    copy_components(REFERENCE_DIR, it)
    data_py = it / "data.py"
    data_py.write_text(data_py.read_text().replace('FEATURES = ""', 'FEATURES = "efficientnet_lite0@64"'))
    run = open_run(store.root)
    runner = run.runner(candidate_budget_s=4)
    key, extraction = runner.ensure_features(it, store.root)
    assert key == "efficientnet_lite0@64" and extraction is not None and extraction.ok, extraction
    result = runner.train(it, it, time_budget_s=4)
    assert result.ok and result.result, result.error
    store.promote(1)
    store.record(Attempt(iteration=1, target="architect", change="features", status="improved",
                         val_accuracy=result.result["val_accuracy"], features=key))
    return store.root


@pytest.mark.slow
def test_pretrained_backbone_export_agrees_with_predict(features_run, test_images, tmp_path):
    """The exported file holds the backbone, the extraction's preprocessing and float16 rounding, and the head."""
    import onnxruntime

    files = test_images[0][:40]
    preds = predict_images(features_run, files)  # a features job for these images, then a predict job
    assert len(preds) == len(files) and not preds.skipped
    done = export_model(features_run, "onnx", out=tmp_path)
    assert done.spec["preprocessing_inside"]["features"] == "efficientnet_lite0@64"
    assert "efficientnet_lite0@64" in done.card_path.read_text()
    x, _ = to_model_input(files, size=done.spec["input"]["height"], channels=done.spec["input"]["channels"])
    session = onnxruntime.InferenceSession(str(done.path), providers=["CPUExecutionProvider"])
    probs = session.run(None, {"images": x})[0]
    assert np.mean(probs.argmax(1) == preds.probabilities.argmax(1)) >= 0.99
    # Looser than the digits model's 1e-4: the run's feature cache rounds features to float16, and ONNX Runtime's
    # convolutions differ from torch's by ~1e-6, which can move a feature across a float16 rounding step.
    np.testing.assert_allclose(probs, preds.probabilities, atol=5e-4)
