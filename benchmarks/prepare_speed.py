"""Speed of the prepare stage on a CUB-sized raw folder (not a test).

    python benchmarks/prepare_speed.py            # builds build/bench/cub_sized once, then times prepare

The raw folder comes from the sample generator at CUB's size: 200 classes, 11,800 JPEGs with sides
between 375 and 500 pixels (CUB: 11,788 images, typically 500 x 375), 10 captions and 10 embeddings
each, in the StackGAN layout.  It is built once and reused, in a child process before anything is measured, and the
measurement runs in a fresh child of its own (``benchmarks/inputs.py``: building in the measuring process,
or as its child, would count the build's memory in peak_rss_mb).  ``prepare`` then runs as the stage runs it
(decode, RGB, bounding-box crop, resize to ``prepare.load_size``, HDF5 in chunks) with the workers of
params.yaml's ``prepare`` section (or ``--workers``).  Prints one JSON line: images_per_s, peak_rss_mb
(this process plus its largest worker), seconds, images, workers, cores.
"""

from __future__ import annotations

import argparse
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

from inputs import in_child, raw_sample  # noqa: E402

from gancls.config import load_params, parse_params  # noqa: E402
from gancls.data.prepare import prepare  # noqa: E402

CUB_SIZED = {"n_classes": 200, "images_per_class": 59, "test_fraction": 0.25, "image_size": [375, 500]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--raw", default="build/bench/cub_sized", help="where the CUB-sized folder is built once")
    ap.add_argument("--workers", type=int, default=None, help="prepare.workers (0: one per core)")
    args = ap.parse_args(argv)

    raw = load_params(args.params).model_dump(by_alias=True)
    raw["sample"].update(CUB_SIZED, out_dir=args.raw)
    if args.workers is not None:
        raw["prepare"]["workers"] = args.workers
    parse_params(raw, args.params)  # a bad setting as one line, before any child starts
    folder = Path(args.raw)
    if not (folder / "CUB_200_2011/images.txt").is_file():
        t0 = time.perf_counter()
        in_child(raw_sample, raw, str(folder))  # in a child process: its memory is not the measurement's
        print(f"built in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    # measured in a fresh child: RUSAGE_CHILDREN here would count the builder above as a "worker"
    in_child(measure, str(folder), raw, args.params)
    return 0


def measure(folder: str, raw: dict, params_file: str) -> None:
    """Time ``prepare`` on ``folder``; print the JSON line (this process and its largest worker)."""
    params, folder = parse_params(raw, params_file), Path(folder)
    with tempfile.TemporaryDirectory(prefix="prepare_speed.") as tmp:
        t0 = time.perf_counter()
        counts = prepare(folder, Path(tmp) / "birds.h5", params.prepare, "sample")
        seconds = time.perf_counter() - t0
    n = sum(int(v) for v in counts.values() if isinstance(v, int))
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    worker = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(
        json.dumps(
            {
                "images_per_s": round(n / seconds, 1),
                "peak_rss_mb": round(own + worker, 1),
                "main_rss_mb": round(own, 1),
                "largest_worker_rss_mb": round(worker, 1),
                "seconds": round(seconds, 2),
                "images": n,
                "workers": params.prepare.workers,
                "cores": os.cpu_count(),
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    sys.exit(main())
