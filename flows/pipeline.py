"""Prefect flow: validation, training, generation and scoring, each a task that drives its DVC stages.

The tasks call ``dvc repro``, so DVC's cache and lineage hold: a stage whose inputs did not change is
skipped, and a run through Prefect is the same as ``dvc repro``.  The final scores are published as a
table artifact and the run report as a markdown artifact.  Run it with ``python -m flows.pipeline``
(``make flow``).
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow

from flows.tasks import STEPS, publish_metrics, repro, timed
from gancls.config import load_params


@flow(name="gancls-pipeline", log_prints=True)
def pipeline(root: str = ".") -> list[dict]:
    """validate -> prepare -> references -> train -> generate -> evaluate, then publish the metrics.

    Each step within its ``flow.timeouts`` limit, as in the scheduled run.
    """
    root = str(Path(root).resolve())
    cfg = load_params(Path(root) / "params.yaml").flow
    for step in STEPS:
        timed(repro, cfg.timeouts, step)(step, root, cfg.progress_every)
    return timed(publish_metrics, cfg.timeouts, "record")(root)


if __name__ == "__main__":
    pipeline()
