"""A sweep (``gancls sweep FILE.yaml``) as a Prefect flow: the ``sweep`` deployment of prefect.yaml, beside
the scheduled one, so that a sweep runs on a work pool's machine and shows in the Prefect UI.

1. ``queue``: the sweep file and every setting checked, what an earlier killed sweep left on DVC's queue
   cleared, the experiments done with the same params kept; the rest put on DVC's queue and ``jobs`` DVC
   workers started (the sweep file's concurrency; ``gancls.runs.sweep``, as the command does).
2. One task per experiment (``<sweep>-<setting>-s<seed>``): it follows its experiment on DVC's queue until
   it succeeds, or fails with the experiment's log saved to ``reports/sweeps/<sweep>/logs/``; one that no
   DVC worker will finish (its worker killed) is marked failed, queued ones left with no worker get new
   workers (``sweep.Watchdog``).
3. ``compare``: the comparison of ``gancls compare`` in ``reports/sweeps/<sweep>/``, ``comparison.md`` as
   the markdown artifact ``gancls-sweep``.

A cancelled or stopped flow run takes its experiments off DVC's queue (queued ones removed, running ones
killed); a killed one leaves them to the next run's ``queue`` step, which clears them. The workspace is
never touched: queued experiments run in DVC's temporary copies.

    .venv/bin/python -m flows.sweep configs/sweeps/recipe.yaml      # one run, here (a temporary Prefect server)
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.futures import wait

import gancls  # noqa: F401  (first: turns DVC, Prefect and GX telemetry off)
from gancls.runs import sweep as sweeps

DEFAULT_FILE = "configs/sweeps/recipe.yaml"


@task(task_run_name="queue")
def queue(root: str, file: str) -> list[str]:
    """Check, clear what a killed sweep left, keep what is done, queue the rest and start DVC's workers."""
    logger = get_run_logger()
    sweep = sweeps.prepare(Path(root) / file, Path(root) / "params.yaml")
    logger.info(
        "sweep %s: %d experiments, %d already done, %d to run",
        sweep.spec.name,
        len(sweep.planned),
        len(sweep.planned) - len(sweep.todo),
        len(sweep.todo),
    )
    if sweep.todo:
        sweeps.enqueue(sweep)
    return [p.name for p in sweep.todo]


@task(task_run_name="{name}")
def experiment(root: str, file: str, name: str, poll: float = sweeps.POLL_SECONDS) -> str:
    """Follow experiment ``name`` on DVC's queue until it succeeds; fail with its log when it fails."""
    logger = get_run_logger()
    sweep = sweeps.prepare_view(Path(root) / file, Path(root) / "params.yaml")
    watchdog = sweeps.Watchdog(Path(root), sweep.spec.jobs)  # ends it if no DVC worker ever will
    last = None
    while True:
        state = sweeps.queue_status(Path(root)).get(name)
        if state != last:
            logger.info("%s: %s", name, (state or "not on the queue").lower())
            last = state
        if state in ("Queued", "Running"):
            for line in watchdog([name]):
                logger.warning("%s", line)
        if state == "Success":
            return name
        if state == "Failed":
            log = sweeps.save_log(sweep, name)
            raise RuntimeError(f"experiment {name} failed: its log is {log}")
        if state is None:
            raise RuntimeError(f"experiment {name} is no longer on DVC's queue (removed or killed by another run)")
        time.sleep(poll)


@task(task_run_name="compare")
def compare(root: str, file: str) -> list[str]:
    """The finished entries off DVC's queue; the comparison files; comparison.md as an artifact.
    Returns the experiments of the sweep that do not exist."""
    logger = get_run_logger()
    sweep = sweeps.prepare_view(Path(root) / file, Path(root) / "params.yaml")
    missing, paths = sweeps.finish(sweep, lambda line: logger.info("%s", line))
    if "md" in paths:
        create_markdown_artifact(
            key="gancls-sweep",
            markdown=paths["md"].read_text(encoding="utf-8"),
            description=f"sweep {sweep.spec.name}: each setting against {sweep.spec.baseline}, over seeds",
        )
    return missing


@flow(name="gancls-sweep", log_prints=True)
def sweep(file: str = DEFAULT_FILE, root: str = ".") -> dict:
    """Run the sweep ``file`` (relative to ``root``) as DVC experiments, then compare them."""
    root = str(Path(root).resolve())
    names = queue(root, file)
    try:
        futures = [experiment.submit(root, file, name) for name in names]
        wait(futures)
    except BaseException:  # cancelled or stopped: none of this sweep left running or queued
        sweeps.clear_queue(Path(root), names)
        raise
    failed = [name for name, f in zip(names, futures) if f.state.is_failed()]
    missing = compare(root, file)
    if failed or missing:
        raise RuntimeError(
            f"sweep {file}: failed {', '.join(failed) or 'none'}; missing {', '.join(missing) or 'none'}"
        )
    return {"ran": names, "failed": failed}


if __name__ == "__main__":
    sweep(*sys.argv[1:2])
