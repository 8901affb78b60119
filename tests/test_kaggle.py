"""Kaggle end to end, offline: the adapter against a fake in-process KaggleApi, layouts and submissions on real files."""

from __future__ import annotations

import csv
import importlib.util
import json
import zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import requests
from PIL import Image

from automodel.data import SubmissionFormat, prepare_dataset, resolve_source
from automodel.kaggle import KaggleError, download_competition, find_credentials, official_api, submit
from automodel.submission import SubmissionError, check_submission, preflight, preflight_run, write_submission

ROOT = Path(__file__).resolve().parents[1]


def _png(path: Path, value: int, *, size: int = 12, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    arr = np.clip(rng.normal(value, 20, (size, size)), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def _csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)


def _read(path: Path) -> tuple[list[str], list[list[str]]]:
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    return rows[0], rows[1:]


def make_competition(root: Path, *, classes: tuple[str, str] = ("cat", "dog"), ext_in_ids: bool = False,
                     sample_header: tuple[str, ...] = ("id", "label"), sample_label: str | None = None,
                     per_class: int = 12, n_test: int = 10) -> Path:
    """A real Kaggle-layout folder: train.csv with an extra column, train/ and test/ PNGs, sample_submission.csv."""
    rows = []
    for k, name in enumerate(classes):
        for i in range(per_class):
            stem = f"tr_{k}_{i:02d}"
            _png(root / "train" / f"{stem}.png", 60 + 120 * k, seed=k * 100 + i)
            rows.append([f"{stem}.png" if ext_in_ids else stem, name, f"source{i % 3}"])
    _csv(root / "train.csv", ["id", "label", "source"], rows)
    test_ids = []
    for i in range(n_test):
        stem = f"te_{i:02d}"
        _png(root / "test" / f"{stem}.png", 60 + 120 * (i % 2), seed=1000 + i)
        test_ids.append(f"{stem}.png" if ext_in_ids else stem)
    dummy = sample_label if sample_label is not None else classes[0]
    sample_rows = []
    for t in reversed(test_ids):  # the sample's order, not the folder's, is the order to keep
        cells = {"id": t, "label": dummy, "Usage": "Public"}
        cells.update({c: "0.5" for c in classes})
        sample_rows.append([cells[c] for c in sample_header])
    _csv(root / "sample_submission.csv", list(sample_header), sample_rows)
    return root


def _prepared(root: Path, tmp: Path):
    source = resolve_source(str(root))
    data = prepare_dataset(source, tmp / "data", private_dir=tmp / "private", seed=0, val_fraction=0.25, workers=1)
    assert data.meta.submission is not None
    return data


@pytest.mark.parametrize("ext_in_ids", [False, True])
def test_submission_keeps_the_sample_columns_order_and_id_spelling(tmp_path, ext_in_ids):
    comp = make_competition(tmp_path / "comp", ext_in_ids=ext_in_ids, sample_header=("id", "label", "Usage"))
    data = _prepared(comp, tmp_path)
    assert data.meta.classes == ["cat", "dog"]
    assert preflight(data.meta.submission, data.meta.classes, data.test_ids, tmp_path) == []
    preds = [i % 2 for i in range(len(data.test_ids))]
    out = write_submission(tmp_path / "submission.csv", data.meta.submission, data.meta.classes, data.test_ids, preds)
    header, rows = _read(out)
    sample_header, sample_rows = _read(comp / "sample_submission.csv")
    assert header == sample_header == ["id", "label", "Usage"]
    assert [r[0] for r in rows] == [r[0] for r in sample_rows]  # same ids, same order, same spelling
    assert all(r[0].endswith(".png") == ext_in_ids for r in rows)
    assert all(r[2] == "Public" for r in rows)  # extra columns keep the sample's values
    by_id = dict(zip(data.test_ids, preds, strict=True))
    assert {r[0]: r[1] for r in rows} == {i: data.meta.classes[p] for i, p in by_id.items()}
    assert check_submission(out, data.meta.submission, data.meta.classes) == []


def test_integer_codes_when_the_sample_holds_integers_for_named_classes(tmp_path):
    comp = make_competition(tmp_path / "comp", sample_label="0")
    data = _prepared(comp, tmp_path)
    preds = [1] * len(data.test_ids)
    out = write_submission(tmp_path / "s.csv", data.meta.submission, data.meta.classes, data.test_ids, preds)
    assert {r[1] for r in _read(out)[1]} == {"1"}  # "dog" is class 1 of the sorted classes
    assert check_submission(out, data.meta.submission, data.meta.classes) == []


def test_numeric_class_names_are_written_as_names(tmp_path):
    comp = make_competition(tmp_path / "comp", classes=("3", "10"), sample_label="3")
    data = _prepared(comp, tmp_path)
    assert data.meta.classes == ["3", "10"]  # numeric order
    out = write_submission(tmp_path / "s.csv", data.meta.submission, data.meta.classes, data.test_ids,
                           [1] * len(data.test_ids))
    assert {r[1] for r in _read(out)[1]} == {"10"}


def test_one_column_per_class_is_written_one_hot(tmp_path):
    comp = make_competition(tmp_path / "comp", sample_header=("id", "cat", "dog"))
    data = _prepared(comp, tmp_path)
    out = write_submission(tmp_path / "s.csv", data.meta.submission, data.meta.classes, data.test_ids,
                           [0] * len(data.test_ids))
    header, rows = _read(out)
    assert header == ["id", "cat", "dog"] and all(r[1:] == ["1", "0"] for r in rows)


def test_check_lists_every_difference_and_preflight_refuses_a_sample_without_label(tmp_path):
    comp = make_competition(tmp_path / "comp")
    data = _prepared(comp, tmp_path)
    fmt, classes = data.meta.submission, data.meta.classes
    header, rows = _read(comp / "sample_submission.csv")
    _csv(tmp_path / "bad.csv", ["label", "id"], [[r[1], r[0]] for r in rows[2:]][::-1] + [["bird", "x"]])
    problems = " | ".join(check_submission(tmp_path / "bad.csv", fmt, classes))
    assert "columns are ['label', 'id']" in problems and "rows" in problems
    assert "ids differ" in problems and "'bird'" in problems
    only_ids = SubmissionFormat(id_col="id", label_col="label", ids=[r[0] for r in rows],
                                sample_path=str(tmp_path / "ids.csv"))
    _csv(tmp_path / "ids.csv", ["id"], [[r[0]] for r in rows])
    with pytest.raises(SubmissionError, match="no column for the label"):
        preflight(only_ids, classes, data.test_ids, tmp_path)


def test_preflight_warns_when_a_test_image_is_unreadable(tmp_path):
    comp = make_competition(tmp_path / "comp")
    (comp / "test" / "te_03.png").write_bytes(b"not a png")
    data = _prepared(comp, tmp_path)
    warnings = preflight(data.meta.submission, data.meta.classes, data.test_ids, tmp_path)
    assert len(warnings) == 1 and "te_03" in warnings[0]
    out = write_submission(tmp_path / "s.csv", data.meta.submission, data.meta.classes, data.test_ids,
                           [1] * len(data.test_ids))
    assert len(_read(out)[1]) == 10  # no row lost: Kaggle rejects missing rows


def test_a_sample_deleted_after_preparation_does_not_cost_the_submission(tmp_path):
    comp = make_competition(tmp_path / "comp", sample_header=("id", "label", "Usage"))
    data = _prepared(comp, tmp_path)
    (comp / "sample_submission.csv").unlink()
    out = write_submission(tmp_path / "s.csv", data.meta.submission, data.meta.classes, data.test_ids,
                           [0] * len(data.test_ids))
    header, rows = _read(out)
    assert header == ["id", "label"] and [r[0] for r in rows] == data.meta.submission.ids


# ---------------------------------------------------------------- the adapter, against a fake KaggleApi


def _http_error(code: int) -> requests.HTTPError:
    response = requests.Response()
    response.status_code = code
    return requests.HTTPError(f"{code} Client Error", response=response)


class FakeKaggleApi:
    """In-process stand-in with the official KaggleApi's method names and arguments."""

    def __init__(self, competition_dir: Path | None = None, *, fail: BaseException | None = None,
                 pending_polls: int = 1, score: str = "0.91000"):
        self.competition_dir, self.fail = competition_dir, fail
        self.pending_polls, self.score = pending_polls, score
        self.submitted: list[tuple[str, str, str, bytes]] = []
        self.downloads = 0

    def competition_download_files(self, competition, path=None, force=False, quiet=True, unzip=False):
        if self.fail:
            raise self.fail
        self.downloads += 1
        assert self.competition_dir is not None and path is not None
        outer = Path(path) / f"{competition}.zip"
        # Like many competitions: a csv at the top, the images in nested zips of bare files.
        with zipfile.ZipFile(outer, "w") as zf:
            for csv_file in self.competition_dir.glob("*.csv"):
                zf.write(csv_file, csv_file.name)
            for folder in ("train", "test"):
                inner = Path(path) / f"{folder}.zip"
                with zipfile.ZipFile(inner, "w") as iz:
                    for f in sorted((self.competition_dir / folder).iterdir()):
                        iz.write(f, f.name)
                zf.write(inner, inner.name)
                inner.unlink()

    def competition_submit(self, file_name, message, competition, quiet=False):
        if self.fail:
            raise self.fail
        self.submitted.append((competition, message, Path(file_name).name, Path(file_name).read_bytes()))
        return SimpleNamespace(message="Successfully submitted", ref=1)

    def competition_submissions(self, competition):
        if not self.submitted:
            return []
        pending = self.pending_polls > 0
        self.pending_polls -= 1
        status = SimpleNamespace(name="PENDING" if pending else "COMPLETE")
        return [SimpleNamespace(description=self.submitted[-1][1], status=status,
                                public_score=None if pending else self.score, error_description="")]


def test_download_unpacks_nested_zips_into_a_detectable_layout(tmp_path):
    api = FakeKaggleApi(make_competition(tmp_path / "src"))
    dest = download_competition("tiny-cats", tmp_path / "dl", api=api)
    assert sorted(p.name for p in dest.iterdir() if not p.name.startswith(".")) == [
        "sample_submission.csv", "test", "train", "train.csv"]
    assert not list(dest.rglob("*.zip"))
    source = resolve_source(str(dest))
    assert source.kind == "kaggle" and len(source.train) == 24 and len(source.test) == 10
    download_competition("tiny-cats", dest, api=api)
    assert api.downloads == 1  # unpacked once, reused


@pytest.mark.parametrize(("error", "says"), [
    (_http_error(403), "accept the competition's rules"),
    (_http_error(401), "API token is wrong or expired"),
    (_http_error(404), "no such competition"),
    (requests.ConnectionError("Name or service not known"), "cannot reach kaggle.com"),
])
def test_download_failures_say_what_to_do(tmp_path, error, says):
    with pytest.raises(KaggleError, match=says):
        download_competition("tiny-cats", tmp_path / "dl", api=FakeKaggleApi(fail=error))


def test_missing_credentials_are_explained_before_the_package_is_touched(tmp_path, monkeypatch):
    for var in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN", "KAGGLE_CONFIG_DIR", "XDG_CONFIG_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert find_credentials() is None
    with pytest.raises(KaggleError, match=r"~/.kaggle/kaggle.json.*KAGGLE_USERNAME and KAGGLE_KEY"):
        official_api()
    (tmp_path / ".kaggle").mkdir()
    (tmp_path / ".kaggle" / "kaggle.json").write_text(json.dumps({"username": "me"}))
    with pytest.raises(KaggleError, match="needs both 'username' and 'key'"):
        find_credentials()
    monkeypatch.setenv("KAGGLE_USERNAME", "me")
    monkeypatch.setenv("KAGGLE_KEY", "abc")
    assert find_credentials() == "KAGGLE_USERNAME/KAGGLE_KEY"
    # The official package imports and authenticates with a key (no network needed for that step).
    api = official_api()
    assert type(api).__name__ == "KaggleApi"
    assert all(callable(getattr(api, m)) for m in
               ("competition_download_files", "competition_submit", "competition_submissions"))


def test_submit_waits_for_the_public_score(tmp_path):
    api = FakeKaggleApi(pending_polls=2)
    (tmp_path / "submission.csv").write_text("id,label\na,cat\n")
    naps: list[float] = []
    result = submit("tiny-cats", tmp_path / "submission.csv", "first try", api=api, poll_s=5, sleep=naps.append)
    assert result.status == "complete" and result.public_score == "0.91000" and naps == [5, 5]
    assert api.submitted[0][:3] == ("tiny-cats", "first try", "submission.csv")
    gave_up = submit("tiny-cats", tmp_path / "submission.csv", "again", api=FakeKaggleApi(pending_polls=99),
                     wait_s=10, poll_s=5, sleep=naps.append)
    assert gave_up.status == "unknown" or gave_up.public_score is None
    with pytest.raises(KaggleError, match="accept the competition's rules"):
        submit("tiny-cats", tmp_path / "submission.csv", "m", api=FakeKaggleApi(fail=_http_error(403)))


def test_run_kaggle_example_downloads_runs_and_submits(tmp_path, capsys):
    """examples/run_kaggle.py --competition --submit, end to end with the fake API and a real (tiny) run."""
    spec = importlib.util.spec_from_file_location("run_kaggle", ROOT / "examples" / "run_kaggle.py")
    assert spec is not None and spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    comp = make_competition(tmp_path / "src", sample_header=("id", "label", "Usage"), per_class=20)
    api = FakeKaggleApi(comp, pending_polls=0)
    out = tmp_path / "run"
    rc = example.main(["--competition", "tiny-cats", "--submit", "automodel test", "--download-dir",
                       str(tmp_path / "dl"), "--out", str(out), "--iterations", "0", "--candidate-budget", "6",
                       "--time-budget", "60", "--device", "cpu", "--threads", "1"], api=api)
    printed = " ".join(capsys.readouterr().out.split())
    assert rc == 0, printed[-3000:]
    header, rows = _read(out / "submission.csv")
    sample_header, sample_rows = _read(comp / "sample_submission.csv")
    assert header == sample_header and [r[0] for r in rows] == [r[0] for r in sample_rows]
    assert {r[1] for r in rows} <= {"cat", "dog"}
    assert api.submitted and api.submitted[0][3] == (out / "submission.csv").read_bytes()
    assert "public score 0.91000" in printed
    assert preflight_run(out) == []


def test_run_kaggle_example_refuses_submit_without_competition(capsys):
    spec = importlib.util.spec_from_file_location("run_kaggle", ROOT / "examples" / "run_kaggle.py")
    assert spec is not None and spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    assert example.main(["--submit", "m"]) == 2
    assert "--submit needs --competition" in capsys.readouterr().out
