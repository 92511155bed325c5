"""The ``gancls`` commands of this part: ``experiment``, ``sweep``, ``compare`` and ``serve`` (their
modules are imported when the command runs, so a stage's start does not pay for them)."""

from __future__ import annotations

import argparse
from pathlib import Path

from .process import ExperimentFailed  # the CLI's one-line error of this part (cli.py imports it from here)


def _experiment(args, params):
    from .experiment import run_experiment, settings_file

    overrides = [o for f in args.settings for o in settings_file(f)] + args.set
    code = run_experiment(overrides, args.params, ["--name", args.name] if args.name else [])
    if code:
        raise ExperimentFailed(f"dvc exp run failed (exit {code}); its messages are above")
    print("experiment done: `dvc exp show` lists it, `dvc metrics diff` compares it with HEAD")


def _sweep(args, params):
    from .sweep import run_sweep

    code = run_sweep(args.file, args.params)
    if code:
        raise ExperimentFailed(
            f"sweep {args.file}: not every experiment finished (exit {code}); rerun to continue"
            if code < 128
            else f"sweep {args.file}: stopped; rerun to continue"
        )


def _compare(args, params):
    from .compare import compare

    out = args.out or f"reports/sweeps/compare-{'-'.join(args.exp)}"[:120]
    paths = compare(args.exp, out, Path(args.params).resolve().parent, args.baseline, sheet=not args.no_sheet)
    print(f"comparison: {', '.join(str(p) for p in paths.values())}")


def _serve(args, params):
    from ..config import load_params
    from .serve import serve_flow

    root = Path(args.root).resolve()
    serve_flow(root, load_params(root / "params.yaml"), interval=args.interval, cron=args.cron)


def add_run_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "experiment",
        help="dvc exp run with settings from a file and -S, checked first",
        description="Check the settings against params.yaml's schema and that the raw data they "
        "read is there, then `dvc exp run -S ...`; if the run fails, params.yaml and "
        "*.dvc are put back as they were. `make run-cub` is "
        "`gancls experiment --settings configs/reed_cub.yaml`.",
    )
    p.add_argument(
        "--settings",
        action="append",
        default=[],
        metavar="FILE",
        help="YAML of params.yaml sections to override (e.g. configs/reed_cub.yaml)",
    )
    p.add_argument(
        "-S",
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="one more override, applied after --settings (as `dvc exp run -S`)",
    )
    p.add_argument("--name", help="the experiment's name (default: DVC's)")
    p.set_defaults(fn=_experiment)
    p = sub.add_parser(
        "sweep",
        help="settings x seeds as DVC experiments (DVC's queue), then their comparison",
        description="Run every (setting, seed) of a sweep file (docs/SWEEPS.md) as a DVC experiment "
        "<sweep>-<setting>-s<seed> with `dvc exp run --queue` and `dvc queue start --jobs`, skipping "
        "those already done with the same params; the workspace is left as it was. Then write "
        "reports/sweeps/<sweep>/: comparison.csv, comparison.md, tradeoff.png, sheet.png.",
    )
    p.add_argument("file", help="the sweep file (YAML: name, baseline, seeds, jobs, settings)")
    p.set_defaults(fn=_sweep)
    p = sub.add_parser(
        "compare",
        help="experiments side by side: mean +- std over seeds, differences with 95%% intervals, pictures",
        description="Compare finished DVC experiments of HEAD: runs whose params differ only in seed "
        "are one setting. Writes comparison.csv, comparison.md, tradeoff.png and sheet.png.",
    )
    p.add_argument("exp", nargs="+", help="experiment names (`dvc exp list`)")
    p.add_argument("--baseline", help="the setting the others are compared with (default: the first)")
    p.add_argument("--out", help="folder to write (default reports/sweeps/compare-<names>)")
    p.add_argument("--no-sheet", action="store_true", help="skip the picture sheet (no generators read)")
    p.set_defaults(fn=_compare)
    p = sub.add_parser(
        "serve",
        help="the scheduled flow on a Prefect server (make serve)",
        description="Start a loopback Prefect server (serve: in params.yaml) unless PREFECT_API_URL is set, "
        "and serve the deployment gancls-scheduled/<flow.name> of flows/scheduled.py on the flow.cron "
        "schedule, one run at a time. Ctrl-C stops both.",
    )
    p.add_argument("--root", default=".", help="the git + DVC repository the runs reproduce (default: .)")
    when = p.add_mutually_exclusive_group()
    when.add_argument("--interval", type=float, help="seconds between runs instead of flow.cron")
    when.add_argument("--cron", help="cron schedule instead of flow.cron")
    p.set_defaults(fn=_serve)
