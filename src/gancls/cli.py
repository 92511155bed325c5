"""``gancls <stage>``: one thin command per DVC stage over the importable stage functions.

Every stage reads params.yaml (``--params``) and its fixed input/output paths from the options
below, which dvc.yaml passes explicitly.  Known failures (bad data, bad params, failed validation)
print a readable message naming the file and exit 1 without a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from . import __version__  # noqa: F401  (sets telemetry variables)
from .config import ConfigError, load_params
from .evaluation.stage_times import STAGES, timed
from .runs.commands import ExperimentFailed, add_run_commands

ENCODER_NOTE = (
    "--text encodes a sentence with the text encoder of text_encoder.weights (stage "
    "train-text-encoder: fitted to the training captions, or Reed's pretrained CUB encoder with "
    "text_encoder.source reed); --query and --caption-id draw test captions with their stored embeddings."
)


def _make_sample(args, params):
    from .data.synthetic import make_sample

    out = make_sample(params.sample, params.sample.out_dir)
    print(f"sample written to {out}")


def _validate(args, params):
    from .data.validate import validate_raw

    summary = validate_raw(
        params.data.raw_dir,
        params.validation,
        params.data.source,
        params.validation.report_dir,
        layout=params.data.layout,
    )
    print(f"validation passed: {json.dumps(summary)}")


def _prepare(args, params):
    from .data.prepare import prepare
    from .data.validate import validate_prepared

    cfg = params.prepare
    counts = prepare(
        params.data.raw_dir,
        cfg.out,
        cfg,
        params.data.source,
        check=lambda path: validate_prepared(path, params.validation, cfg.report_dir),
        layout=params.data.layout,
    )
    print(f"prepared {counts} -> {cfg.out}")


def _train_scorer(args, params):
    from .evaluation.scorer import train_scorer

    cfg = params.scorer
    summary = train_scorer(params.prepare.out, params, cfg.out, cfg.metrics)
    print(f"scorer trained: {json.dumps(summary)}")


def _train_text_encoder(args, params):
    from .training.train_text_encoder import train_text_encoder

    m = train_text_encoder(params.prepare.out, params)
    print(
        f"text encoder ({m['source']}) -> {params.text_encoder.weights}: on the {m['test_captions']} test captions "
        f"cosine {m['test_cosine']:.4f}, retrieval top-1 {m['test_top1']:.3f} ({params.text_encoder.metrics})"
    )


def _real_floor(args, params):
    from .evaluation.floor import real_floor

    print(f"real-against-real floor: {json.dumps(real_floor(params))}")


def _real_features(args, params):
    from .evaluation.evaluate import real_features

    print(f"real-image features: {json.dumps(real_features(params.prepare.out, params))}")


def _train(args, params):
    from .training.distributed import launch
    from .training.train import train

    n = params.train.processes
    if n > 1 and "WORLD_SIZE" not in os.environ:  # start n DDP copies of this command under torchrun
        code = launch(n, ["--params", args.params, "train"])
        if code:
            raise ConfigError(f"{n} training processes failed (exit {code}); their messages are above")
        return
    summary = train(params.prepare.out, params)
    print(f"trained: {json.dumps(summary)}")


def _generate(args, params):
    from .drawing.generate import generate

    out = generate(Path(params.train.out_dir) / "generator.pt", params.prepare.out, params)
    print(f"generated: {json.dumps(out)}")


def _evaluate(args, params):
    from .evaluation.evaluate import evaluate

    out = evaluate(Path(params.generate.out_dir) / "images.h5", params.prepare.out, params, args.clock)
    tm = out["text_match"]
    print(
        f"scores written to {params.evaluate.out}: text match {tm['accuracy']:.3f} "
        f"(real ceiling {tm['real_ceiling']:.3f}, mismatched {tm['mismatched_accuracy']:.3f}, "
        f"chance {tm['chance']:.3f}); FID {out['fid']:.2f}, KID {out['kid_mean']:.4f} ± {out['kid_std']:.4f} "
        f"({out['n_fake']} generated vs {out['n_real']} real); report {params.evaluate.report}"
    )


def _sample(args, params):
    from .drawing.draw import SentenceError, draw_sentences, sample_images

    texts = list(args.text)
    if args.file:
        lines = Path(args.file).read_text(encoding="utf-8").splitlines()
        texts += [line.strip() for line in lines if line.strip()]
        if not texts:
            raise SentenceError(f"{args.file}: no sentence in it (one a line)")
    if texts:
        if args.query or args.caption_id:
            raise SentenceError("give sentences (--text/--file) or test captions (--query/--caption-id), not both")
        out = args.out or f"reports/sample_{_slug(texts[0])}.png"
        res = draw_sentences(
            Path(params.train.out_dir) / "generator.pt",
            params.text_encoder.weights,
            texts,
            out,
            per_sentence=args.n,
            seed=args.seed,
            device=params.train.device,
            h5=args.h5,
            warn=lambda w: print(f"gancls sample: warning: {w}", file=sys.stderr),
        )
        print(
            f"{res['sentences']} sentences drawn, {res['per_sentence']} images each: {res['grid']}"
            + (f" (images and texts: {res['h5']})" if "h5" in res else "")
        )
        return
    if args.h5:
        raise SentenceError("--h5 goes with --text or --file")
    out = args.out or f"reports/sample_{_slug(args.query or args.caption_id or 'query')}.png"
    res = sample_images(
        Path(params.train.out_dir) / "generator.pt",
        params.prepare.out,
        out,
        query=args.query,
        caption_id=args.caption_id,
        per_caption=args.n,
        max_captions=args.max_captions,
        seed=args.seed,
        device=params.train.device,
    )
    print(f"{res['captions']} of {res['matches']} matching captions drawn: {res['grid']}")


def _import_encoder(args, params):
    from .files import file_digest
    from .models.reed_t7 import import_reed_t7
    from .models.text_encoder import save_encoder

    state, sizes = import_reed_t7(args.file)
    out = args.out or params.text_encoder.weights
    origin = {"source": "reed_t7", "file": Path(args.file).name, "sha256": file_digest(args.file, "sha256")}
    save_encoder(out, state, sizes, origin)
    shape = f"{sizes['c1']}/{sizes['c2']}/{sizes['c3']}, GRU {sizes['hidden']}, {sizes['out']}-d"
    print(f"Reed's encoder {args.file} ({shape}) -> {out}")


def _fetch(args, params):
    from .data.fetch import fetch

    out = fetch(params.fetch, params.text_encoder.reed_t7)
    print(f"data in place: {json.dumps(out)}")


def _demo(args, params):
    import faulthandler
    import signal

    from .drawing.demo import STOP_SECONDS, demo

    # Ctrl-C stops it, also when a parent started us with SIGINT ignored (as gancls serve does)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    demo(params, args.params, exps=args.exp, host=args.host, port=args.port)
    faulthandler.dump_traceback_later(STOP_SECONDS, exit=True)  # the interpreter's exit (threads joined) too


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text.lower()).strip("_")[:40] or "query"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gancls", description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml", help="parameters file (default: params.yaml)")
    sub = parser.add_subparsers(dest="stage", required=True)
    sub.add_parser("make-sample", help="generate the embedded CUB-layout sample").set_defaults(fn=_make_sample)
    sub.add_parser("validate", help="Great Expectations checks of the raw data").set_defaults(fn=_validate)
    sub.add_parser("prepare", help="raw data -> HDF5, then validate it").set_defaults(fn=_prepare)
    sub.add_parser("train-scorer", help="train the text-conditioning classifier on real images").set_defaults(
        fn=_train_scorer
    )
    sub.add_parser(
        "train-text-encoder", help="fit the char-CNN-RNN text encoder (or import Reed's) and score it"
    ).set_defaults(fn=_train_text_encoder)
    sub.add_parser("real-floor", help="FID/KID of other real images against the real ones").set_defaults(fn=_real_floor)
    sub.add_parser("real-features", help="Inception features of the real test images (for FID/KID)").set_defaults(
        fn=_real_features
    )
    sub.add_parser("train", help="train GAN-CLS").set_defaults(fn=_train)
    sub.add_parser("generate", help="images from test captions + grids").set_defaults(fn=_generate)
    sub.add_parser("evaluate", help="text-conditioning score, FID / KID (/ IS) and the run report").set_defaults(
        fn=_evaluate
    )
    sub.add_parser("fetch", help="download, check and unpack real CUB + Reed's data, then dvc add it").set_defaults(
        fn=_fetch
    )
    add_run_commands(sub)
    p = sub.add_parser(
        "import-encoder",
        help="Reed's pretrained char-CNN-RNN .t7 -> text_encoder.weights",
        description="Read Reed's lm_sje_..._iter30000.t7 (a checkpoint holding protos.enc_doc, or "
        "the bare encoder) with torchfile, which runs no code, and save its weights as a "
        "weights-only file for `gancls sample --text`. A file holding code, another "
        "architecture or wrong shapes is refused with one line naming it.",
    )
    p.add_argument("file", help="Reed's .t7")
    p.add_argument("--out", help="weights file to write (default text_encoder.weights of params.yaml)")
    p.set_defaults(fn=_import_encoder)
    p = sub.add_parser(
        "sample",
        help="draw images for test captions matching a query",
        description="Draw images with the trained generator for sentences of your own (--text, "
        "--file) or for the test captions that match --query (a phrase, whole words, "
        "case-insensitive) or --caption-id, and write a captioned grid PNG. " + ENCODER_NOTE,
        epilog='example: gancls sample --text "a small bird with a red body and a blue head" '
        '--text "this bird is yellow with black wings" --n 8',
    )
    p.add_argument(
        "--text",
        action="append",
        default=[],
        metavar="SENTENCE",
        help='a sentence to draw, e.g. "a small bird with a red body and a blue head" (repeatable)',
    )
    p.add_argument("--file", help="a text file of sentences to draw, one a line")
    p.add_argument(
        "--h5",
        help="with --text/--file: also write the images ([sentences, n, 64, 64, 3] uint8, "
        "dataset images) and the sentences (dataset texts) to this HDF5 file",
    )
    p.add_argument("--query", help='phrase to look for in the test captions, e.g. "red body"')
    p.add_argument("--caption-id", help="KEY (all captions of a test image) or KEY#i (its caption i)")
    # --n and --seed are checked by the drawing code (draw.whole_number), as the demo page's requests are:
    # the same one-line message from both.
    p.add_argument("--n", default="8", help="images per sentence or caption, 1 to 64 (default 8)")
    p.add_argument("--max-captions", type=int, default=8, help="rows, i.e. matching captions drawn (default 8)")
    p.add_argument("--seed", default="0", help="seed of the noise vectors, a whole number (default 0)")
    p.add_argument("--out", help="PNG to write (default reports/sample_<query or first sentence>.png)")
    p.set_defaults(fn=_sample)
    p = sub.add_parser(
        "demo",
        help="a local page: type a description, see the birds (Gradio)",
        description="Start a page on demo.host:demo.port (loopback by default; port 0: a free one) "
        "with the shipped generator and text encoder, or those of a DVC experiment (--exp), and print "
        "its address. No share link, no analytics. Ctrl-C stops it.",
    )
    p.add_argument(
        "--exp",
        action="append",
        metavar="NAME",
        help="a DVC experiment (or git revision) whose model to load, read with dvc.api; repeat it to "
        "compare experiments side by side (the same sentence, number and seed drawn by each)",
    )
    p.add_argument("--host", help="address to listen on (default demo.host, 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default demo.port; 0: a free one)")
    p.set_defaults(fn=_demo)
    return parser


def known_errors() -> tuple[type[BaseException], ...]:
    """The failures a command reports in one line (bad data, bad params, failed validation).

    Imported only once something has been raised: a stage's start does not pay for the modules of
    the others (torch, torchvision and Gradio take seconds to import on a laptop).
    """
    from .data.cub import LayoutError
    from .data.fetch import FetchError
    from .data.prepared import PreparedFileError
    from .drawing.demo import DemoError
    from .drawing.draw import NoMatch, SentenceError
    from .models.generator_file import CheckpointError
    from .models.text_encoder import EncoderImportError
    from .training.stats import TrainingDiverged

    errors: tuple[type[BaseException], ...] = (
        ConfigError,
        LayoutError,
        CheckpointError,
        NoMatch,
        TrainingDiverged,
        FetchError,
        PreparedFileError,
        ExperimentFailed,
        EncoderImportError,
        SentenceError,
        DemoError,
        FileNotFoundError,
        KeyError,
        OSError,
    )
    try:
        from .data.validate import ValidationFailed

        errors = errors + (ValidationFailed,)
    except ImportError:  # pragma: no cover - validate depends on great_expectations
        pass
    return errors


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        params = None if args.stage == "serve" else load_params(args.params)  # serve: --root's params.yaml
        if args.stage not in STAGES:
            args.fn(args, params)
        else:  # a DVC stage: its seconds go to <stage_times>/<stage>.json (the report's table)
            with timed(args.stage, params.stage_times) as args.clock:
                args.fn(args, params)
    except Exception as exc:
        if not isinstance(exc, known_errors()):
            raise
        msg = str(exc).strip() or type(exc).__name__
        print(f"gancls {args.stage}: error: {msg}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
