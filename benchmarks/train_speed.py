"""Training speed: the bare G+D update against the whole training loop (not a test).

    python benchmarks/train_speed.py                       # seed sizes (ngf 128, ndf 64, batch 64), 1 epoch
    python benchmarks/train_speed.py --precision bf16 --epochs 20 --device cuda
    python benchmarks/train_speed.py --cub-sized --precision bf16 --cuda-graph --device cuda   # CUB's epoch length
    python benchmarks/train_speed.py --own --precision fp32,bf16 --epochs 3   # make run's settings, both precisions

On the prepared file of params.yaml (built from the embedded sample first when it is missing), with
the seed's full sizes and Reed's settings (as ``make run-cub``), it measures images/s of
(a) ``train_step`` alone, on batches already on the device, after a few warm-up steps, and
(b) the whole ``train()`` for the same number of steps: sampling, augmentation, logging through
    DVCLive, sample grids, checkpoints and the final shipped model, timed from the call to its return,
and prints one JSON line (``--own``: params.yaml's own settings instead; ``--precision fp32,bf16``: both,
each measured in full, and their ratio in ``bf16_over_fp32``): bare_images_per_s, loop_images_per_s, ratio (b / a), peak_rss_mb, device,
loop_parts_s (where (b)'s seconds went: setup, reads, live, grids, checkpoint, update -- the steps, the
averaged G, the batches --, final; ``gancls.training.loop_times``), ...

``--cub-sized``: the train split at CUB's length, 8,855 images of 76 x 76 (the sample's rows repeated,
``benchmarks/inputs.py``), so that the ratio is measured at CUB's epoch length.  Inputs are built in a
child process before anything is measured (``inputs.in_child``), and kept under build/bench/.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

for _var, _value in (
    ("DVC_NO_ANALYTICS", "1"),
    ("PREFECT_SERVER_ANALYTICS_ENABLED", "false"),
    ("GX_ANALYTICS_ENABLED", "false"),
):
    os.environ.setdefault(_var, _value)

import torch  # noqa: E402
import yaml  # noqa: E402
from inputs import CUB_TRAIN_IMAGES, cub_sized, in_child, sample_prepared  # noqa: E402

from gancls.config import parse_params, resolve_device  # noqa: E402
from gancls.data.prepared import read_prepared  # noqa: E402
from gancls.runs.experiment import params_with, settings_file  # noqa: E402
from gancls.runs.project import outputs_under  # noqa: E402
from gancls.training.batches import Batches  # noqa: E402
from gancls.training.loop_times import LoopTimes  # noqa: E402
from gancls.training.state import build_training  # noqa: E402
from gancls.training.train import make_step, train  # noqa: E402


def ensure_prepared(params, raw: dict) -> Path:
    """The prepared file of params.yaml; built from the embedded sample in a child process when missing."""
    prepared = Path(params.prepare.out)
    if not prepared.is_file():
        if params.data.source != "sample":
            sys.exit(f"{prepared}: prepared file not found (run `dvc repro prepare` first)")
        in_child(sample_prepared, raw)
    return prepared


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bare(params, prepared: Path, steps: int, warmup: int = 3) -> float:
    """images/s of train_step alone on four batches already on the device."""
    t, m = params.train, params.model
    device = resolve_device(t.device)
    torch.manual_seed(params.seed)
    gen = torch.Generator(device=device).manual_seed(params.seed)
    data = Batches(
        read_prepared(prepared, "train"),
        m.image_size,
        t.captions_per_sample,
        t.flip,
        device,
        t.channels_last,
        crop_jitter=t.crop_jitter,
    )
    batches = [b for _, b in zip(range(4), data.epoch(t.batch_size, gen))]
    del data
    graphed = t.cuda_graph and device.type == "cuda"
    run_step = make_step(*build_training(m, t, device, graphed), m, t, graphed)  # the loop's own step

    def run(n):
        last = None
        for i in range(n):
            last = run_step(*batches[i % len(batches)])
        return last

    run(warmup + 1)  # (with CUDA graphs: the eager warm-up steps, then the recording)
    sync(device)
    t0 = time.perf_counter()
    stats = run(steps)
    stats.cpu()  # the statistics are read once, as the loop reads them once per log interval
    sync(device)
    return steps * t.batch_size / (time.perf_counter() - t0)


def measure(raw: dict, args, params_file: str) -> dict:
    """The bare step and the whole loop, for the settings of ``raw``, as one result."""
    with tempfile.TemporaryDirectory(prefix="train_speed.") as tmp:
        out = Path(tmp)
        outputs_under(raw, out)
        params = parse_params(raw, params_file)
        with contextlib.redirect_stdout(sys.stderr):  # stdout: the JSON line alone
            prepared = ensure_prepared(params, raw)
            if args.cub_sized:
                cub_file = Path("build/bench") / f"cub_sized_train_{CUB_TRAIN_IMAGES}.h5"
                in_child(cub_sized, str(prepared), str(cub_file))
                prepared = cub_file
        batch = params.train.batch_size
        n = len(read_prepared(prepared, "train", ("class_ids",))["class_ids"])
        steps = max(n // batch, 1) * args.epochs

        times = LoopTimes()
        with contextlib.redirect_stdout(sys.stderr):
            bare_ips = bare(params, prepared, steps)
            t0 = time.perf_counter()
            summary = train(prepared, params, times)
            loop_s = time.perf_counter() - t0
    device = resolve_device(params.train.device)
    loop_ips = steps * batch / loop_s
    return {
        "bare_images_per_s": round(bare_ips, 2),
        "loop_images_per_s": round(loop_ips, 2),
        "ratio": round(loop_ips / bare_ips, 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({os.cpu_count()} cores)",
        "precision": summary["precision"],
        "compile": params.train.compile,
        "cuda_graph": params.train.cuda_graph,
        "train_images": n,
        "steps": steps,
        "batch_size": batch,
        "ngf": params.model.ngf,
        "ndf": params.model.ndf,
        "g_upsample": params.model.g_upsample,
        "loop_seconds": round(loop_s, 2),
        "loop_parts_s": {k: round(v, 3) for k, v in times.total.items()},
        "loop_steps_checked": summary["steps"],
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument(
        "--epochs",
        type=int,
        default=1,
        help="epochs of the loop (default 1); the bare run takes the same number of steps",
    )
    ap.add_argument("--device", default=None, help="auto | cpu | cuda (default: train.device)")
    ap.add_argument(
        "--precision",
        default=None,
        help="auto | fp32 | bf16, or several with commas (fp32,bf16: both, and the bf16 / fp32 ratio)",
    )
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--cuda-graph", action="store_true", help="train.cuda_graph: replay the step as a CUDA graph")
    ap.add_argument(
        "--own",
        action="store_true",
        help="params.yaml's own model and training settings (default: the seed's sizes and Reed's settings)",
    )
    ap.add_argument("--ngf", type=int, default=None, help="default: 128 (the seed's), or params.yaml's with --own")
    ap.add_argument("--ndf", type=int, default=None, help="default: 64 (the seed's), or params.yaml's with --own")
    ap.add_argument("--batch-size", type=int, default=None, help="default: 64 (Reed's), or params.yaml's with --own")
    ap.add_argument(
        "--cub-sized",
        action="store_true",
        help=f"train on {CUB_TRAIN_IMAGES:,} images (CUB's train split), built once in build/bench/",
    )
    args = ap.parse_args(argv)

    if args.own:
        raw = parse_params(yaml.safe_load(Path(args.params).read_text()), args.params).model_dump(by_alias=True)
    else:  # make run-cub's model and training settings (configs/reed_cub.yaml) on the prepared file of params.yaml
        reed = [
            s
            for s in settings_file(Path(__file__).parents[1] / "configs" / "reed_cub.yaml")
            if s.startswith(("model.", "train."))
        ]
        raw = params_with(reed, args.params).model_dump(by_alias=True)
        raw["model"].update(ngf=128, ndf=64)
        raw["train"]["batch_size"] = 64
    for key, value in (("ngf", args.ngf), ("ndf", args.ndf)):
        if value:
            raw["model"][key] = value
    if args.batch_size:
        raw["train"]["batch_size"] = args.batch_size
    raw["train"].update(epochs=args.epochs, resume=False)
    if args.device:
        raw["train"]["device"] = args.device
    if args.compile:
        raw["train"]["compile"] = True
    if args.cuda_graph:
        raw["train"]["cuda_graph"] = True
    precisions = args.precision.split(",") if args.precision else [raw["train"]["precision"]]
    results = {}
    for precision in precisions:
        raw["train"]["precision"] = precision
        results[precision] = measure(copy.deepcopy(raw), args, args.params)
    if len(results) == 1:
        print(json.dumps(next(iter(results.values()))))
    else:
        line = {"settings": "params.yaml" if args.own else "seed sizes, Reed's settings", "runs": results}
        if {"fp32", "bf16"} <= set(results):
            line["bf16_over_fp32"] = {
                k: round(results["bf16"][k] / results["fp32"][k], 3) for k in ("bare_images_per_s", "loop_images_per_s")
            }
        print(json.dumps(line))
    return 0


if __name__ == "__main__":
    sys.exit(main())
