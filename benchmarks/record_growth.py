"""Does the training loop's record-keeping grow with the epochs?  (not a test)

    python benchmarks/record_growth.py                  # tiny model (configs/tiny.yaml), 200 epochs on the CPU

Trains the tiny configuration (a few dozen images, a narrow model, 3 steps an epoch) for ``--epochs``
epochs with params.yaml's record settings (a grid every ``sample_every`` epochs, a checkpoint every
``checkpoint_every``) and reads where each epoch's time went (``gancls.training.loop_times.LoopTimes``: reads
(statistics and console), live (DVCLive), grids, checkpoint, update (the rest); record = live + grids +
checkpoint).

Prints one JSON line: the median seconds per epoch and per part over the first and the last ``--window``
epochs (each window holds as many grid and checkpoint epochs as the other; medians, as a busy machine
slows some epochs), the rows of epoch 10 and
of the last epoch, and the slope of the live part (DVCLive's metrics and summary; milliseconds per 100
epochs, least squares over all epochs).  Record-keeping that does not grow has a slope near 0 and the
same live time in both windows.  ``--cprofile``: also the calls and seconds of DVCLive's functions that
read files back (``parse_tsv``, ``parse_metrics``, ...) under cProfile, over the whole run.  The tiny data is built in a child process first (``inputs.py``).
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

for _var, _value in (
    ("DVC_NO_ANALYTICS", "1"),
    ("PREFECT_SERVER_ANALYTICS_ENABLED", "false"),
    ("GX_ANALYTICS_ENABLED", "false"),
):
    os.environ.setdefault(_var, _value)

import torch  # noqa: E402
from inputs import in_child, sample_prepared  # noqa: E402

from gancls.config import parse_params  # noqa: E402
from gancls.runs.project import merge, outputs_under  # noqa: E402
from gancls.training.loop_times import EPOCH_PARTS, LoopTimes  # noqa: E402
from gancls.training.train import train  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHOWN = ("seconds", *EPOCH_PARTS, "update", "record")
READERS = ("parse_tsv", "parse_json", "parse_metrics", "_get_live_data", "make_summary", "next_step")


def dvclive_reads(profiler: cProfile.Profile) -> dict:
    """Calls and cumulative seconds of DVCLive's functions that read back what it wrote."""
    import pstats

    found = {}
    for (path, _line, name), (_cc, calls, _tt, cum, _callers) in pstats.Stats(profiler).stats.items():
        if "dvclive" in path and name in READERS:
            found[name] = {"calls": calls, "seconds": round(cum, 4)}
    return found


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--epochs", type=int, default=200)
    ap.add_argument("--window", type=int, default=20, help="epochs averaged at the start and at the end")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1: steadier times)")
    ap.add_argument("--cprofile", action="store_true", help="count DVCLive's reads under cProfile (slower)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    tiny = yaml.safe_load((ROOT / "configs" / "tiny.yaml").read_text(encoding="utf-8"))
    tiny["train"].pop("sample_every")  # params.yaml's record settings, not tiny's grid at every epoch
    raw = merge(yaml.safe_load(Path(args.params).read_text(encoding="utf-8")), tiny)
    with tempfile.TemporaryDirectory(prefix="record_growth.") as tmp:
        out = Path(tmp)
        raw["sample"]["out_dir"] = str(out / "sample")
        raw["prepare"]["out"] = str(out / "birds.h5")
        outputs_under(raw, out)["train"].update(device="cpu", epochs=args.epochs, resume=False)
        parse_params(raw, args.params)  # a bad setting as one line, before the child starts
        in_child(sample_prepared, raw)
        params = parse_params(raw, args.params)
        times = LoopTimes()
        t0 = time.perf_counter()
        profiler = cProfile.Profile() if args.cprofile else contextlib.nullcontext()
        with contextlib.redirect_stdout(sys.stderr), profiler:  # stdout: the JSON line alone
            train(params.prepare.out, params, times)
        wall = time.perf_counter() - t0

    rows, w = times.epochs, min(args.window, len(times.epochs))

    def median(part_rows):
        return {k: round(float(np.median([r[k] for r in part_rows])), 5) for k in SHOWN}

    epochs = np.array([r["epoch"] for r in rows], float)
    live = np.array([r["live"] for r in rows])
    slope = float(np.polyfit(epochs, live, 1)[0]) if len(rows) > 1 else 0.0
    tenth = next((r for r in rows if r["epoch"] == 10), rows[0])
    result = {
        "epochs": len(rows),
        f"first_{w}": median(rows[:w]),
        f"last_{w}": median(rows[-w:]),
        "epoch_10": {k: round(tenth[k], 5) for k in SHOWN},
        f"epoch_{rows[-1]['epoch']}": {k: round(rows[-1][k], 5) for k in SHOWN},
        "live_ms_per_100_epochs": round(slope * 1000 * 100, 3),
        "run_parts_s": {k: round(v, 3) for k, v in times.total.items()},
        "wall_s": round(wall, 2),
        **({"dvclive_reads": dvclive_reads(profiler)} if args.cprofile else {}),
        "threads": args.threads,
        "torch": torch.__version__,
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
