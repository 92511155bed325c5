"""The Prefect tasks both flows run: ``dvc repro`` of one step, streamed into the task's log, and the
metrics and run report published as artifacts.  Paths come from the params.yaml of the folder they run
in; running commands is ``gancls.runs.process``'s.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from prefect import Task, get_run_logger, task
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)

import gancls  # noqa: F401  (first: turns DVC, Prefect and GX telemetry off)
from gancls.config import FlowTimeouts, Params, load_params
from gancls.runs import process, scheduling

# Orchestrated steps, in pipeline order: each drives the named DVC stages.
STEPS = {
    "validate": ["make-sample", "validate"],
    "prepare": ["prepare"],
    "references": ["train-scorer", "train-text-encoder", "real-features", "real-floor"],
    "train": ["train"],
    "generate": ["generate"],
    "evaluate": ["evaluate"],
}


def metric_files(params: Params) -> list[str]:
    """The metrics files the pipeline writes (``dvc metrics show`` lists the same)."""
    return [params.train.metrics, params.scorer.metrics, params.text_encoder.metrics, params.evaluate.out]


def flatten(data: dict, prefix: str = "") -> dict:
    """Nested metrics as dotted keys (``text_match.accuracy``), as ``dvc metrics show`` names them."""
    out = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def timed(work: Task, timeouts: FlowTimeouts, key: str, **options) -> Task:
    """``work`` with its ``flow.timeouts`` limit (``key``: a step, ``check``, ``fetch`` or ``record``)."""
    return work.with_options(timeout_seconds=timeouts.of(key), **options)


@task(task_run_name="dvc-repro-{step}")
def repro(step: str, root: str, progress_every: float = 5.0) -> str:
    """``dvc repro --single-item`` the step's stages in ``root``, DVC's output streamed into the log line by
    line; during ``train`` the progress artifact ``gancls-train-progress`` follows DVCLive's epoch.

    Single items: the flows run the steps in pipeline order, so everything upstream is already up to date
    and DVC need not check it again.  A failure fails the task with DVC's output (and, for ``validate``,
    the validation summary); a timeout or a cancellation stops DVC and the stage it runs.
    """
    logger = get_run_logger()
    params = load_params(Path(root) / "params.yaml")
    cmd = [sys.executable, "-m", "dvc", "repro", "--single-item", *STEPS[step]]
    logger.info("%s: %s", step, " ".join(cmd[2:]))
    output: list[str] = []

    def line(text: str) -> None:
        output.append(text)
        logger.info("%s | %s", step, text)

    tick, progress, epochs = None, None, params.train.epochs
    if step == "train":
        progress = create_progress_artifact(
            progress=0.0, key="gancls-train-progress", description=f"training: epoch 0 of {epochs}"
        )
        summary, started = Path(root) / params.train.metrics, time.time()

        def tick() -> None:
            epoch = scheduling.live_epoch(summary, started)
            if epoch is not None:
                update_progress_artifact(
                    progress,
                    progress=min(100.0, 100.0 * epoch / epochs),
                    description=f"training: epoch {min(epoch, epochs)} of {epochs}",
                )

    code = process.stream(cmd, root, line, on_tick=tick, tick_every=progress_every)
    if progress is not None:
        update_progress_artifact(
            progress, progress=100.0 if code == 0 else 0.0, description=f"training: {'done' if code == 0 else 'failed'}"
        )
    text = "\n".join(output)
    if code != 0:
        message = f"dvc repro {' '.join(STEPS[step])} failed (exit {code})"
        result = Path(root) / params.validation.report_dir / "result.json"
        if step == "validate" and result.is_file():
            message += ": " + scheduling.validation_summary(json.loads(result.read_text(encoding="utf-8")))
        logger.error("%s", message)
        raise RuntimeError(f"{message}\n{text[-4000:]}")
    return text


@task
def publish_metrics(root: str) -> list[dict]:
    """Every number of the pipeline's metrics files as a row (file, metric, value) in the table artifact
    ``gancls-metrics``; the run report (``evaluate.report``) as the markdown artifact ``gancls-report``."""
    params = load_params(Path(root) / "params.yaml")
    rows = []
    for name in metric_files(params):
        data = flatten(json.loads((Path(root) / name).read_text(encoding="utf-8")))
        for key, value in sorted(data.items()):
            if isinstance(value, (int, float)) or value is None:
                rows.append({"file": name, "metric": key, "value": value})
    create_table_artifact(key="gancls-metrics", table=rows, description="gancls scores of this run")
    report = Path(root) / params.evaluate.report
    if report.is_file():
        create_markdown_artifact(
            key="gancls-report", markdown=report.read_text(encoding="utf-8"), description="gancls run report"
        )
    get_run_logger().info("metrics: %s", json.dumps(rows))
    return rows
