"""The scheduled run: rerun what changed in a temporary git worktree, record it as a DVC experiment,
compare it with a baseline, publish the result in Prefect.  Served by ``python -m flows.serve``
(``make serve``) or deployed to a work pool with ``prefect deploy`` (prefect.yaml).

Each run, holding the repository's run lock (``.dvc/tmp/gancls-flow.lock``):

1. ``open-worktree``: ``git worktree add`` of HEAD under ``.dvc/tmp/gancls-flow/runs/`` (with the
   last run's files on top when it was made from the same commit), the repository's DVC
   cache as its cache, ``dvc checkout``; ``what-changed``: ``dvc status`` there.  Nothing stale:
   no stage runs, nothing is recorded, and the run says so.
2. One task per step, ``dvc repro <stages>`` in the worktree, DVC's output streamed to the task's
   log; during ``train`` a progress artifact follows DVCLive's epoch counter.
3. ``record``: ``dvc exp save`` (an experiment ref, shared with the repository: ``dvc exp show``
   there lists it); ``compare``: ``dvc metrics diff <baseline>``, the metrics table and the markdown
   summary; a metric past its ``flow.regression`` limit fails the run.  With nothing changed, the
   last run's files are compared (no stage runs, nothing is recorded).
4. The worktree is removed, whatever happened: the user's workspace is never touched.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_progress_artifact, update_progress_artifact
from prefect.tasks import exponential_backoff

import gancls  # noqa: F401  (first: turns DVC, Prefect and GX telemetry off)
from flows.pipeline import STEPS, _env, publish_metrics
from gancls import runs
from gancls.config import load_params

GRIDS = {
    "training grid": ("train", "grid"),
    "training progress": ("train", "progress_gif"),
    "generated grid": ("generate", "grid"),
    "text interpolation": ("generate", "interp_grid"),
    "noise interpolation": ("generate", "noise_grid"),
}


def _run(cmd: list[str], cwd: str | Path, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(cmd[2:] if cmd[0] == sys.executable else cmd)} failed in {cwd} "
            f"(exit {proc.returncode}): {(proc.stderr or proc.stdout).strip()[-2000:]}"
        )
    return proc


def _dvc(*args: str, cwd, check: bool = True) -> subprocess.CompletedProcess:
    return _run([sys.executable, "-m", "dvc", *args], cwd, check)


def _git(*args: str, cwd, check: bool = True) -> str:
    return _run(["git", *args], cwd, check).stdout.strip()


@task(task_run_name="open-worktree")
def open_worktree(root: str, worktree: str) -> dict:
    """A detached git worktree of HEAD sharing the repository's refs and DVC cache, outputs checked out."""
    logger = get_run_logger()
    head = _git("rev-parse", "HEAD", cwd=root)
    cache = _dvc("cache", "dir", cwd=root).stdout.strip()
    worktree = Path(worktree)
    worktree.parent.mkdir(parents=True, exist_ok=True)
    _git("worktree", "add", "--detach", str(worktree), head, cwd=root)
    start, experiment = f"commit {head[:12]}", None
    last = runs.last_run(root)
    if (
        last
        and last.get("head") == head
        and _run(["git", "cat-file", "-e", f"{last['rev']}^{{commit}}"], root, check=False).returncode == 0
    ):
        # the last run of this commit: its dvc.lock and metrics, so that status says "since then"
        _git("checkout", last["rev"], "--", ".", cwd=worktree)
        start, experiment = f"experiment {last['experiment']}", last["experiment"]
    # what `dvc cache dir --local` writes, without another DVC process
    (worktree / ".dvc" / "config.local").write_text(f"[cache]\n    dir = {cache}\n", encoding="utf-8")
    data = runs.tracked_data(worktree)
    out = _dvc("checkout", "dvc.yaml", *[name for name, d in data.items() if d["hashed"]], cwd=worktree, check=False)
    if out.returncode != 0:  # e.g. the first run after a clone: README "Scheduled runs" (a DVC remote avoids it)
        logger.warning(
            "dvc checkout: some outputs are not in the cache and will be rebuilt (`dvc pull` from a "
            "DVC remote fills the cache): %s",
            out.stderr.strip()[-500:],
        )
    for dvcfile, d in runs.tracked_data(worktree).items():  # again: after the checkout
        for path in d["missing"]:
            if d["hashed"]:
                hint = "not in the DVC cache: `dvc pull` it from a DVC remote, or run `gancls fetch` in the repository"
            elif (Path(root) / path).exists():
                hint = f"{path}/ is in the workspace: commit {dvcfile} after `dvc add {path}` for runs to use it"
            else:
                hint = "`gancls fetch` makes it; runs of the embedded sample do not read it"
            logger.info("%s: %s is not here, and is not recorded in this run's experiment (%s)", dvcfile, path, hint)
    logger.info("worktree %s at %s (from %s)", worktree, head[:12], start)
    return {"head": head, "worktree": str(worktree), "start": start, "experiment": experiment}


@task(task_run_name="what-changed")
def what_changed(worktree: str) -> dict[str, list[str]]:
    """``dvc status``: the stale stages and what changed in each (data, params, code)."""
    # the pipeline's stages: a missing data/ of data.dvc is no change (a stage that reads it says so)
    stale = runs.stale_stages(json.loads(_dvc("status", "--json", "dvc.yaml", cwd=worktree).stdout or "{}"))
    for name, what in stale.items():
        get_run_logger().info("stale: %s: %s", name, ", ".join(what))
    return stale


@task(task_run_name="gancls-fetch")
def fetch(worktree: str) -> None:
    """``gancls fetch`` (downloads): the only step that is retried, with exponential backoff."""
    proc = _run([str(Path(sys.executable).parent / "gancls"), "fetch"], worktree, check=False)
    get_run_logger().info("%s", (proc.stdout + proc.stderr).strip()[-4000:])
    if proc.returncode != 0:
        raise RuntimeError(f"gancls fetch failed (exit {proc.returncode}): {proc.stderr.strip()[-500:]}")


def _reader(stream, lines: queue.Queue) -> None:
    for line in iter(stream.readline, ""):
        lines.put(line.rstrip("\r\n").rsplit("\r", 1)[-1])
    stream.close()


def _epoch(live_metrics: Path, since: float) -> int | None:
    """The epoch DVCLive last wrote to its summary, if it was written during this run."""
    try:
        if live_metrics.stat().st_mtime < since:
            return None
        return int(json.loads(live_metrics.read_text(encoding="utf-8")).get("step", 0)) + 1
    except (OSError, ValueError):
        return None  # not there yet, or being replaced


@task(task_run_name="dvc-repro-{step}")
def repro(step: str, worktree: str, progress_every: float = 5.0) -> str:
    """``dvc repro --single-item`` the step's stages in the worktree, streaming DVC's output into the log.

    Single items: the steps run in pipeline order from the first stale one, so everything upstream is
    already up to date and DVC need not check it again.
    """
    logger = get_run_logger()
    cmd = [sys.executable, "-m", "dvc", "repro", "--single-item", *STEPS[step]]
    logger.info("%s: %s", step, " ".join(cmd[2:]))
    params = load_params(Path(worktree) / "params.yaml")
    progress = None
    if step == "train":
        epochs, live = params.train.epochs, Path(worktree) / params.train.metrics
        progress = create_progress_artifact(
            progress=0.0, key="gancls-train-progress", description=f"training: epoch 0 of {epochs}"
        )
    started, last_poll, output = time.time(), 0.0, []
    proc = subprocess.Popen(
        cmd,
        cwd=worktree,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )  # its own group: a timeout ends all of it
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=_reader, args=(proc.stdout, lines), daemon=True).start()
    try:
        while True:
            done = proc.poll() is not None
            while not lines.empty():
                line = lines.get()
                if line.strip():
                    output.append(line)
                    logger.info("%s | %s", step, line)
            if progress is not None and time.monotonic() - last_poll >= progress_every:
                last_poll = time.monotonic()
                epoch = _epoch(live, started)
                if epoch is not None:
                    update_progress_artifact(
                        progress,
                        progress=min(100.0, 100.0 * epoch / epochs),
                        description=f"training: epoch {min(epoch, epochs)} of {epochs}",
                    )
            if done and lines.empty():
                break
            time.sleep(0.2)
    finally:
        if proc.poll() is None:  # a timeout or a cancellation: stop DVC and the stage it runs
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
    if progress is not None:
        update_progress_artifact(
            progress,
            progress=100.0 if proc.returncode == 0 else 0.0,
            description=f"training: {'done' if proc.returncode == 0 else 'failed'}",
        )
    text = "\n".join(output)
    if proc.returncode != 0:
        message = f"dvc repro {' '.join(STEPS[step])} failed (exit {proc.returncode})"
        result = Path(worktree) / params.validation.report_dir / "result.json"
        if step == "validate" and result.is_file():
            message += ": " + runs.validation_summary(json.loads(result.read_text(encoding="utf-8")))
        logger.error("%s", message)
        raise RuntimeError(f"{message}\n{text[-4000:]}")
    return text


@task(task_run_name="record")
def record(root: str, worktree: str, experiment: str) -> str:
    """``dvc exp save`` the worktree: an experiment of the repository (shared refs); returns its commit.

    It caches the pipeline's outputs and each ``*.dvc`` file whose data is here (``data/`` with its
    hash); a missing ``data/`` is left out rather than failing the save.
    """
    untracked = _git("ls-files", "--others", "--exclude-standard", "--directory", cwd=worktree).splitlines()
    present = [name for name, d in runs.tracked_data(worktree).items() if not d["missing"]]
    _dvc(
        "exp",
        "save",
        "--name",
        experiment,
        *[a for p in untracked for a in ("-I", p)],
        "dvc.yaml",
        *present,
        cwd=worktree,
    )
    refs = _git("for-each-ref", "--format=%(objectname) %(refname)", "refs/exps/", cwd=root).splitlines()
    rev = next(line.split()[0] for line in refs if line.endswith(f"/{experiment}"))
    get_run_logger().info("recorded as experiment %s (%s): `dvc exp show` lists it", experiment, rev[:12])
    return rev


@task(task_run_name="compare")
def compare(
    root: str, worktree: str, experiment: str | None, baseline: str, changes: dict, ran: list[str], note: str = ""
) -> list[str]:
    """``dvc metrics diff <baseline>`` of the worktree, judged by ``flow.regression``; the summary artifact.

    Returns the regressions, one line each.
    """
    logger = get_run_logger()
    params = load_params(Path(worktree) / "params.yaml")
    against = baseline
    if baseline == "last":
        accepted = (runs.last_run(root) or {}).get("accepted")
        against = accepted["rev"] if accepted else "HEAD"
    diff = json.loads(_dvc("metrics", "diff", against, "--json", "--all", cwd=worktree).stdout or "{}")
    rows = runs.diff_rows(diff)
    failed = runs.regressions(rows, params.flow.regression)
    result = Path(worktree) / params.validation.report_dir / "result.json"
    validation = runs.validation_summary(json.loads(result.read_text(encoding="utf-8"))) if result.is_file() else None
    grids = {what: getattr(getattr(params, section), key) for what, (section, key) in GRIDS.items()}
    markdown = runs.summary_markdown(
        experiment=experiment,
        baseline=baseline,
        rows=rows,
        failed=failed,
        ran=ran,
        changes=changes,
        validation=validation,
        grids=grids,
        note=note,
    )
    create_markdown_artifact(
        key="gancls-diff", markdown=markdown, description=f"metrics of {experiment or 'HEAD'} against {baseline}"
    )
    if validation:
        logger.info("%s", validation)
    for line in failed:
        logger.error("regression: %s", line)
    return failed


def remove_worktree(root: str, worktree: str) -> None:
    """Not a task: it must run even when the flow run is being cancelled.

    A `git worktree add` stopped by a timeout leaves its worktree locked ("initializing"), which
    `remove --force` and `prune` both skip: unlock it first, and force twice."""
    _git("worktree", "unlock", worktree, cwd=root, check=False)
    _git("worktree", "remove", "--force", "--force", worktree, cwd=root, check=False)
    shutil.rmtree(worktree, ignore_errors=True)
    _git("worktree", "prune", cwd=root, check=False)


@flow(name="gancls-scheduled", log_prints=True)
def scheduled(root: str = ".", baseline: str | None = None) -> dict:
    """Rerun what changed since the last run of this commit, record it as an experiment, compare with ``baseline``.

    ``baseline``: a git ref, an experiment name or ``last`` (the last accepted run); default
    ``flow.baseline`` of params.yaml.
    """
    from prefect.runtime import flow_run

    logger = get_run_logger()
    root = str(Path(root).resolve())
    params = load_params(Path(root) / "params.yaml")
    cfg = params.flow
    baseline = baseline or cfg.baseline
    timeouts = cfg.timeouts
    name = f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"
    worktree = str(Path(root) / runs.RUNS_DIR / name)
    with runs.run_lock(root, cfg.lock_wait, owner=f"flow run {flow_run.name}"):
        try:
            tree = open_worktree.with_options(timeout_seconds=timeouts.check)(root, worktree)
            if cfg.fetch:
                fetch.with_options(
                    timeout_seconds=timeouts.fetch,
                    retries=cfg.fetch_retries,
                    retry_delay_seconds=exponential_backoff(backoff_factor=cfg.fetch_backoff),
                )(worktree)
            changes = what_changed.with_options(timeout_seconds=timeouts.check)(worktree)
            steps = runs.steps_to_run(changes, STEPS)
            judge = compare.with_options(timeout_seconds=timeouts.record)
            if not steps:
                note = f"Nothing changed since {tree['start']}: no stage ran, no experiment recorded."
                logger.info("%s", note)
                publish_metrics.with_options(timeout_seconds=timeouts.record)(worktree)
                failed = judge(root, worktree, tree.get("experiment"), baseline, {}, [], note)
                result = {"changed": False, "message": note, "regressions": failed}
            else:
                for step in steps:  # training and validation are never retried
                    repro.with_options(timeout_seconds=timeouts.of(step), retries=0)(step, worktree, cfg.progress_every)
                publish_metrics.with_options(timeout_seconds=timeouts.record)(worktree)
                rev = record.with_options(timeout_seconds=timeouts.record)(root, worktree, name)
                failed = judge(root, worktree, name, baseline, changes, steps)
                runs.save_run(root, tree["head"], name, rev, accepted=not failed)
                result = {"changed": True, "steps": steps, "experiment": name, "rev": rev, "regressions": failed}
            if failed:
                what = result.get("experiment") or tree.get("experiment") or "HEAD"
                raise runs.Regression(f"{what} regressed against {baseline}: " + "; ".join(failed))
            return result
        finally:  # also after a timeout or a failure half-way through open-worktree
            remove_worktree(root, worktree)


if __name__ == "__main__":
    scheduled()
