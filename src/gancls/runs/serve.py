"""``gancls serve`` (``make serve``): the scheduled deployment of ``flows/scheduled.py`` on a Prefect server,
and beside it the ``sweep`` deployment of ``flows/sweep.py`` (no schedule: run by hand, one at a time).

Without ``PREFECT_API_URL``, starts ``prefect server start`` on ``serve.host``/``serve.port`` with its
SQLite database in ``serve.home``, and starts it again (same port, same database, its concurrency leases
on disk) when it dies, up to ``serve.restarts`` times; with it, uses that server.  Then serves the deployment
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
import threading
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


# Prefect keeps the deployments' concurrency leases in the server's memory by default: a restarted server
# would not know the lease of a run still going on, and the run is cancelled at its next renewal.
LEASES_ON_DISK = {"PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE": "prefect.server.concurrency.lease_storage.filesystem"}


def start_server(
    host: str, port: int, home: Path, timeout: float, extra_env: dict | None = None
) -> tuple[subprocess.Popen, str]:
    """``prefect server start`` in its own process group, its leases on disk under ``home``; returns it and its
    API URL once healthy.  ``extra_env``: more server settings."""
    port = port or free_port(host)
    home.mkdir(parents=True, exist_ok=True)
    env = {**LEASES_ON_DISK, **os.environ, **(extra_env or {})}
    env.update(PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false")
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


class KeptServer:
    """The Prefect server that serving depends on, started again when it dies (SIGKILL, a crash, the OOM killer).

    A watcher thread polls the process; when it has exited, anything left of its process group is killed and
    ``prefect server start`` runs again on the same port with the same database, so the runner and the flow
    run in progress find it at the same address: Prefect's client retries a refused connection for about a
    minute, and the run's concurrency lease is on disk (``LEASES_ON_DISK``).  After ``restarts`` restarts,
    or when one fails, it sends this process SIGTERM: serving stops, with the reason said.
    """

    def __init__(self, host: str, port: int, home: Path, timeout: float, restarts: int, say=print, extra_env=None):
        self.host, self.port, self.home, self.timeout = host, port or free_port(host), home, timeout
        self.restarts, self.say, self.extra_env = int(restarts), say, extra_env
        self.proc, self.api = start_server(host, self.port, home, timeout, extra_env)
        self._lock, self._stopped = threading.Lock(), threading.Event()
        self._watcher = threading.Thread(target=self._watch, name="prefect-server-watch", daemon=True)
        self._watcher.start()

    def _watch(self) -> None:
        left = self.restarts
        while not self._stopped.wait(1.0):
            with self._lock:
                code = self.proc.poll()
                if code is None or self._stopped.is_set():
                    continue
                dead = self.proc.pid
                if left == 0:
                    self.say(
                        f"prefect server (pid {dead}) exited with status {code} and serve.restarts "
                        f"({self.restarts}) are used up: serving stops",
                        flush=True,
                    )
                    os.kill(os.getpid(), signal.SIGTERM)
                    return
                left -= 1
                self.say(
                    f"prefect server (pid {dead}) exited with status {code}: starting it again at {self.api} "
                    "(same database)",
                    flush=True,
                )
                stop_server(self.proc)  # what is left of its process group
                try:
                    self.proc, _ = start_server(self.host, self.port, self.home, self.timeout, self.extra_env)
                except SystemExit as exc:
                    self.say(f"prefect server could not be started again: {exc}; serving stops", flush=True)
                    os.kill(os.getpid(), signal.SIGTERM)
                    return
                self.say(f"prefect server started again (pid {self.proc.pid}; {left} restarts left)", flush=True)

    def stop(self) -> None:
        """Stop watching, then stop the server (SIGTERM to its group, SIGKILL after 20 s)."""
        with self._lock:  # not in the middle of a restart
            self._stopped.set()
            stop_server(self.proc)


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
        server = KeptServer(
            params.serve.host, params.serve.port, home, params.serve.start_timeout, params.serve.restarts
        )
        os.environ["PREFECT_API_URL"] = server.api
        print(f"prefect server (pid {server.proc.pid}) at {server.api}, database in {home}", flush=True)
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
            server.stop()
            print("prefect server stopped", flush=True)
    return 0
