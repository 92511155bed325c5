"""``gancls sweep FILE.yaml`` (``make sweep SWEEP=FILE.yaml``): every (setting, seed) of a sweep file as a
DVC experiment named ``<sweep>-<setting>-s<seed>``, run by DVC's own queue (``dvc exp run --queue``,
``dvc queue start --jobs``), then the comparison of ``runs/compare.py`` in ``reports/sweeps/<sweep>/``.

    name: lr            # the sweep
    baseline: default   # the setting the others are compared with
    seeds: [0, 1, 2]    # params.yaml's top-level seed
    jobs: 2             # experiments at once (DVC queue workers)
    settings:
      default: []
      fast: ["train.lr=0.001"]

Every setting is checked against the schema before anything is queued.  The workspace (params.yaml,
dvc.lock, outputs) is left as it was: queued experiments run in DVC's temporary copies.  Run again, an
experiment of HEAD with the same name and the same params is not run again (one with other params is
removed and rerun).  A failed experiment is reported, its log kept in ``logs/``, and the others go on.
Ctrl-C or SIGTERM removes this sweep's queued entries, kills its running ones and leaves the queue
empty of it; a rerun continues with what is not done.  An entry no DVC worker will finish (its worker
killed: a forced ``dvc queue kill`` takes the worker's process group with it) is marked failed, and queued
ones left without a worker get workers again, so that a sweep never waits forever (``Watchdog``).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..config import ConfigError, parse_params
from .compare import compare, experiments, flat
from .experiment import raw_with
from .process import ExperimentFailed, dvc, env, worker_pids

_QUEUE_READ = threading.Lock()
POLL_SECONDS = 2.0  # between two reads of DVC's queue while a sweep runs
STALE_SECONDS = 30.0  # between two looks for entries no worker will finish (Watchdog)
NAME = r"^[A-Za-z0-9][A-Za-z0-9_]*$"  # a part of a DVC experiment name (a git ref); '-' joins the parts


class SweepFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=NAME)
    baseline: str
    seeds: list[int] = Field(default=[0], min_length=1)
    jobs: int = Field(default=1, ge=1)
    settings: dict[str, list[str]] = Field(min_length=1)

    @field_validator("settings")
    @classmethod
    def _names(cls, settings):
        for label, overrides in settings.items():
            if not re.match(NAME, label):
                raise ValueError(f"setting name {label!r}: letters, digits and _ only")
            if any(o.split("=", 1)[0].strip() == "seed" for o in overrides):
                raise ValueError(f"setting {label!r} sets seed: the sweep's seeds set it")
        return settings

    @model_validator(mode="after")
    def _baseline(self):
        if self.baseline not in self.settings:
            raise ValueError(f"baseline {self.baseline!r} is not one of the settings ({', '.join(self.settings)})")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds {self.seeds}: each seed once")
        return self


def load_sweep(path: str | Path) -> SweepFile:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        return SweepFile.model_validate(raw)
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot be read as YAML ({exc})") from None
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise ConfigError(f"{path}: {where + ': ' if where else ''}{err['msg']}") from None


@dataclass(frozen=True)
class Planned:
    name: str
    setting: str
    seed: int
    overrides: tuple[str, ...]
    params: dict  # params.yaml with the overrides applied (what the experiment's params must equal)


def plan(spec: SweepFile, params_file: str | Path) -> list[Planned]:
    """Every (setting, seed), each checked against the schema (ConfigError names the setting)."""
    out = []
    for label, overrides in spec.settings.items():
        for seed in spec.seeds:
            applied = (*overrides, f"seed={seed}")
            try:
                raw = raw_with(list(applied), params_file)
                parse_params(raw, source=f"{params_file} with the settings")
            except ConfigError as exc:
                raise ConfigError(f"sweep {spec.name}, setting {label}: {exc}") from None
            out.append(Planned(f"{spec.name}-{label}-s{seed}", label, seed, applied, raw))
    return out


def queue_status(root: Path) -> dict[str, str]:
    """DVC's queue (what ``dvc queue status`` lists): experiment name -> Queued | Running | Success | Failed.

    Read in this process through DVC's API: a poll costs no interpreter start and no ping of the
    workers (``dvc queue status`` pays both, about a second of a core, every time)."""
    from dvc.repo import Repo

    with _QUEUE_READ, Repo(str(root)) as repo:  # one read at a time (the flow's tasks poll from threads)
        return {
            e["name"]: e["status"]
            for e in repo.experiments.celery_queue.status()
            if e.get("name") and e.get("status") in ("Queued", "Running", "Success", "Failed")
        }


def _copies(root: Path, names: list[str]) -> set[str]:
    """The temporary copies (``.dvc/tmp/exps/tmp*``) DVC runs these queued experiments in, from their
    executor info files."""
    from dvc.repo import Repo
    from dvc.repo.experiments.executor.base import ExecutorInfo

    out = set()
    with _QUEUE_READ, Repo(str(root)) as repo:
        queue = repo.experiments.celery_queue
        for entry in queue.status():
            info = Path(queue.get_infofile_path(entry["rev"]))
            if entry.get("name") in names and info.is_file():
                out.add(ExecutorInfo.load_json(str(info)).root_dir)
    return out


def orphans(root: Path, names: list[str]) -> dict[str, str]:
    """Entries of ``names`` that DVC lists as ``Running`` or ``Queued`` while no worker process is alive
    (``worker_pids``; a forced ``dvc queue kill`` kills a worker with its experiment's process group), so
    none will finish them. Name -> that state. (Live workers are not asked what they run: a busy worker
    can miss celery's one-second ``inspect``.)"""
    from dvc.repo import Repo

    with _QUEUE_READ, Repo(str(root)) as repo:
        queue = repo.experiments.celery_queue
        running = {e.name for e in queue.iter_active() if e.name in names}
        queued = {e.name for e in queue.iter_queued() if e.name in names}
        alive = any(_alive(pid) for pid in worker_pids(queue))
    if not (running or queued) or alive:
        return {}
    return {**{n: "Running" for n in running}, **{n: "Queued" for n in queued}}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError as exc:  # PermissionError: alive, another user's
        return not isinstance(exc, ProcessLookupError)
    return True


def mark_failed(root: Path, names: list[str]) -> None:
    """DVC's own end for a running entry whose process is gone (what ``dvc queue kill`` does then): the
    task marked failed, unless a worker runs it after all; the temporary copy it ran in removed."""
    from dvc.repo import Repo
    from dvc.repo.experiments.queue.exceptions import CannotKillTasksError

    copies = _copies(root, names)
    with _QUEUE_READ, Repo(str(root)) as repo:
        queue = repo.experiments.celery_queue
        entries = {e: e.name for e in queue.iter_active() if e.name in names}
        if entries:
            try:
                queue._mark_inactive_tasks_failure(entries)  # DVC 3's, behind `dvc queue kill`
            except CannotKillTasksError:
                return  # a worker runs it: not an orphan
    for copy in copies:  # the temporary copy it ran in
        shutil.rmtree(copy, ignore_errors=True)


class Watchdog:
    """For a loop waiting on DVC's queue: every ``every`` s it looks for ``orphans``; one seen twice in a row
    is marked failed (running) or given workers (queued; ``restarts`` times at most). Returns what it did."""

    def __init__(self, root: Path, jobs: int, every: float = STALE_SECONDS, restarts: int = 3):
        self.root, self.jobs, self.every, self.restarts = root, jobs, every, restarts
        self.last = time.monotonic()
        self.seen: dict[str, str] = {}

    def __call__(self, names: list[str]) -> list[str]:
        if time.monotonic() - self.last < self.every:
            return []
        self.last = time.monotonic()
        now = orphans(self.root, names)
        both = {n: s for n, s in now.items() if self.seen.get(n) == s}
        self.seen = now
        said = []
        running = [n for n, s in both.items() if s == "Running"]
        if running:
            mark_failed(self.root, running)
            said += [f"{n}: running, but no DVC worker is alive (killed): marked failed" for n in running]
        queued = [n for n, s in both.items() if s == "Queued"]
        if queued:
            if self.restarts <= 0:
                raise ExperimentFailed(
                    f"{', '.join(queued)}: queued, and DVC's workers keep dying (see `dvc queue logs`)"
                )
            self.restarts -= 1
            start_workers(self.root, min(self.jobs, len(queued)))
            said.append(f"{', '.join(queued)}: queued with no DVC worker alive: workers started again")
        if both:
            self.seen = {}
        return said


def clear_queue(root: Path, names: list[str]) -> int:
    """Remove ``names`` from DVC's queue: queued first, running ones killed (and, where their worker is
    gone, marked failed: ``mark_failed``), then the finished entries; the temporary copies the killed ones
    ran in removed (a forced kill can leave them). Returns how many running ones were killed."""
    killed: set[str] = set()
    copies: set[str] = set()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        status = queue_status(root)
        queued = [n for n in names if status.get(n) == "Queued"]
        running = [n for n in names if status.get(n) == "Running"]
        if queued:
            dvc("queue", "remove", *queued, cwd=root, check=False)
        if running:
            copies |= _copies(root, running)
            dvc("queue", "kill", "--force", *running, cwd=root, check=False)
            if killed.issuperset(running):  # killed before and still listed: marked failed if no worker is left
                mark_failed(root, [n for n, s in orphans(root, running).items() if s == "Running"])
            killed.update(running)
        if not queued and not running:
            break
        time.sleep(1)
    left = [n for n in names if n in queue_status(root)]
    if left:
        dvc("queue", "remove", *left, cwd=root, check=False)
    for copy in copies:
        shutil.rmtree(copy, ignore_errors=True)
    return len(killed)


@dataclass
class Sweep:
    """A sweep file planned against a repository: what it holds and what is left to run."""

    spec: SweepFile
    root: Path
    planned: list[Planned]
    todo: list[Planned]

    @property
    def out(self) -> Path:
        return Path("reports/sweeps") / self.spec.name


def prepare_view(path: str | Path, params_file: str | Path = "params.yaml") -> Sweep:
    """The sweep file checked and planned, nothing changed (``todo`` empty): for the steps that only read."""
    spec = load_sweep(path)
    params_file = Path(params_file)
    return Sweep(spec, params_file.resolve().parent, plan(spec, params_file), [])


def prepare(path: str | Path, params_file: str | Path = "params.yaml") -> Sweep:
    """Check the file and every setting; clear what an earlier, killed sweep left on DVC's queue (queued
    entries removed, running ones killed); keep the experiments of HEAD that are done with the same
    params, remove the ones with other params."""
    sweep = prepare_view(path, params_file)
    spec, root, planned = sweep.spec, sweep.root, sweep.planned
    names = [p.name for p in planned]
    if any(n in queue_status(root) for n in names):  # left by an earlier sweep that was killed, or its failures
        clear_queue(root, names)
    done = experiments(root)
    todo = []
    for p in planned:
        exp = done.get(p.name)
        if exp is not None and flat(exp.params) == flat(p.params):
            continue
        if exp is not None:
            dvc("exp", "remove", p.name, cwd=root)
        todo.append(p)
    return Sweep(spec, root, planned, todo)


def enqueue(sweep: Sweep) -> None:
    """Each experiment left to run on DVC's queue (``dvc exp run --queue -n NAME -S ...``), then ``jobs``
    DVC workers started (at most one per experiment)."""
    for p in sweep.todo:
        dvc("exp", "run", "--queue", "-n", p.name, *[a for o in p.overrides for a in ("-S", o)], cwd=sweep.root)
    start_workers(sweep.root, min(sweep.spec.jobs, len(sweep.todo)))


def start_workers(root: Path, jobs: int) -> None:
    """``dvc queue start --jobs JOBS`` (the workers alive already are kept: DVC names them by number)."""
    # the workers DVC starts outlive the command and would hold a pipe open: no output captured
    started = subprocess.run(
        [sys.executable, "-m", "dvc", "queue", "start", "--jobs", str(jobs)],
        cwd=root,
        env=env(),  # the stages call gancls: this installation's bin/ first on PATH
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    if started.returncode:
        raise ConfigError(f"dvc queue start failed (exit {started.returncode}) in {root}")


def save_log(sweep: Sweep, name: str) -> Path:
    """A failed experiment's log (``dvc queue logs``) to ``reports/sweeps/<sweep>/logs/<name>.log``."""
    log = sweep.root / sweep.out / "logs" / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(dvc("queue", "logs", name, cwd=sweep.root, check=False).stdout, encoding="utf-8")
    return log


def finish(sweep: Sweep, say) -> tuple[list[str], dict[str, Path]]:
    """The finished entries off DVC's queue; the comparison of the finished experiments (when the
    baseline setting has one). Returns the names not finished, and the comparison's files."""
    names = [p.name for p in sweep.planned]
    ours = [n for n in names if n in queue_status(sweep.root)]
    if ours:
        dvc("queue", "remove", *ours, cwd=sweep.root, check=False)
    have = experiments(sweep.root)
    finished = [n for n in names if n in have]
    paths: dict[str, Path] = {}
    if finished and sweep.spec.baseline in {p.setting for p in sweep.planned if p.name in have}:
        labels = {p.name: p.setting for p in sweep.planned}
        paths = compare(
            finished, sweep.root / sweep.out, sweep.root, sweep.spec.baseline, labels, title=f"Sweep {sweep.spec.name}"
        )
        say(f"comparison: {', '.join(str(p.relative_to(sweep.root)) for p in paths.values())}")
    else:
        say(f"no comparison: no finished experiment of the baseline setting {sweep.spec.baseline!r}")
    return [n for n in names if n not in have], paths


def run_sweep(path: str | Path, params_file: str | Path = "params.yaml", say=print) -> int:
    """Queue what is not done, run it with ``jobs`` DVC workers, wait, compare.  0 when every experiment
    of the sweep exists at the end, 1 when one failed, 130/143 when stopped by SIGINT/SIGTERM."""
    sweep = prepare(path, params_file)
    planned, todo, root = sweep.planned, sweep.todo, sweep.root
    say(
        f"sweep {sweep.spec.name}: {len(planned)} experiments, {len(planned) - len(todo)} already done, "
        f"{len(todo)} to run"
    )
    stopped: list[int] = []
    handlers = {}
    failed: list[str] = []
    if todo:

        def on_signal(signum, _frame):
            stopped.append(signum)

        handlers = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            enqueue(sweep)
            seen: dict[str, str] = {}
            ours = {p.name for p in todo}
            watchdog = Watchdog(root, sweep.spec.jobs)
            while not stopped:
                for line in watchdog([n for n, s in seen.items() if s in ("Queued", "Running")]):
                    say(f"  {line}")
                status = {n: s for n, s in queue_status(root).items() if n in ours}
                for name, state in status.items():
                    if seen.get(name) != state:
                        say(f"  {name}: {state.lower()}")
                seen = status
                if not any(s in ("Queued", "Running") for s in status.values()):
                    break
                time.sleep(POLL_SECONDS)
            if stopped:  # this sweep's entries off DVC's queue (clear_queue), then say so
                killed = clear_queue(root, [p.name for p in todo])
                say(
                    f"stopped: {killed} running experiment(s) killed, the queue holds none of this sweep; rerun to continue"
                )
                return 128 + stopped[0]
            failed = [n for n, s in seen.items() if s == "Failed"]
        finally:
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
    for name in failed:
        say(f"  {name}: FAILED (log: {save_log(sweep, name).relative_to(root)})")
    missing, _ = finish(sweep, say)
    return 1 if failed or missing else 0
