"""The run report: report.md + a self-contained report.html, from the run directory alone, in a real browser."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from automodel.cli import main
from automodel.report import build_report, load_run_view

SECTIONS = ("overview", "dataset", "attempts", "progress", "best", "confusion", "code", "usage", "faults")
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]


def _history_lines(run: Path) -> int:
    return len((run / "history.jsonl").read_text().splitlines())


def test_report_of_a_finished_run_is_self_contained(tiny_run):
    _, run = tiny_run
    md, html_path = build_report(run)
    html = html_path.read_text()
    assert md.read_text().startswith("# AutoModel run: demo")
    # Self-contained: every image is inline, nothing is fetched.
    srcs = re.findall(r'<img src="([^"]*)"', html)
    assert srcs and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert not re.search(r'(src|href)="(http|//|file:)', html)
    for section in SECTIONS:
        assert f"id='{section}'" in html, section
    view = load_run_view(run)
    assert len(view.samples) == 10 and all(imgs.shape[0] == 8 for imgs in view.samples.values())
    # The confusion matrix agrees with the test accuracy that finalize() recorded.
    final = json.loads((run / "final.json").read_text())
    assert view.confusion is not None
    correct = sum(view.confusion[i][i] for i in range(10))
    assert sum(map(sum, view.confusion)) == final["test_size"]
    assert correct / final["test_size"] == pytest.approx(final["test_accuracy"], abs=1e-4)
    for name in ("data.py", "model.py", "training.py"):
        assert name in html
    # The Analyst's backend rejected the key (see the tiny_run fixture): a fault row, the key redacted.
    assert "AuthenticationError" in html and "[redacted]" in html


def test_report_of_a_crashed_run_says_what_is_missing(tiny_run, tmp_path):
    _, finished = tiny_run
    run = tmp_path / "crashed"
    shutil.copytree(finished, run, ignore=shutil.ignore_patterns("final*", "best", "data", "report.*"))
    runjson = json.loads((run / "run.json").read_text())
    with open(run / "history.jsonl", "a") as f:
        f.write('{"iteration": 3, "target": "mod')  # torn by a kill -9
    profile = {**runjson["profile"], "skipped": {"corrupt": 2}}
    (run / "run.json").write_text(json.dumps({**runjson, "status": "running", "profile": profile}))
    with open(run / "run.log", "a") as f:
        for name in ("a.png", "b.png"):
            f.write(json.dumps({"run_id": "x", "event": "data.skip", "reason": "corrupt", "path": f"train/{name}",
                                "detail": "cannot identify image file"}) + "\n")
    assert main(["report", str(run)]) == 0
    html = (run / "report.html").read_text()
    assert "train/b.png (cannot identify image file)" in html
    assert "unfinished" in html
    assert "sample images not available" in html
    assert "Confusion matrix not available" in html
    assert "No candidate produced a valid score yet" in html
    assert html.count("<tr>") >= _history_lines(run) - 1
    assert (run / "report.md").is_file()


def test_report_command_refuses_a_folder_that_is_not_a_run(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "not a run directory" in " ".join(capsys.readouterr().out.split())


def test_report_opens_in_headless_chromium(tiny_run, tmp_path_factory):
    """Every image decodes, the sections are there, one table row per attempt; screenshot kept."""
    _, run = tiny_run
    try:
        from playwright.sync_api import Error as PlaywrightError
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        pytest.skip(f"playwright is not installed ({exc}); pip install playwright")
    if not CHROMIUM.is_file():
        pytest.skip("Chromium is not installed: apt-get install -y chromium chromium-driver")
    _, html_path = build_report(run)
    shots = tmp_path_factory.mktemp("report-screenshots")
    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_playwright() as pw:
        try:  # a new empty profile (--user-data-dir), a phone-sized window
            browser = pw.chromium.launch_persistent_context(str(profile), executable_path=str(CHROMIUM),
                                                            args=CHROMIUM_FLAGS, viewport={"width": 390, "height": 844})
        except PlaywrightError as exc:
            print(f"SKIP reason: Chromium cannot start here: {exc}")
            pytest.skip(f"Chromium cannot start here: {str(exc)[:300]}")
        try:
            page = browser.new_page()
            page.goto(html_path.as_uri())
            page.wait_for_load_state("load")
            widths = page.evaluate("Array.from(document.images).map(i => i.complete ? i.naturalWidth : 0)")
            ids = page.evaluate("Array.from(document.querySelectorAll('section[id]')).map(s => s.id)")
            rows = page.evaluate("document.querySelectorAll('#attempt-table tbody tr').length")
            overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
            page.screenshot(path=str(shots / "report-phone.png"), full_page=True)
        finally:
            browser.close()
    print(f"screenshot: {shots / 'report-phone.png'}")
    assert len(widths) >= 15 and all(w > 0 for w in widths), widths
    assert set(SECTIONS) <= set(ids)
    assert rows == _history_lines(run)
    assert overflow <= 0, "the page scrolls sideways on a phone"
    assert (shots / "report-phone.png").stat().st_size > 10_000
