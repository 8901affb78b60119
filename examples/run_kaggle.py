"""Run AutoModel on a Kaggle-style dataset; with no --data, on the built-in digits demo, offline.

    python examples/run_kaggle.py [--data DIR] [--description TEXT] [--iterations N] [--time-budget S] [--out DIR]
"""

from __future__ import annotations

import sys
import time

from automodel.cli import main

if __name__ == "__main__":
    args = sys.argv[1:]
    data = "demo"
    if "--data" in args:
        i = args.index("--data")
        data = args[i + 1]
        del args[i : i + 2]
    if "--out" not in args and "--resume" not in args:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        args += ["--out", f"runs/{'kaggle-demo' if data == 'demo' else 'kaggle'}-{stamp}"]
    if data == "demo" and "--time-budget" not in args:
        args += ["--time-budget", "300"]
    sys.exit(main(["run", data, *args]))
