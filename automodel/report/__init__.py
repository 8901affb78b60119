"""The run report: ``report.md`` and a self-contained ``report.html``, from the run directory alone.

:func:`write_report` is called at the end of a run; :func:`build_report` (``automodel report
RUN``) rebuilds both from any run directory, also one that is still running, was killed or
crashed: whatever is missing is said to be missing.
"""

from __future__ import annotations

from pathlib import Path

from automodel._io import atomic_write_text
from automodel._logs import redact
from automodel.report._collect import RunView, YieldCount, authorship, load_run_view, yield_count
from automodel.report._html import render_html
from automodel.report._markdown import render_markdown
from automodel.store import RunStore

__all__ = ["RunView", "YieldCount", "authorship", "build_report", "load_run_view", "render_html", "render_markdown",
           "write_report", "yield_count"]


def _write_atomic(path: Path, text: str) -> None:
    atomic_write_text(path, text)


def build_report(run_dir: str | Path) -> tuple[Path, Path]:
    """(Re)write ``report.md`` and ``report.html`` of ``run_dir``; returns their paths.

    Raises:
        FileNotFoundError: ``run_dir`` is not a run directory.
    """
    view = load_run_view(run_dir)
    md, html = view.root / "report.md", view.root / "report.html"
    _write_atomic(md, redact(render_markdown(view)))
    _write_atomic(html, redact(render_html(view)))
    return md, html


def write_report(store: RunStore) -> Path:
    """Write ``report.md`` and ``report.html`` of ``store``'s run; returns the path of ``report.md``."""
    md, _html = build_report(store.root)
    return md
