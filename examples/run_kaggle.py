"""Run AutoModel on a Kaggle competition end to end; with no --data / --competition, on the digits demo, offline.

    python examples/run_kaggle.py [--competition SLUG [--submit "message"] [--download-dir DIR]]
                                  [--data DIR] [--description TEXT] [--iterations N] [--time-budget S] [--out DIR]
                                  [any other `automodel run` option]

--competition downloads and unpacks the competition with the official kaggle package
(credentials: ~/.kaggle/kaggle.json or KAGGLE_USERNAME/KAGGLE_KEY; accept the rules on the
competition's page first). Before any training the run checks that the submission the best
model will write matches sample_submission.csv; at the end OUT/submission.csv is in exactly
that format. --submit "message" submits it and prints the public score when Kaggle returns one.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from rich.console import Console

from automodel.cli import main as automodel_main
from automodel.data import cache_dir
from automodel.kaggle import KaggleApiLike, KaggleError, download_competition, submit

console = Console(highlight=False)


def _take(args: list[str], flag: str) -> str | None:
    """Remove ``flag VALUE`` from ``args``; return VALUE (``None`` when absent)."""
    if flag not in args:
        return None
    i = args.index(flag)
    if i + 1 >= len(args):
        raise SystemExit(f"{flag} needs a value")
    value = args[i + 1]
    del args[i : i + 2]
    return value


def main(argv: list[str] | None = None, *, api: KaggleApiLike | None = None) -> int:
    """Download (optional), run, submit (optional); ``api`` replaces the official client (tests)."""
    args = list(sys.argv[1:] if argv is None else argv)
    data = _take(args, "--data")
    slug = _take(args, "--competition")
    message = _take(args, "--submit")
    download_dir = _take(args, "--download-dir")
    if message is not None and slug is None:
        console.print("[bold red]error:[/] --submit needs --competition SLUG (the competition to submit to)")
        return 2
    if slug is not None and data is not None:
        console.print("[bold red]error:[/] pass either --data DIR or --competition SLUG, not both")
        return 2
    try:
        if slug is not None:
            dest = Path(download_dir) if download_dir else cache_dir() / "kaggle" / slug
            console.print(f"downloading competition {slug} into {dest} ...")
            data = str(download_competition(slug, dest, api=api))
            console.print(f"competition data in {data}")
    except KaggleError as exc:
        console.print(f"[bold red]kaggle:[/] {exc}")
        return 2
    data = data or "demo"
    if "--out" not in args and "--resume" not in args:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        name = "kaggle-demo" if data == "demo" else f"kaggle-{slug}" if slug else "kaggle"
        args += ["--out", f"runs/{name}-{stamp}"]
    if data == "demo" and "--time-budget" not in args:
        args += ["--time-budget", "300"]
    out = Path(args[args.index("--out") + 1]) if "--out" in args else None
    rc = automodel_main(["run", data, *args])
    if rc != 0 or message is None or slug is None:
        return rc
    if out is None:
        console.print("[bold red]error:[/] --submit needs --out to find submission.csv")
        return 2
    try:
        result = submit(slug, out / "submission.csv", message, api=api)
    except KaggleError as exc:
        console.print(f"[bold red]kaggle:[/] {exc}")
        return 3
    if result.status == "error":
        console.print(f"[bold red]Kaggle could not score the submission:[/] {result.error}")
        return 3
    if result.public_score is not None:
        console.print(f"[bold green]submitted; public score {result.public_score}[/]")
    else:
        console.print(f"submitted ({result.message or result.status}); the public score is not back yet: "
                      f"see https://www.kaggle.com/competitions/{slug}/submissions")
    return 0


if __name__ == "__main__":
    sys.exit(main())
