"""The ``automodel`` command."""

from __future__ import annotations

import argparse
import errno
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console

if TYPE_CHECKING:
    from automodel.settings import RunSettings

__all__ = ["build_parser", "main", "run_settings"]

console = Console(highlight=False)
_TABLE_ROWS = 50
"""`automodel predict` without --out prints at most this many rows."""


def _add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("data", help="a folder (ImageFolder or Kaggle layout), a torchvision name, or 'demo'")
    p.add_argument("--description", default="", help="a sentence about the data (what the label means, cautions)")
    p.add_argument("--out", type=Path, default=None, help="run directory (default: runs/<dataset name>)")
    p.add_argument("--device", default=None, help="auto | cpu | cuda | cuda:N (default auto)")
    p.add_argument("--seed", type=int, default=None, help="default 0")
    p.add_argument("--val-fraction", type=float, default=None, help="default 0.2")
    p.add_argument("--id-col", default=None, help="id column of a Kaggle CSV (detected when omitted)")
    p.add_argument("--label-col", default=None, help="label column of a Kaggle CSV (detected when omitted)")
    p.add_argument("--weights-dir", default=None, help="folder of local pretrained weights <timm_name>.pth")
    p.add_argument("--max-train", type=int, default=None, help="use a stratified subset of this many training images")
    p.add_argument("--max-test", type=int, default=None, help="use a stratified subset of this many test images")


def _add_executor_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--executor", default=None, choices=["auto", "sandbox", "docker", "local", "ray"],
                   help="where candidate code runs: auto (the default: sandbox where bubblewrap starts, else local), "
                   "sandbox (bubblewrap), docker, local (no isolation), or ray (a Ray task per candidate, on the "
                   "cluster in RAY_ADDRESS or a local one; docs/ray.md); see README 'Security model'")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="automodel", description="A team of agents that builds an image classifier.")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="let the team build, train and improve a model")
    _add_data_args(run)
    run.add_argument("--config", type=Path, default=None, help="YAML/JSON file with a model backend per role")
    run.add_argument("--iterations", type=int, default=None,
                     help="an extra cap on attempts after the first pipeline (default: as many as the time budget allows)")
    run.add_argument("--time-budget", type=float, default=None, help="total wall-clock seconds, all used (default 900)")
    run.add_argument("--candidate-budget", type=float, default=None,
                     help="training seconds per candidate (default: a share of the time budget)")
    run.add_argument("--target", type=float, default=None, help="stop once validation accuracy reaches this")
    run.add_argument("--max-cost", type=float, default=None,
                     help="USD cap for priced backends (prices in the config); then the offline expert plays on")
    run.add_argument("--token-budget", type=int, default=None, help="stop after the LLM backends used this many tokens")
    run.add_argument("--threads", type=int, default=None,
                     help="CPU threads per candidate (default: the cores, divided by --parallel)")
    run.add_argument("--parallel", type=int, default=None, metavar="K",
                     help="explore K different changes at once, trained together (default 1: one at a time)")
    run.add_argument("--gpus", default=None, metavar="0,1|all|N",
                     help="GPUs the candidates spread over, one each (local and sandbox executors); "
                     "--device cuda:N is the one-GPU form")
    run.add_argument("--strategy", choices=["budgeted", "paper"], default=None,
                     help="budgeted (default): explore cheap, then train the best long; paper: equal shares from scratch")
    run.add_argument("--no-flip-check", action="store_true",
                     help="do not let the roles use the mirrored-image check (for ablations)")
    run.add_argument("--resume", action="store_true", help="continue the run in --out from its last completed attempt")
    run.add_argument("--json", action="store_true",
                     help="print one JSON event per line on stdout (human lines go to stderr)")
    run.add_argument("--no-zero-shot", action="store_true",
                     help="start from the reference recipe instead of the Architect's design (ablation)")
    run.add_argument("--no-try-out", action="store_true",
                     help="hand model-written code to the Executor untried (default: a model-backed role first "
                     "smoke-tests its code in a job, and a crash there is fed back instead of costing an attempt)")
    _add_executor_arg(run)

    once = sub.add_parser("train-once", help="train and score one candidate (three component files)")
    _add_data_args(once)
    once.add_argument("--components", type=Path, default=None,
                      help="folder with data.py, model.py, training.py (default: the reference recipe)")
    once.add_argument("--time-budget", type=float, default=120.0, help="training seconds (default 120)")
    once.add_argument("--memory-limit-mb", type=int, default=None)
    _add_executor_arg(once)

    val = sub.add_parser("validate", help="check component files against their interfaces")
    val.add_argument("components", type=Path)

    prof = sub.add_parser("profile", help="prepare a dataset and print its profile")
    _add_data_args(prof)

    rep = sub.add_parser("report", help="(re)build report.md and report.html of a run directory")
    rep.add_argument("run", type=Path, help="the run directory (--out of `automodel run`), finished or not")

    pred = sub.add_parser("predict", help="predict images with the best model of a run (in an executor job)")
    pred.add_argument("run", type=Path, help="the run directory (--out of `automodel run`), finished or not")
    pred.add_argument("images", nargs="+", help="image files and/or folders (searched recursively)")
    pred.add_argument("--out", "--csv", dest="out", type=Path, default=None,
                      help="write the predictions as CSV here (default: print a table)")
    pred.add_argument("--top-k", type=int, default=None,
                      help="the K best classes per image instead of one probability column per class")
    pred.add_argument("--device", default=None, help="default: the device the run trained on")
    _add_executor_arg(pred)

    exp = sub.add_parser("export", help="export the best model of a run to ONNX or TorchScript, with a model card")
    exp.add_argument("run", type=Path, help="the run directory (--out of `automodel run`), finished or not")
    exp.add_argument("--format", dest="fmt", choices=["onnx", "torchscript"], default="onnx", help="default onnx")
    exp.add_argument("--out", type=Path, default=None, help="folder for the model, model.json and model_card.md "
                     "(default RUN/export)")
    exp.add_argument("--device", default=None, help="default: the device the run trained on")
    _add_executor_arg(exp)
    return parser


def _default_out(data: str, command: str) -> Path:
    name = Path(data).name or "dataset"
    return Path("runs") / f"{name}-{command}"


def _source_options(args: argparse.Namespace) -> dict[str, Any]:
    return {k: v for k, v in (("max_train", args.max_train), ("max_test", args.max_test)) if v}


def _data_settings(args: argparse.Namespace, out: Path) -> Any:
    """The data part of the run settings, defaults from :class:`RunSettings` (defined once there)."""
    from automodel.settings import RunSettings

    return RunSettings.build(data=args.data, out=out, description=args.description or None, device=args.device,
                             seed=args.seed, val_fraction=args.val_fraction, id_col=args.id_col,
                             label_col=args.label_col, weights_dir=args.weights_dir, max_train=args.max_train,
                             max_test=args.max_test)


def cmd_train_once(args: argparse.Namespace) -> int:
    from automodel._console import EventPrinter
    from automodel.harness import copy_components
    from automodel.interfaces import REFERENCE_DIR, validate_components
    from automodel.workspace import open_workspace

    components = args.components or REFERENCE_DIR
    issues = validate_components(components)
    if issues:
        console.print("[red]component files do not satisfy their interfaces:[/]")
        for issue in issues:
            console.print(f"  {components}/{issue}")
        return 2
    out = args.out or _default_out(args.data, "train-once")
    st = _data_settings(args, out)
    ws = open_workspace(st.data, out, description=st.description, device=st.device, seed=st.seed,
                        val_fraction=st.val_fraction, id_col=st.id_col, label_col=st.label_col,
                        weights_dir=st.weights_dir, **_source_options(args))
    console.print(ws.data.meta.profile.summary())
    workdir = ws.store.root / "train-once"
    copy_components(Path(components), workdir)
    runner = ws.runner(memory_limit_mb=args.memory_limit_mb, executor=args.executor)
    key, extraction = runner.ensure_features(workdir, ws.store.root, on_event=EventPrinter(console))
    if extraction is not None and not extraction.ok:
        console.print(f"[bold red]extracting features {key} failed[/]: {extraction.status} "
                      f"{extraction.error.message if extraction.error else ''}; log: {extraction.log_path}")
        return 1
    result = runner.train(
        workdir, workdir, time_budget_s=args.time_budget, seed=st.seed, on_event=EventPrinter(console)
    )
    if result.ok and result.result:
        console.print(f"[bold green]val accuracy {result.result['val_accuracy']:.4f}[/] "
                      f"({result.result['epochs_run']} epochs, {result.result['images_per_s']:.0f} img/s); "
                      f"metrics and checkpoint in {workdir}")
        return 0
    err = result.error
    console.print(f"[bold red]{result.status}[/]: " + (f"{err.component}.py {err.error_type}: {err.message}" if err else ""))
    if err and err.lines:
        console.print("\n".join(str(line) for line in err.lines))
    console.print(f"full log: {result.log_path}")
    return 1


def cmd_validate(args: argparse.Namespace) -> int:
    from automodel.interfaces import validate_components

    issues = validate_components(args.components)
    for issue in issues:
        console.print(f"{args.components}/{issue}")
    if not issues:
        console.print("[green]data.py, model.py and training.py satisfy their interfaces[/]")
    return 1 if issues else 0


def cmd_profile(args: argparse.Namespace) -> int:
    from automodel.workspace import open_workspace

    out = args.out or _default_out(args.data, "profile")
    st = _data_settings(args, out)
    ws = open_workspace(st.data, out, description=st.description, device="cpu", seed=st.seed,
                        val_fraction=st.val_fraction, id_col=st.id_col, label_col=st.label_col,
                        **_source_options(args))
    console.print(json.dumps(ws.data.meta.profile.model_dump(mode="json"), indent=1, default=str))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from automodel.report import build_report

    md, html = build_report(args.run)
    console.print(f"report: {html} (and {md.name})")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from automodel._console import EventPrinter
    from automodel.deploy import predict_images

    preds = predict_images(args.run, args.images, executor=args.executor, device=args.device,
                           on_event=EventPrinter(console))
    from rich.markup import escape

    for skip in preds.skipped:
        console.print(f"[yellow]skipped[/] {escape(str(skip))}")
    if args.out is not None:
        preds.to_csv(args.out, top_k=args.top_k)
        console.print(f"[bold green]{len(preds)} image(s) predicted[/], {len(preds.skipped)} skipped: {args.out}")
        return 0
    from rich.table import Table

    header, rows = preds.table(args.top_k or min(3, len(preds.classes)))
    table = Table(*(escape(h) for h in header))
    for row in rows[:_TABLE_ROWS]:
        table.add_row(*(escape(c) for c in row))
    console.print(table)
    more = f" (the first {_TABLE_ROWS} shown; --out FILE.csv writes all)" if len(rows) > _TABLE_ROWS else ""
    console.print(f"{len(preds)} image(s) predicted{more}, {len(preds.skipped)} skipped")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from automodel._console import EventPrinter
    from automodel.deploy import export_model

    done = export_model(args.run, args.fmt, out=args.out, executor=args.executor, device=args.device,
                        on_event=EventPrinter(console))
    console.print(f"[bold green]exported[/] {done.path} ({done.path.stat().st_size / 1e6:.1f} MB); "
                  f"model card: {done.card_path}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from automodel._console import make_display
    from automodel._logs import configure_logging
    from automodel.executors import resolve_executor
    from automodel.run import run_team

    if args.executor is not None:
        resolve_executor(args.executor)  # an explicit executor that cannot start here stops the run now
    opts = run_settings(args)
    run_id = configure_logging(run_dir=opts.out)
    human = Console(highlight=False, stderr=True) if args.json else console
    display = make_display("json" if args.json else "auto", human, run_id=run_id or "")
    final = run_team(opts, console=human, display=display)
    return 0 if final.get("best_val_accuracy") is not None else 1


def run_settings(args: argparse.Namespace) -> RunSettings:
    """The settings of ``automodel run`` from its parsed arguments (only what the user set; defaults in
    :class:`~automodel.settings.RunSettings`)."""
    from automodel.settings import RunSettings

    return RunSettings.build(
        data=args.data,
        out=args.out or _default_out(args.data, "run"),
        description=args.description or None,
        config=args.config,
        iterations=args.iterations,
        time_budget_s=args.time_budget,
        candidate_budget_s=args.candidate_budget,
        strategy=args.strategy,
        target=args.target,
        token_budget=args.token_budget,
        max_cost_usd=args.max_cost,
        device=args.device,
        seed=args.seed,
        val_fraction=args.val_fraction,
        id_col=args.id_col,
        label_col=args.label_col,
        weights_dir=args.weights_dir,
        max_train=args.max_train,
        max_test=args.max_test,
        threads=args.threads,
        parallel_candidates=args.parallel,
        gpus=args.gpus,
        resume=args.resume or None,
        zero_shot=False if args.no_zero_shot else None,
        flip_check=False if args.no_flip_check else None,
        try_out=False if args.no_try_out else None,
        executor=args.executor,
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``automodel`` command."""
    from automodel._io import DiskFullError
    from automodel._logs import configure_logging
    from automodel.config import ConfigError
    from automodel.data import DataError
    from automodel.deploy import DeployError
    from automodel.executors import ExecutorError
    from automodel.settings import SettingsError

    args = build_parser().parse_args(argv)
    configure_logging()
    handlers = {"run": cmd_run, "train-once": cmd_train_once, "validate": cmd_validate, "profile": cmd_profile,
                "report": cmd_report, "predict": cmd_predict, "export": cmd_export}
    try:
        return handlers[args.command](args)
    except DataError as exc:
        console.print(f"[bold red]data error:[/] {exc}")
        return 2
    except (ConfigError, DeployError, ExecutorError, SettingsError, FileExistsError, FileNotFoundError,
            DiskFullError) as exc:
        console.print(f"[bold red]error:[/] {exc}")
        return 2
    except (OSError, RuntimeError) as exc:
        # AutoGen re-raises an agent's exception as RuntimeError("<Type>: <message>\nTraceback: ...")
        first = str(exc).splitlines()[0] if str(exc) else ""
        full = getattr(exc, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or first.startswith(
            ("DiskFullError:", "OSError: [Errno 28]")
        )
        if not full:
            raise
        console.print(f"[bold red]error:[/] no space left on the device ({first}). Every completed attempt is "
                      "kept; free some space, then continue with --resume.")
        return 2
    except KeyboardInterrupt:
        console.print("[yellow]interrupted; the run directory keeps every completed attempt (use --resume)[/]")
        return 130


if __name__ == "__main__":
    sys.exit(main())
