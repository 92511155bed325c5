"""How well GAN-CLS learns on the sample under several training settings: text_match, FID and the
diversity of the noise per run.

Makes the default sample, prepares it, trains the scorer and the text encoder and caches the real
Inception features once (or reuses ``--prepared``, ``--scorer``, ``--encoder``, ``--real-features``),
then trains one GAN-CLS per configuration -- ``params.yaml`` with the configuration's overrides -- in
parallel processes, and generates and evaluates exactly as ``make run`` does (``gancls.drawing.generate``,
``gancls.evaluation.evaluate``: text_match, FID/KID, diversity).  Each finished run appends one JSON line to
``<out>/results.jsonl``; a table sorted by accuracy is printed at the end.

    python benchmarks/learning_sweep.py                      # docs/SCORES.md's beta1 comparison: about 40 min on 2 cores
    python benchmarks/learning_sweep.py benchmarks/noise_remedies.json   # the seed's loss vs the default, three seeds each
    python benchmarks/learning_sweep.py benchmarks/noise_remedies_explore.json  # text, MSGAN and CA settings, seed 0
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
SHARED = {
    "prepared": "birds.h5",
    "scorer": "scorer.pt",
    "encoder": "encoder.pt",
    "real_features": "real.npz",
    "floor": "floor.json",
}
DEFAULT = {
    f"beta1_{b}_seed{s}": {"seed": s, "train": {"beta1": b, "epochs": 55}} for b in (0.0, 0.5) for s in (0, 1, 2)
}


def base_params(out: Path, name: str, over: dict, device: str, cuda_graph: bool):
    from gancls.runs.project import merge, outputs_under

    run = out / "runs" / name
    raw = outputs_under(merge(yaml.safe_load((ROOT / "params.yaml").read_text()), over), run)
    raw["train"].update(resume=False, device=device, cuda_graph=cuda_graph)
    raw["evaluate"]["device"] = device
    return raw, run


def setup(out: Path) -> dict[str, Path]:
    """The default sample, prepared, its scorer, text encoder and real features, under ``out``."""
    from gancls.config import parse_params
    from gancls.data.prepare import prepare
    from gancls.data.synthetic import make_sample
    from gancls.evaluation.evaluate import real_features
    from gancls.evaluation.floor import real_floor
    from gancls.evaluation.scorer import train_scorer
    from gancls.training.train_text_encoder import train_text_encoder

    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    made = {k: out / n for k, n in SHARED.items()}
    raw["prepare"]["out"] = str(made["prepared"])
    raw["scorer"].update(out=str(made["scorer"]), metrics=str(out / "scorer.json"))
    raw["text_encoder"].update(weights=str(made["encoder"]), metrics=str(out / "text_encoder.json"))
    raw["evaluate"].update(real_features=str(made["real_features"]), floor=str(made["floor"]))
    params = parse_params(raw)
    if not made["prepared"].exists():
        make_sample(params.sample, out / "sample")
        prepare(out / "sample", made["prepared"], params.prepare, "sample")
    if not made["scorer"].exists():
        train_scorer(made["prepared"], params, made["scorer"], out / "scorer.json")
    if not made["encoder"].exists():
        train_text_encoder(made["prepared"], params)
    if not made["real_features"].exists():
        real_features(made["prepared"], params)
    if not made["floor"].exists():
        real_floor(params)
    return made


def one(args) -> None:
    """Train, generate and score one configuration (a child process)."""
    import torch

    from gancls.config import parse_params
    from gancls.drawing.generate import generate
    from gancls.evaluation.evaluate import evaluate
    from gancls.training.train import train

    if args.threads:
        torch.set_num_threads(args.threads)
    raw, run = base_params(args.out, args.name, json.loads(args.overrides), args.device, args.cuda_graph)
    raw["prepare"]["out"] = str(args.prepared)
    raw["scorer"]["out"] = str(args.scorer)
    raw["text_encoder"]["weights"] = str(args.encoder)
    raw["evaluate"].update(real_features=str(args.real_features), floor=str(args.floor))
    params = parse_params(raw)
    t = time.perf_counter()
    summary = train(args.prepared, params)
    seconds = time.perf_counter() - t
    generate(run / "model" / "generator.pt", args.prepared, params)
    scores = evaluate(run / "generated" / "images.h5", args.prepared, params)
    match, div = scores["text_match"], scores["diversity"]

    def figure(key):
        return (div.get(key) or {}).get("of_real")

    row = {
        "name": args.name,
        "overrides": json.loads(args.overrides),
        "train_s": round(seconds, 1),
        "steps": summary["steps"],
        "device": summary["device"],
        **{
            k: match[k] for k in ("accuracy", "mismatched_accuracy", "real_ceiling", "chance", "of_ceiling", "per_kind")
        },
        "fid": round(scores["fid"], 2),
        "fid_of_floor": scores.get("fid_of_floor"),
        "kid_mean": round(scores["kid_mean"], 5),
        "precision": summary["precision"],
        "diversity": div,
        "unnamed_of_real": figure("unnamed_distinct"),
        "background_of_real": ((div.get("per_kind") or {}).get("background") or {}).get("of_real"),
        "pixel_of_real": figure("pixel_std"),
        "feature_of_real": figure("feature_spread"),
    }
    with open(args.out / "results.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("configs", nargs="?", type=Path, help="JSON: run name -> overrides (default: beta1 x 3 seeds)")
    ap.add_argument("--out", type=Path, default=ROOT / "build" / "learning_sweep")
    ap.add_argument("--prepared", type=Path, help="a prepared sample (default: made under --out)")
    ap.add_argument("--scorer", type=Path, help="its scorer (default: trained under --out)")
    ap.add_argument("--encoder", type=Path, help="its text encoder (default: trained under --out)")
    ap.add_argument("--real-features", type=Path, help="its real Inception features (default: made under --out)")
    ap.add_argument("--floor", type=Path, help="their real-against-real floor (default: made under --out)")
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
    if not (args.prepared and args.scorer and args.encoder and args.real_features and args.floor):
        made = setup(args.out)
        args.prepared, args.scorer = made["prepared"], made["scorer"]
        args.encoder, args.real_features, args.floor = made["encoder"], made["real_features"], made["floor"]
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
                "--encoder",
                str(args.encoder),
                "--real-features",
                str(args.real_features),
                "--floor",
                str(args.floor),
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
            f"mismatched {r['mismatched_accuracy']:.3f}  FID {r.get('fid', float('nan')):.1f}  "
            f"free values {r.get('unnamed_of_real')} of real (background {r.get('background_of_real')})  "
            f"steps {r['steps']}  train {r['train_s']:.0f} s"
        )


if __name__ == "__main__":
    main()
