"""gancls.runs.serve.KeptServer: the Prefect server serving depends on, started again when it dies, at most
``restarts`` times; then serving stops (SIGTERM to itself).  ``start_server`` stubbed by a sleeping process:
what is tested is the keeping; tests/runs/test_serve.py kills a real server under a real run."""

import os
import signal
import subprocess
import sys
import time

import pytest

from gancls.runs import serve


@pytest.fixture
def fake_server(monkeypatch, tmp_path):
    """``start_server`` starts ``sleep`` in its own group; every start and every SIGTERM to this process kept."""
    starts, terms = [], []

    def start(host, port, home, timeout, extra_env=None):
        if len(starts) == 3:
            raise SystemExit("no Prefect server answered at http://127.0.0.1:1/api/health within 1 s")
        proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)
        starts.append((host, port, proc))
        return proc, f"http://{host}:{port}/api"

    real_kill = os.kill
    monkeypatch.setattr(serve, "start_server", start)
    monkeypatch.setattr(
        serve.os, "kill", lambda pid, sig: terms.append(pid) if sig == signal.SIGTERM else real_kill(pid, sig)
    )
    return starts, terms


def wait(check, timeout=15):
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_a_killed_server_is_started_again_on_its_port_then_serving_stops(fake_server, tmp_path):
    starts, terms = fake_server
    said = []
    kept = serve.KeptServer("127.0.0.1", 0, tmp_path, 5, restarts=1, say=lambda *a, **k: said.append(a[0]))
    try:
        port = starts[0][1]
        assert port > 0 and kept.api == f"http://127.0.0.1:{port}/api"
        first = kept.proc
        os.killpg(first.pid, signal.SIGKILL)
        wait(lambda: len(starts) == 2)
        wait(lambda: kept.proc is starts[1][2])
        assert starts[1][1] == port  # the same address: the runner and the run in progress find it again
        assert f"pid {first.pid}) exited with status -9: starting it again" in said[0]
        wait(lambda: "started again" in said[-1])
        assert terms == []
        os.killpg(kept.proc.pid, signal.SIGKILL)  # the one restart is used up: serving stops
        wait(lambda: terms == [os.getpid()])
        assert "serve.restarts (1) are used up: serving stops" in said[-1] and len(starts) == 2
    finally:
        kept.stop()
    for _, _, proc in starts:
        assert proc.poll() is not None


def test_a_server_that_cannot_start_again_stops_serving(fake_server, tmp_path):
    starts, terms = fake_server
    said = []
    kept = serve.KeptServer("127.0.0.1", 4321, tmp_path, 5, restarts=5, say=lambda *a, **k: said.append(a[0]))
    try:
        for n in (1, 2):
            os.killpg(kept.proc.pid, signal.SIGKILL)
            wait(lambda n=n: len(starts) == n + 1 and kept.proc is starts[-1][2])
        os.killpg(kept.proc.pid, signal.SIGKILL)  # the third start fails
        wait(lambda: terms == [os.getpid()])
        assert said[-1].startswith("prefect server could not be started again: no Prefect server answered")
        assert [port for _, port, _ in starts] == [4321] * 3
    finally:
        kept.stop()


def test_stopping_stops_the_server_and_starts_nothing(fake_server, tmp_path):
    starts, terms = fake_server
    kept = serve.KeptServer("127.0.0.1", 4321, tmp_path, 5, restarts=5, say=lambda *a, **k: None)
    kept.stop()
    assert kept.proc.poll() is not None
    time.sleep(1.5)  # a watcher that missed the stop would start it again within a second
    assert len(starts) == 1 and terms == []
