"""Running the tools the flows drive (git, DVC, ``gancls``): one command at a time, output captured or
streamed line by line, and stopped with its whole process group when the caller is interrupted.

The flows in ``flows/`` hold orchestration only; this is their process plumbing.
"""

from __future__ import annotations

import codecs
import os
import re
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path


class ExperimentFailed(RuntimeError):
    """A DVC experiment, or DVC's queue under it, failed: the CLI's one line (``gancls experiment``, ``sweep``)."""


_NEWLINE = re.compile(r"\r\n|\r|\n")  # universal newlines: a progress bar's "\r" ends a line too


def env() -> dict:
    """This environment with the interpreter's ``bin/`` first on PATH, so that ``gancls`` and ``dvc`` resolve
    to this installation (DVC's stage commands are plain ``gancls <stage>``)."""
    out = dict(os.environ)
    out["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{out.get('PATH', '')}"
    return out


def _shown(cmd: list[str]) -> str:
    return " ".join(cmd[2:] if cmd[0] == sys.executable else cmd)


def run(cmd: list[str], cwd: str | Path, check: bool = True) -> subprocess.CompletedProcess:
    """``cmd`` in ``cwd`` with output captured; ``check``: a non-zero exit raises RuntimeError with its output."""
    proc = subprocess.run(cmd, cwd=cwd, env=env(), capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise RuntimeError(
            f"{_shown(cmd)} failed in {cwd} (exit {proc.returncode}): {(proc.stderr or proc.stdout).strip()[-2000:]}"
        )
    return proc


def dvc(*args: str, cwd: str | Path, check: bool = True) -> subprocess.CompletedProcess:
    """``python -m dvc ARGS`` with this interpreter."""
    return run([sys.executable, "-m", "dvc", *args], cwd, check)


def git(*args: str, cwd: str | Path, check: bool = True) -> str:
    """``git ARGS``; its standard output, stripped."""
    return run(["git", *args], cwd, check).stdout.strip()


def worker_pids(queue) -> list[int]:
    """The pids DVC recorded for its experiment queue's workers that have not exited
    (``<queue.wdir>/dvc-exp-worker-N.json``; ``queue``: ``Repo.experiments.celery_queue``)."""
    from dvc_task.proc.process import ProcessInfo

    infos = [ProcessInfo.load(str(f)) for f in Path(queue.wdir).glob("dvc-exp-worker-*.json")]
    return [i.pid for i in infos if i.returncode is None]


def stop_group(proc: subprocess.Popen, wait: float = 30.0) -> None:
    """SIGTERM to the process group of ``proc`` (started with ``start_new_session``), SIGKILL after ``wait`` s."""
    for sig, patience in ((signal.SIGTERM, wait), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=patience)
            break
        except subprocess.TimeoutExpired:
            continue
    try:  # anything of the group still there (children that outlived their parent)
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def stream(
    cmd: list[str],
    cwd: str | Path,
    on_line: Callable[[str], None],
    on_tick: Callable[[], None] | None = None,
    tick_every: float = 5.0,
    stop_wait: float = 30.0,
) -> int:
    """Run ``cmd`` in ``cwd`` in its own process group, standard error merged into standard output, and
    call ``on_line`` with each non-blank line as it comes (in the calling thread: a Prefect task's logger
    works there); ``on_tick`` every ``tick_every`` seconds while it runs.  Returns the exit status.

    Whatever interrupts the caller (a task's timeout, a cancellation, Ctrl-C) stops the command and
    everything it started: SIGTERM to its group, SIGKILL ``stop_wait`` seconds later.
    """
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    pending, last_tick = "", time.monotonic()

    def emit(text: str, final: bool = False) -> str:
        *complete, rest = _NEWLINE.split(text)
        if final:
            complete, rest = [*complete, rest], ""
        for line in complete:
            if line.strip():
                on_line(line)
        return rest

    try:
        with selectors.DefaultSelector() as selector:
            selector.register(proc.stdout, selectors.EVENT_READ)
            while True:
                # short waits: an exception raised into this thread (a timeout) is seen within 0.2 s
                if selector.select(timeout=0.2):
                    chunk = os.read(proc.stdout.fileno(), 65536)
                    if not chunk:
                        break
                    pending = emit(pending + decoder.decode(chunk))
                elif proc.poll() is not None:
                    break  # it exited and nothing is left to read (a child may still hold the pipe open)
                if on_tick is not None and time.monotonic() - last_tick >= tick_every:
                    last_tick = time.monotonic()
                    on_tick()
        emit(pending + decoder.decode(b"", final=True), final=True)
        return proc.wait()
    finally:
        proc.stdout.close()
        if proc.poll() is None:  # interrupted: stop the command and what it runs
            stop_group(proc, stop_wait)
