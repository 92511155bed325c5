"""How well GAN-CLS learns on the sample under several training settings: text_match per run.

Makes the default sample, prepares it and trains the scorer once (or reuses ``--prepared`` and
``--scorer``), then trains one GAN-CLS per configuration -- ``params.yaml`` with the configuration's
overrides -- in parallel processes, generates the test-caption images and scores them exactly as
``make run`` does (``gancls.scorer.score_generated``).  Each finished run appends one JSON line to
``<out>/results.jsonl``; a table sorted by accuracy is printed at the end.

    python benchmarks/learning_sweep.py                      # README's beta1 comparison: about 40 min on 2 cores
    python benchmarks/learning_sweep.py --device cuda --parallel 12 --cuda-graph configs.json

A configuration file maps run names to overrides in params.yaml's shape, e.g.
``{"b0_s1": {"seed": 1, "train": {"beta1": 0.0}}}``.  GPU runs are not bitwise the CPU's (and
neither are two CPU runs with several threads): compare settings by the mean of several seeds.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = {
    f"beta1_{b}_seed{s}": {"seed": s, "train": {"beta1": b, "epochs": 55}} for b in (0.0, 0.5) for s in (0, 1, 2)
}


def base_params(out: Path, name: str, over: dict, device: str, cuda_graph: bool):
    from gancls.config import parse_params
    from gancls.project import merge

    run = out / "runs" / name
    raw = merge(yaml.safe_load((ROOT / "params.yaml").read_text()), over)
    raw["train"].update(
        out_dir=str(run / "model"),
        live_dir=str(run / "live"),
        checkpoint_dir=str(run / "ckpt"),
        grid=str(run / "train_samples.png"),
        progress_gif=str(run / "train_progress.gif"),
        resume=False,
        device=device,
        cuda_graph=cuda_graph,
    )
    raw["generate"].update(
        out_dir=str(run / "generated"),
        grid=str(run / "generated_grid.png"),
        interp_grid=str(run / "interp_text.png"),
        noise_grid=str(run / "interp_noise.png"),
    )
    return parse_params(raw), run


def setup(out: Path) -> tuple[Path, Path]:
    """The default sample, prepared, and its scorer, under ``out``."""
    from gancls.config import parse_params
    from gancls.prepare import prepare
    from gancls.scorer import train_scorer
    from gancls.synthetic import make_sample

    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    prepared, scorer = out / "birds.h5", out / "scorer.pt"
    raw["prepare"]["out"] = str(prepared)
    raw["scorer"].update(out=str(scorer), metrics=str(out / "scorer.json"))
    params = parse_params(raw)
    if not prepared.exists():
        make_sample(params.sample, out / "sample")
        prepare(out / "sample", prepared, params.prepare, "sample")
    if not scorer.exists():
        train_scorer(prepared, params, scorer, out / "scorer.json")
    return prepared, scorer


def one(args) -> None:
    """Train, generate and score one configuration (a child process)."""
    import torch

    from gancls.generate import generate
    from gancls.scorer import score_generated
    from gancls.train import train

    if args.threads:
        torch.set_num_threads(args.threads)
    params, run = base_params(args.out, args.name, json.loads(args.overrides), args.device, args.cuda_graph)
    t = time.perf_counter()
    summary = train(args.prepared, params)
    seconds = time.perf_counter() - t
    generate(run / "model" / "generator.pt", args.prepared, params)
    match = score_generated(run / "generated" / "images.h5", args.prepared, args.scorer, params.seed)
    row = {
        "name": args.name,
        "overrides": json.loads(args.overrides),
        "train_s": round(seconds, 1),
        "steps": summary["steps"],
        "device": summary["device"],
        **{
            k: match[k] for k in ("accuracy", "mismatched_accuracy", "real_ceiling", "chance", "of_ceiling", "per_kind")
        },
    }
    with open(args.out / "results.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("configs", nargs="?", type=Path, help="JSON: run name -> overrides (default: beta1 x 3 seeds)")
    ap.add_argument("--out", type=Path, default=ROOT / "build" / "learning_sweep")
    ap.add_argument("--prepared", type=Path, help="a prepared sample (default: made under --out)")
    ap.add_argument("--scorer", type=Path, help="its scorer (default: trained under --out)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    ap.add_argument("--parallel", type=int, default=2, help="runs at a time")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per run (0: torch's default)")
    ap.add_argument("--cuda-graph", action="store_true", help="train.cuda_graph in every run (CUDA)")
    ap.add_argument("--one", nargs=2, metavar=("NAME", "OVERRIDES"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    import gancls  # noqa: F401  (telemetry off)

    args.out = args.out.resolve()
    if args.one:
        args.name, args.overrides = args.one
        return one(args)
    args.out.mkdir(parents=True, exist_ok=True)
    if not (args.prepared and args.scorer):
        args.prepared, args.scorer = setup(args.out)
    configs = json.loads(args.configs.read_text()) if args.configs else DEFAULT
    pending, running = list(configs.items()), {}
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads or os.cpu_count())}
    (args.out / "logs").mkdir(exist_ok=True)
    while pending or running:
        while pending and len(running) < args.parallel:
            name, over = pending.pop(0)
            cmd = [
                sys.executable,
                __file__,
                "--out",
                str(args.out),
                "--prepared",
                str(args.prepared),
                "--scorer",
                str(args.scorer),
                "--device",
                args.device,
                "--threads",
                str(args.threads),
                *(["--cuda-graph"] if args.cuda_graph else []),
                "--one",
                name,
                json.dumps(over),
            ]
            log = open(args.out / "logs" / f"{name}.log", "w")
            running[name] = (subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env), log)
        for name, (proc, log) in list(running.items()):
            if proc.poll() is not None:
                log.close()
                del running[name]
                print(
                    f"{name}: {'done' if proc.returncode == 0 else f'failed ({proc.returncode}), see logs/'}",
                    flush=True,
                )
        time.sleep(2)
    rows = [json.loads(line) for line in (args.out / "results.jsonl").read_text().splitlines()]
    rows = [r for r in rows if r["name"] in configs]
    for r in sorted(rows, key=lambda r: -r["accuracy"]):
        print(
            f"{r['name']:24s} accuracy {r['accuracy']:.3f}  of ceiling {r['of_ceiling']:.2f}  "
            f"mismatched {r['mismatched_accuracy']:.3f}  steps {r['steps']}  train {r['train_s']:.0f} s"
        )


if __name__ == "__main__":
    main()
