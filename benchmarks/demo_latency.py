"""Time from pressing Draw to the gallery on the demo page, in headless chromium; one JSON line.

The page runs the workspace's shipped model (`make run` first) in this process; each round draws
``--n`` images with a new seed (so the gallery really changes) and is timed in the browser's process
from the click until every image of the new gallery has loaded. The draw itself (encode + G, no
page) is timed alone as well, so the page's share can be read off.

    .venv/bin/python benchmarks/demo_latency.py                 # 8 images, 20 rounds
    .venv/bin/python benchmarks/demo_latency.py --n 32 --rounds 10
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import torch

from gancls.config import load_params
from gancls.drawing.demo import sentence_gallery, start, workspace_model
from gancls.drawing.demo_browser import draw, open_page


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--text", default="a small bird with a red body and a blue head")
    args = ap.parse_args()

    params = load_params(args.params)
    t0 = time.perf_counter()
    shipped = workspace_model(params, args.params).load(params.demo.device)
    app, url = start(shipped, params.demo, port=0)
    startup = time.perf_counter() - t0
    bare = []
    for seed in range(args.rounds):
        t = time.perf_counter()
        sentence_gallery(shipped, args.text, args.n, 1000 + seed)
        bare.append(time.perf_counter() - t)
    clicks = []
    try:
        with open_page(url) as page:
            draw(page, args.text, args.n, 0)  # warm-up: the first request also loads the page's code
            for seed in range(1, args.rounds + 1):
                got = draw(page, args.text, args.n, seed)
                assert got["state"] == "gallery" and len(got["images"]) == args.n, got["status"]
                clicks.append(got["seconds"])
            outside = len(page.gancls["outside"])
    finally:
        app.close()

    def summary(xs):
        return {"median": round(statistics.median(xs), 4), "min": round(min(xs), 4), "max": round(max(xs), 4)}

    print(
        json.dumps(
            {
                "benchmark": "demo_latency",
                "images": args.n,
                "rounds": args.rounds,
                "click_to_gallery_s": summary(clicks),
                "draw_only_s": summary(bare),
                "model_load_and_page_start_s": round(startup, 2),
                "requests_leaving_loopback": outside,
                "device": str(shipped.models[3]),
                "torch_threads": torch.get_num_threads(),
                "cpus": os.cpu_count(),
                "cpu": platform.processor() or platform.machine(),
                "generator": str(shipped.generator),
            }
        )
    )


if __name__ == "__main__":
    main()
