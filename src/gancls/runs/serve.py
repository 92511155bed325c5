"""``gancls serve`` (``make serve``): the scheduled deployment of ``flows/scheduled.py`` on a Prefect server,
and beside it the ``sweep`` deployment of ``flows/sweep.py`` (no schedule: run by hand, one at a time).

Without ``PREFECT_API_URL``, starts ``prefect server start`` on ``serve.host``/``serve.port`` with its
SQLite database in ``serve.home``; with it, uses that server.  Then serves the deployment
``gancls-scheduled/<flow.name>`` with the ``flow.cron`` schedule (``--interval`` / ``--cron``
override it) and a concurrency limit of 1, and prints the UI address.  Ctrl-C (SIGINT) or SIGTERM
stops serving and then the server it started; no process is left behind.

This is a supervisor of processes, not a flow: the flow it serves is loaded from the repository's
``flows/scheduled.py:scheduled``, the entrypoint ``prefect.yaml`` deploys.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from ..config import Params
from .process import stop_group

ENTRYPOINT = "flows/scheduled.py:scheduled"  # as in prefect.yaml, relative to the repository
SWEEP_ENTRYPOINT = "flows/sweep.py:sweep"  # the sweep deployment beside it (run by hand)


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
    with open(home / "server.log", "ab") as log:
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
    """SIGTERM to the server's process group, SIGKILL after 20 s (and to anything of the group left)."""
    stop_group(server, wait=20.0)


SERVE_LOCK = ".dvc/tmp/gancls-serve.lock"  # one `gancls serve` per repository


def hold_serve_lock(root: Path) -> int:
    """Hold ``<root>/.dvc/tmp/gancls-serve.lock`` (flock: released when the process dies) for this process's
    life; SystemExit naming the holder when another ``gancls serve`` of this repository runs."""
    path = root / SERVE_LOCK
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = path.read_text(encoding="utf-8").strip() or "unknown"
        os.close(fd)
        raise SystemExit(f"another gancls serve ({holder}) serves {root}: {path} is held; stop it first") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"pid {os.getpid()}".encode())
    return fd


def crash_orphans(deployments: list[str], say=print) -> list[str]:
    """Flow runs of ``deployments`` that a killed serving process left unfinished, set Crashed.

    A served deployment's runs execute in the serving process's children; when it is killed (SIGKILL, a
    crash, the machine), its runs stay Running on the server and the deployment's concurrency slot stays
    taken until its lease runs out (minutes), so the next run waits. Called by a starting ``gancls serve``
    holding the repository's serve lock: no other serving process of these deployments is alive, so every
    run of them that is Pending, Running or Cancelling is an orphan. The Crashed state frees the slot.
    Returns the names of the runs it set Crashed."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterDeploymentId,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.exceptions import ObjectNotFound
    from prefect.states import Crashed

    crashed = []
    with get_client(sync_client=True) as client:
        ids = []
        for name in deployments:
            try:
                ids.append(client.read_deployment_by_name(name).id)
            except ObjectNotFound:
                pass
        if not ids:
            return []
        unfinished = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                deployment_id=FlowRunFilterDeploymentId(any_=ids),
                state=FlowRunFilterState(
                    type=FlowRunFilterStateType(any_=[StateType.PENDING, StateType.RUNNING, StateType.CANCELLING])
                ),
            )
        )
        for run in unfinished:
            client.set_flow_run_state(
                run.id, Crashed(message="its serving process was gone when gancls serve started again")
            )
            crashed.append(run.name)
            say(f"flow run {run.name} of a serving process that was killed: set Crashed", flush=True)
    return crashed


def serve_flow(root: str | Path, params: Params, interval: float | None = None, cron: str | None = None) -> int:
    """Serve ``root``'s scheduled flow until Ctrl-C or SIGTERM (on a server of its own unless
    ``PREFECT_API_URL`` is set); stops the server it started.  ``params``: ``root``'s params.yaml."""
    root = Path(root).resolve()
    hold_serve_lock(root)  # until this process exits: the runs left unfinished are then a killed one's
    server = None
    if not os.environ.get("PREFECT_API_URL"):
        home = (root / params.serve.home).resolve()
        os.environ["PREFECT_HOME"] = str(home)
        server, api = start_server(params.serve.host, params.serve.port, home, params.serve.start_timeout)
        os.environ["PREFECT_API_URL"] = api
        print(f"prefect server (pid {server.pid}) at {api}, database in {home}", flush=True)
    else:
        wait_healthy(os.environ["PREFECT_API_URL"].rstrip("/"), params.serve.start_timeout)
    # the flows are the repository's code, not the package's: importable here and in every flow run
    sys.path.insert(0, str(root))
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(root), os.environ.get("PYTHONPATH")) if p)
    # Ctrl-C and SIGTERM stop serving (SIGINT too when a parent started us with it ignored)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        # prefect reads PREFECT_API_URL when imported: only now
        from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
        from prefect.flows import load_flow_from_entrypoint
        from prefect.runner import Runner

        crash_orphans([f"gancls-scheduled/{params.flow.name}", "gancls-sweep/sweep"])
        scheduled = load_flow_from_entrypoint(f"{root / ENTRYPOINT}", use_placeholder_flow=False)
        sweep = load_flow_from_entrypoint(f"{root / SWEEP_ENTRYPOINT}", use_placeholder_flow=False)
        api = os.environ["PREFECT_API_URL"].rstrip("/")
        ui = api[: -len("/api")] if api.endswith("/api") else api
        schedule = {"interval": interval} if interval else {"cron": cron or params.flow.cron}
        print(
            f"Prefect UI: {ui}  (deployment gancls-scheduled/{params.flow.name}, "
            f"{schedule}, one run at a time; and gancls-sweep/sweep, by hand)\nstart a run by hand (another "
            f"shell, in {root}): PREFECT_API_URL={api} .venv/bin/prefect deployment run "
            f"gancls-scheduled/{params.flow.name}\na sweep: PREFECT_API_URL={api} .venv/bin/prefect deployment run "
            "gancls-sweep/sweep -p file=configs/sweeps/recipe.yaml",
            flush=True,
        )
        limit = ConcurrencyLimitConfig(
            limit=1, collision_strategy=ConcurrencyLimitStrategy[params.flow.collision.upper()]
        )
        runner = Runner(name=f"gancls-{params.flow.name}")
        runner.add_flow(
            scheduled, name=params.flow.name, parameters={"root": str(root)}, concurrency_limit=limit, **schedule
        )
        # sweeps share DVC's queue: one at a time, a second waits
        one_sweep = ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE)
        runner.add_flow(sweep, name="sweep", parameters={"root": str(root)}, concurrency_limit=one_sweep)
        asyncio.run(runner.start())
    except KeyboardInterrupt:
        pass
    finally:
        if server is not None:
            stop_server(server)
            print("prefect server stopped", flush=True)
    return 0
