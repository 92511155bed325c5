"""The scheduled run: rerun what changed in a temporary git worktree, record it as a DVC experiment,
compare it with a baseline, publish the result in Prefect.  Served by ``gancls serve`` (``make serve``)
or deployed to a work pool with ``prefect deploy`` (prefect.yaml).

Each run, holding the repository's run lock (``.dvc/tmp/gancls-flow.lock``):

1. ``open-worktree``: ``git worktree add`` of HEAD under ``.dvc/tmp/gancls-flow/runs/`` (with the
   last run's files on top when it was made from the same commit), the repository's DVC
   cache as its cache, ``dvc checkout``; ``what-changed``: ``dvc status`` there.  Nothing stale:
   no stage runs, nothing is recorded, and the run says so.
2. One task per step, ``dvc repro <stages>`` in the worktree (``flows.tasks.repro``, shared with
   ``flows.pipeline``), DVC's output streamed to the task's log; during ``train`` a progress artifact
   follows DVCLive's epoch counter.
3. ``record``: ``dvc exp save`` (an experiment ref, shared with the repository: ``dvc exp show``
   there lists it); ``compare``: ``dvc metrics diff <baseline>``, the metrics table and the markdown
   summary; a metric past its ``flow.regression`` limit fails the run.  With nothing changed, the
   last run's files are compared (no stage runs, nothing is recorded).
4. The worktree is removed, whatever happened: the user's workspace is never touched.

Git, DVC and process handling are in ``gancls.runs.process`` and ``gancls.runs.worktree``, the rules in
``gancls.runs.scheduling``; here is the orchestration.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.tasks import exponential_backoff

from flows.tasks import STEPS, publish_metrics, repro, timed
from gancls.config import load_params
from gancls.runs import process, scheduling, worktree

GRIDS = {
    "training grid": ("train", "grid"),
    "training progress": ("train", "progress_gif"),
    "generated grid": ("generate", "grid"),
    "text interpolation": ("generate", "interp_grid"),
    "noise interpolation": ("generate", "noise_grid"),
}


@task(task_run_name="open-worktree")
def open_worktree(root: str, path: str) -> dict:
    """A detached git worktree of HEAD sharing the repository's refs and DVC cache, outputs checked out."""
    return worktree.add(root, path, get_run_logger())


@task(task_run_name="what-changed")
def what_changed(path: str) -> dict[str, list[str]]:
    """``dvc status``: the stale stages and what changed in each (data, params, code)."""
    # the pipeline's stages: a missing data/ of data.dvc is no change (a stage that reads it says so)
    stale = scheduling.stale_stages(json.loads(process.dvc("status", "--json", "dvc.yaml", cwd=path).stdout or "{}"))
    for name, what in stale.items():
        get_run_logger().info("stale: %s: %s", name, ", ".join(what))
    return stale


@task(task_run_name="gancls-fetch")
def fetch(path: str) -> None:
    """``gancls fetch`` (downloads): the only step that is retried, with exponential backoff."""
    proc = process.run([str(Path(sys.executable).parent / "gancls"), "fetch"], path, check=False)
    get_run_logger().info("%s", (proc.stdout + proc.stderr).strip()[-4000:])
    if proc.returncode != 0:
        raise RuntimeError(f"gancls fetch failed (exit {proc.returncode}): {proc.stderr.strip()[-500:]}")


@task(task_run_name="record")
def record(root: str, path: str, experiment: str) -> str:
    """``dvc exp save`` the worktree: an experiment of the repository (shared refs); returns its commit."""
    rev = worktree.save_experiment(root, path, experiment)
    get_run_logger().info("recorded as experiment %s (%s): `dvc exp show` lists it", experiment, rev[:12])
    return rev


@task(task_run_name="compare")
def compare(
    root: str, path: str, experiment: str | None, baseline: str, changes: dict, ran: list[str], note: str = ""
) -> list[str]:
    """``dvc metrics diff <baseline>`` of the worktree, judged by ``flow.regression``; the summary artifact.

    Returns the regressions, one line each.
    """
    logger = get_run_logger()
    params = load_params(Path(path) / "params.yaml")
    against = baseline
    if baseline == "last":
        accepted = (scheduling.last_run(root) or {}).get("accepted")
        against = accepted["rev"] if accepted else "HEAD"
    diff = json.loads(process.dvc("metrics", "diff", against, "--json", "--all", cwd=path).stdout or "{}")
    rows = scheduling.diff_rows(diff)
    failed = scheduling.regressions(rows, params.flow.regression)
    result = Path(path) / params.validation.report_dir / "result.json"
    validation = (
        scheduling.validation_summary(json.loads(result.read_text(encoding="utf-8"))) if result.is_file() else None
    )
    grids = {what: getattr(getattr(params, section), key) for what, (section, key) in GRIDS.items()}
    markdown = scheduling.summary_markdown(
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


@flow(name="gancls-scheduled", log_prints=True)
def scheduled(root: str = ".", baseline: str | None = None) -> dict:
    """Rerun what changed since the last run of this commit, record it as an experiment, compare with ``baseline``.

    ``baseline``: a git ref, an experiment name or ``last`` (the last accepted run); default
    ``flow.baseline`` of params.yaml.  Every task within its ``flow.timeouts`` limit; only ``fetch`` is
    retried.
    """
    from prefect.runtime import flow_run

    logger = get_run_logger()
    root = str(Path(root).resolve())
    cfg = load_params(Path(root) / "params.yaml").flow
    baseline = baseline or cfg.baseline
    name = f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"
    path = str(Path(root) / scheduling.RUNS_DIR / name)
    with scheduling.run_lock(root, cfg.lock_wait, owner=f"flow run {flow_run.name}"):
        for left, killed in worktree.remove_leftovers(root):  # the lock is ours: no live run owns one
            logger.warning("removed the worktree %s that a killed run left (%d of its processes killed)", left, killed)
        return _run(root, path, name, baseline, cfg, logger)


def _run(root: str, path: str, name: str, baseline: str, cfg, logger) -> dict:
    """The run itself, in its temporary worktree (removed on leaving, whatever happened)."""
    limits = cfg.timeouts
    # the worktree is removed on leaving, also after a timeout or a failure half-way through open-worktree
    with worktree.temporary(root, path):
        tree = timed(open_worktree, limits, "check")(root, path)
        if cfg.fetch:
            backoff = exponential_backoff(backoff_factor=cfg.fetch_backoff)
            timed(fetch, limits, "fetch", retries=cfg.fetch_retries, retry_delay_seconds=backoff)(path)
        changes = timed(what_changed, limits, "check")(path)
        steps = scheduling.steps_to_run(changes, STEPS)
        judge = timed(compare, limits, "record")
        if not steps:
            note = f"Nothing changed since {tree['start']}: no stage ran, no experiment recorded."
            logger.info("%s", note)
            timed(publish_metrics, limits, "record")(path)
            failed = judge(root, path, tree.get("experiment"), baseline, {}, [], note)
            result = {"changed": False, "message": note, "regressions": failed}
        else:
            for step in steps:  # training and validation are never retried
                timed(repro, limits, step, retries=0)(step, path, cfg.progress_every)
            timed(publish_metrics, limits, "record")(path)
            rev = timed(record, limits, "record")(root, path, name)
            failed = judge(root, path, name, baseline, changes, steps)
            scheduling.save_run(root, tree["head"], name, rev, accepted=not failed)
            result = {"changed": True, "steps": steps, "experiment": name, "rev": rev, "regressions": failed}
        if failed:
            what = result.get("experiment") or tree.get("experiment") or "HEAD"
            raise scheduling.Regression(f"{what} regressed against {baseline}: " + "; ".join(failed))
        return result


if __name__ == "__main__":
    scheduled()
