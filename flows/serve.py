"""``make serve``: the scheduled deployment of ``flows.scheduled`` on a Prefect server.

Without ``PREFECT_API_URL``, starts ``prefect server start`` on ``serve.host``/``serve.port`` with its
SQLite database in ``serve.home``; with it, uses that server.  Then serves the deployment
``gancls-scheduled/<flow.name>`` with the ``flow.cron`` schedule (``--interval`` / ``--cron``
override it) and a concurrency limit of 1, and prints the UI address.  Ctrl-C (SIGINT) or SIGTERM
stops serving and then the server it started; no process is left behind.

    python -m flows.serve [--root .] [--interval SECONDS | --cron "0 2 * * *"]
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import gancls  # noqa: F401  (first: turns DVC, Prefect and GX telemetry off)
from gancls.config import ConfigError, load_params

CODE = Path(__file__).resolve().parents[1]  # where flows/ lives: on PYTHONPATH of every flow run


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_healthy(api: str, timeout: float, server: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server is not None and server.poll() is not None:
            raise SystemExit(f"prefect server exited with status {server.returncode} before it answered at {api}")
        try:
            with urllib.request.urlopen(f"{api}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"no Prefect server answered at {api}/health within {timeout:g} s")


def start_server(host: str, port: int, home: Path, timeout: float) -> tuple[subprocess.Popen, str]:
    """``prefect server start`` in its own process group; returns it and its API URL once healthy."""
    port = port or free_port(host)
    home.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false")
    env.pop("PREFECT_API_URL", None)
    log = open(home / "server.log", "ab")
    server = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", host, "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    api = f"http://{host}:{port}/api"
    try:
        wait_healthy(api, timeout, server)
    except BaseException:
        stop_server(server)
        raise
    return server, api


def stop_server(server: subprocess.Popen) -> None:
    """SIGTERM to the server's process group, SIGKILL after 20 s."""
    for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        try:
            os.killpg(server.pid, sig)
        except ProcessLookupError:
            break
        try:
            server.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue
    try:  # anything of the group still there (workers the server spawned)
        os.killpg(server.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.serve", description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default=".", help="the git + DVC repository the runs reproduce")
    when = parser.add_mutually_exclusive_group()
    when.add_argument("--interval", type=float, help="seconds between runs instead of flow.cron")
    when.add_argument("--cron", help="cron schedule instead of flow.cron")
    args = parser.parse_args(argv)

    root = Path(args.root).resolve()
    try:
        params = load_params(root / "params.yaml")
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    server = None
    if not os.environ.get("PREFECT_API_URL"):
        home = (root / params.serve.home).resolve()
        os.environ["PREFECT_HOME"] = str(home)
        server, api = start_server(params.serve.host, params.serve.port, home, params.serve.start_timeout)
        os.environ["PREFECT_API_URL"] = api
        print(f"prefect server (pid {server.pid}) at {api}, database in {home}", flush=True)
    else:
        wait_healthy(os.environ["PREFECT_API_URL"].rstrip("/"), params.serve.start_timeout)
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(CODE), os.environ.get("PYTHONPATH")) if p)
    # Ctrl-C and SIGTERM stop serving (SIGINT too when a parent started us with it ignored)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        # prefect reads PREFECT_API_URL when imported: only now
        from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy

        from flows.scheduled import scheduled

        api = os.environ["PREFECT_API_URL"].rstrip("/")
        ui = api[: -len("/api")] if api.endswith("/api") else api
        schedule = {"interval": args.interval} if args.interval else {"cron": args.cron or params.flow.cron}
        print(
            f"Prefect UI: {ui}  (deployment gancls-scheduled/{params.flow.name}, "
            f"{schedule}, one run at a time)\nstart a run by hand (another shell, in {root}): "
            f"PREFECT_API_URL={api} .venv/bin/prefect deployment run gancls-scheduled/{params.flow.name}",
            flush=True,
        )
        limit = ConcurrencyLimitConfig(
            limit=1, collision_strategy=ConcurrencyLimitStrategy[params.flow.collision.upper()]
        )
        scheduled.serve(
            name=params.flow.name,
            parameters={"root": str(root)},
            global_limit=limit,
            print_starting_message=False,
            **schedule,
        )
    except KeyboardInterrupt:
        pass
    finally:
        if server is not None:
            stop_server(server)
            print("prefect server stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
