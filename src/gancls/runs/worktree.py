"""The scheduled run's temporary git worktree: set up from HEAD with the repository's DVC cache, recorded
as a DVC experiment of the repository, and removed whatever happened (``temporary``).

Git and DVC run here (through ``gancls.runs.process``); Prefect does not: ``flows/scheduled.py`` wraps these
steps in tasks, with their logs and timeouts.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import time
from pathlib import Path

from . import scheduling
from .process import dvc, git, run

log = logging.getLogger(__name__)


def add(root: str | Path, path: str | Path, logger: logging.Logger | logging.LoggerAdapter = log) -> dict:
    """A detached git worktree of HEAD at ``path`` sharing the repository's refs and DVC cache, with the
    pipeline's outputs checked out.

    When the last scheduled run was made from the same commit, its files (``dvc.lock``, metrics) are laid
    on top, so that ``dvc status`` there says what changed since that run.  Returns ``head``, ``worktree``,
    ``start`` (what the run starts from, in words) and ``experiment`` (the last run's, or None).
    """
    root, path = Path(root), Path(path)
    head = git("rev-parse", "HEAD", cwd=root)
    cache = dvc("cache", "dir", cwd=root).stdout.strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    git("worktree", "add", "--detach", str(path), head, cwd=root)
    start, experiment = f"commit {head[:12]}", None
    last = scheduling.last_run(root)
    if (
        last
        and last.get("head") == head
        and run(["git", "cat-file", "-e", f"{last['rev']}^{{commit}}"], root, check=False).returncode == 0
    ):
        git("checkout", last["rev"], "--", ".", cwd=path)
        # `checkout REV -- .` lays REV's files over HEAD's but keeps those REV deleted (a DVCLive series a run
        # no longer writes): remove them, or `dvc status` sees an output the last run never made
        for gone in git("diff", "--name-only", "--diff-filter=D", head, last["rev"], cwd=path).splitlines():
            (path / gone).unlink(missing_ok=True)
        start, experiment = f"experiment {last['experiment']}", last["experiment"]
    # what `dvc cache dir --local` writes, without another DVC process
    (path / ".dvc" / "config.local").write_text(f"[cache]\n    dir = {cache}\n", encoding="utf-8")
    data = scheduling.tracked_data(path)
    out = dvc("checkout", "dvc.yaml", *[name for name, d in data.items() if d["hashed"]], cwd=path, check=False)
    if out.returncode != 0:  # e.g. the first run after a clone: docs/SCHEDULED_RUNS.md (a DVC remote avoids it)
        logger.warning(
            "dvc checkout: some outputs are not in the cache and will be rebuilt (`dvc pull` from a "
            "DVC remote fills the cache): %s",
            out.stderr.strip()[-500:],
        )
    for dvcfile, d in scheduling.tracked_data(path).items():  # again: after the checkout
        for missing in d["missing"]:
            if d["hashed"]:
                hint = "not in the DVC cache: `dvc pull` it from a DVC remote, or run `gancls fetch` in the repository"
            elif (root / missing).exists():
                hint = f"{missing}/ is in the workspace: commit {dvcfile} after `dvc add {missing}` for runs to use it"
            else:
                hint = "`gancls fetch` makes it; runs of the embedded sample do not read it"
            logger.info("%s: %s is not here, and is not recorded in this run's experiment (%s)", dvcfile, missing, hint)
    logger.info("worktree %s at %s (from %s)", path, head[:12], start)
    return {"head": head, "worktree": str(path), "start": start, "experiment": experiment}


def remove(root: str | Path, path: str | Path) -> None:
    """Remove the worktree at ``path``, whatever state it is in.

    A ``git worktree add`` stopped by a timeout leaves its worktree locked ("initializing"), which
    ``remove --force`` and ``prune`` both skip: unlock it first, and force twice."""
    git("worktree", "unlock", str(path), cwd=root, check=False)
    git("worktree", "remove", "--force", "--force", str(path), cwd=root, check=False)
    shutil.rmtree(path, ignore_errors=True)
    git("worktree", "prune", cwd=root, check=False)


def processes_in(path: str | Path) -> list[int]:
    """The processes working under ``path`` (their current directory; Linux's /proc, elsewhere none)."""
    where, found = os.path.realpath(path), []
    proc = Path("/proc")
    for entry in proc.iterdir() if proc.is_dir() else ():
        try:
            cwd = os.readlink(entry / "cwd") if entry.name.isdigit() else ""
        except OSError:  # gone, a zombie, or not ours to read
            continue
        if cwd == where or cwd.startswith(where + os.sep):
            found.append(int(entry.name))
    return found


def kill_processes_in(path: str | Path, wait: float = 10.0) -> list[int]:
    """SIGKILL the processes working under ``path``, and wait up to ``wait`` s for them to be gone.

    The stages a run starts have a process group of their own (``process.stream``), so killing the run
    (SIGKILL of its serving process's group) leaves them running in its worktree: orphans that go on
    writing there, and into the shared DVC cache, while the next run goes."""
    pids = processes_in(path)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + wait
    while pids and processes_in(path) and time.monotonic() < deadline:
        time.sleep(0.1)
    return pids


def remove_leftovers(root: str | Path) -> list[tuple[str, int]]:
    """Remove the worktrees that killed runs left under ``scheduling.RUNS_DIR`` (a SIGKILL skips
    ``temporary``'s clean-up), first killing the stages still running there. Call it holding the run lock:
    then no live run owns one. Returns each one's name and the number of processes killed in it."""
    runs = Path(root) / scheduling.RUNS_DIR
    left = sorted(p for p in runs.iterdir() if p.is_dir()) if runs.is_dir() else []
    done = []
    for path in left:
        killed = kill_processes_in(path)
        remove(root, path)
        done.append((path.name, len(killed)))
    return done


@contextlib.contextmanager
def temporary(root: str | Path, path: str | Path):
    """Yields ``path``; on leaving, however (an exception, a timeout, a cancellation), the worktree there
    is removed, also when ``add`` stopped half-way or never ran.  Not a Prefect task: it must run while
    the flow run is being cancelled."""
    try:
        yield Path(path)
    finally:
        remove(root, path)


def save_experiment(root: str | Path, path: str | Path, name: str) -> str:
    """``dvc exp save --name NAME`` in the worktree: an experiment of the repository (shared refs).
    Returns its commit.

    It caches the pipeline's outputs and each ``*.dvc`` file whose data is there (``data/`` with its
    hash); a missing ``data/`` is left out rather than failing the save.
    """
    untracked = git("ls-files", "--others", "--exclude-standard", "--directory", cwd=path).splitlines()
    present = [dvcfile for dvcfile, d in scheduling.tracked_data(path).items() if not d["missing"]]
    dvc("exp", "save", "--name", name, *[a for p in untracked for a in ("-I", p)], "dvc.yaml", *present, cwd=path)
    refs = git("for-each-ref", "--format=%(objectname) %(refname)", "refs/exps/", cwd=root).splitlines()
    return next(line.split()[0] for line in refs if line.endswith(f"/{name}"))
