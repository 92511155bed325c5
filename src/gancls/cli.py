"""``gancls <stage>``: one thin command per DVC stage over the importable stage functions.

Every stage reads params.yaml (``--params``) and its fixed input/output paths from the options
below, which dvc.yaml passes explicitly.  Known failures (bad data, bad params, failed validation)
print a readable message naming the file and exit 1 without a traceback.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import __version__  # noqa: F401  (sets telemetry variables)
from .config import ConfigError, load_params


def _make_sample(args, params):
    from .sample import make_sample

    out = make_sample(params["sample"], params["sample"]["out_dir"])
    print(f"sample written to {out}")


def _validate(args, params):
    from .validate import validate_raw

    summary = validate_raw(params["data"]["raw_dir"], params["validate"], params["data"]["source"],
                           params["validate"]["report_dir"])
    print(f"validation passed: {json.dumps(summary)}")


def _prepare(args, params):
    from .prepare import prepare
    from .validate import validate_prepared

    cfg = params["prepare"]
    counts = prepare(params["data"]["raw_dir"], cfg["out"], cfg, params["data"]["source"],
                     check=lambda path: validate_prepared(path, params["validate"], cfg["report_dir"]))
    print(f"prepared {counts} -> {cfg['out']}")


def _train(args, params):
    from .train import train

    summary = train(params["prepare"]["out"], params, args.loss_csv, args.grid, args.metrics)
    print(f"trained: {json.dumps(summary)}")


def _generate(args, params):
    from .generate import generate

    out = generate(Path(params["train"]["out_dir"]) / "generator.pt", params["prepare"]["out"], params)
    print(f"generated: {json.dumps(out)}")


def _evaluate(args, params):
    from .evaluate import evaluate

    out = evaluate(Path(params["generate"]["out_dir"]) / "images.h5", params["prepare"]["out"], params)
    print(f"scores written to {params['evaluate']['out']}: FID {out['fid']:.2f}, "
          f"KID {out['kid_mean']:.4f} ± {out['kid_std']:.4f} ({out['n_fake']} generated vs {out['n_real']} real)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gancls", description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml", help="parameters file (default: params.yaml)")
    sub = parser.add_subparsers(dest="stage", required=True)
    sub.add_parser("make-sample", help="generate the embedded CUB-layout sample").set_defaults(fn=_make_sample)
    sub.add_parser("validate", help="Great Expectations checks of the raw data").set_defaults(fn=_validate)
    sub.add_parser("prepare", help="raw data -> HDF5, then validate it").set_defaults(fn=_prepare)
    p = sub.add_parser("train", help="train GAN-CLS")
    p.add_argument("--loss-csv", default="reports/train_loss.csv")
    p.add_argument("--grid", default="reports/train_samples.png")
    p.add_argument("--metrics", default="metrics/train.json")
    p.set_defaults(fn=_train)
    sub.add_parser("generate", help="images from test captions + grid").set_defaults(fn=_generate)
    sub.add_parser("evaluate", help="FID / KID of the generated images").set_defaults(fn=_evaluate)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .cub import LayoutError

    errors: tuple[type[BaseException], ...] = (ConfigError, LayoutError, FileNotFoundError, KeyError, OSError)
    try:
        from .validate import ValidationFailed

        errors = errors + (ValidationFailed,)
    except ImportError:  # pragma: no cover - validate depends on great_expectations
        pass
    try:
        params = load_params(args.params)
        args.fn(args, params)
    except errors as exc:
        msg = str(exc).strip() or type(exc).__name__
        print(f"gancls {args.stage}: error: {msg}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
