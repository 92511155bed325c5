"""The demo page under load: 16 simulated users drawing at once on loopback; one JSON line with the
p50 / p95 latency (seconds from a request's submit to its answer) and the errors (none expected).

The page runs the workspace's shipped model (`make run` first) in this process, with demo.* of
params.yaml (demo.concurrency requests drawn at once, the others queued); the users are Gradio's own
client (gancls.drawing.demo_load) in threads of this process. Run it on quiet cores.

    .venv/bin/python benchmarks/demo_load.py                      # 16 users x 4 draws of 8 images
    .venv/bin/python benchmarks/demo_load.py --users 32 --rounds 2 --n 16
"""

from __future__ import annotations

import argparse
import json
import os
import platform

import torch

from gancls.config import load_params
from gancls.drawing.demo import start, workspace_model
from gancls.drawing.demo_load import run_load


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--users", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--timeout", type=float, default=300, help="seconds a request may take (else an error)")
    args = ap.parse_args()

    params = load_params(args.params)
    shipped = workspace_model(params, args.params).load(params.demo.device)
    app, url = start(shipped, params.demo, port=0)
    try:
        run_load(url, users=1, rounds=1, n=args.n)  # warm-up
        got = run_load(url, users=args.users, rounds=args.rounds, n=args.n, timeout_s=args.timeout)
    finally:
        app.close()
    got.update(
        benchmark="demo_load",
        concurrency=params.demo.concurrency,
        queue_size=params.demo.queue_size,
        device=params.demo.device,
        torch_threads=torch.get_num_threads(),
        cpus=os.cpu_count(),
        cpu=platform.processor() or platform.machine(),
    )
    print(json.dumps(got))
    return 1 if got["errors"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
