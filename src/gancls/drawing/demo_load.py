"""The demo page under load: simulated users drawing at once over loopback, through Gradio's own
client (``gradio_client``, the page's ``/draw`` API, the same queue a browser's request joins).

Used by ``benchmarks/demo_load.py`` (p50/p95 latency, one JSON line) and ``tests/drawing/test_demo.py``
(no error with 16 users). Bounded in count (``users`` x ``rounds`` requests) and in time (each request
waits at most ``timeout_s``; one that does not finish counts as an error).
"""

from __future__ import annotations

import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np


def run_load(
    url: str,
    users: int = 16,
    rounds: int = 2,
    n: int = 8,
    text: str = "a small bird with a red body and a blue head",
    timeout_s: float = 300,
) -> dict:
    """``users`` clients, each sending ``rounds`` draws of ``n`` images (its own seeds) as soon as the
    previous one is answered, all starting together. Returns the counts, the errors (one line each) and
    the latency (seconds from submit to the answer) p50 / p95 / max."""
    from gradio_client import Client

    start = threading.Barrier(users)
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()

    def user(u: int) -> None:
        try:
            client = Client(url, verbose=False, download_files=False)
        except Exception as exc:  # noqa: BLE001 - a user that cannot connect is an error of the run
            with lock:
                errors.append(f"user {u}: cannot connect ({type(exc).__name__}: {exc})")
            start.abort()
            return
        try:
            start.wait(timeout=timeout_s)
        except threading.BrokenBarrierError:
            return
        for r in range(rounds):
            t0 = time.perf_counter()
            try:
                *galleries, status = client.submit(text, n, 1000 * u + r, api_name="/draw").result(timeout=timeout_s)
            except Exception as exc:  # noqa: BLE001 - Gradio's client raises its own errors and timeouts
                with lock:
                    errors.append(f"user {u} round {r}: {type(exc).__name__}: {exc}"[:300])
                continue
            seconds = time.perf_counter() - t0
            problem = None
            if "gancls-status error" in status:
                problem = re.sub(r"<[^>]+>", "", status)
            elif any(len(g) != n for g in galleries):
                problem = f"{[len(g) for g in galleries]} images instead of {n}"
            with lock:
                latencies.append(seconds)
                if problem:
                    errors.append(f"user {u} round {r}: {problem}")
        client.close()

    t0 = time.perf_counter()
    with ThreadPoolExecutor(users) as pool:
        list(pool.map(user, range(users)))
    wall = time.perf_counter() - t0
    out = {
        "users": users,
        "rounds": rounds,
        "n": n,
        "requests": users * rounds,
        "answered": len(latencies),
        "errors": errors,
        "wall_s": round(wall, 3),
    }
    if latencies:
        out.update(
            p50_s=round(float(np.percentile(latencies, 50)), 3),
            p95_s=round(float(np.percentile(latencies, 95)), 3),
            max_s=round(max(latencies), 3),
            images_per_s=round(len(latencies) * n / wall, 1),
        )
    return out
