"""Prefect flow: validation, training, generation and scoring, each a task that drives its DVC stage.

The tasks call ``dvc repro <stage>``, so DVC's cache and lineage hold: a stage whose inputs did not
change is skipped, and a run through Prefect is the same as ``dvc repro``.  The final scores are
published as a table artifact.  Run it with ``python -m flows.pipeline`` (or ``make flow``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

import gancls  # noqa: F401  (first: turns DVC, Prefect and GX telemetry off)

# Orchestrated steps: each drives the named DVC stages (with whatever upstream stages are stale).
STEPS = {
    "validate": ["make-sample", "validate"],
    "prepare": ["prepare"],
    "references": ["train-scorer", "train-text-encoder", "real-features"],
    "train": ["train"],
    "generate": ["generate"],
    "evaluate": ["evaluate"],
}
METRICS = ("dvclive/metrics.json", "metrics/scorer.json", "metrics/text_encoder.json", "metrics/scores.json")
REPORT = "reports/report.md"


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


def _env() -> dict:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # `gancls` on PATH
    return env


@task(task_run_name="dvc-repro-{step}")
def run_step(step: str, root: str) -> str:
    """``dvc repro`` the step's stages in ``root``; fails the task with DVC's output if one fails."""
    logger = get_run_logger()
    cmd = [sys.executable, "-m", "dvc", "repro", *STEPS[step]]
    logger.info("%s: %s", step, " ".join(cmd[2:]))
    proc = subprocess.run(cmd, cwd=root, env=_env(), capture_output=True, text=True)
    output = (proc.stdout + proc.stderr).strip()
    for line in output.splitlines()[-40:]:
        logger.info("%s | %s", step, line)
    if proc.returncode != 0:
        raise RuntimeError(f"dvc repro {' '.join(STEPS[step])} failed (exit {proc.returncode}):\n{output[-4000:]}")
    return output


@task
def publish_metrics(root: str) -> list[dict]:
    """Every metric of metrics/*.json as a row (file, metric, value) in a Prefect table artifact."""
    rows = []
    for name in METRICS:
        path = Path(root) / name
        data = flatten(json.loads(path.read_text(encoding="utf-8")))
        for key, value in sorted(data.items()):
            if isinstance(value, (int, float)) or value is None:
                rows.append({"file": name, "metric": key, "value": value})
    create_table_artifact(key="gancls-metrics", table=rows, description="gancls scores of this run")
    report = Path(root) / REPORT
    if report.is_file():
        create_markdown_artifact(
            key="gancls-report", markdown=report.read_text(encoding="utf-8"), description="gancls run report"
        )
    get_run_logger().info("metrics: %s", json.dumps(rows))
    return rows


@flow(name="gancls-pipeline", log_prints=True)
def pipeline(root: str = ".") -> list[dict]:
    """validate -> prepare -> references -> train -> generate -> evaluate, then publish the metrics."""
    root = str(Path(root).resolve())
    for step in STEPS:
        run_step(step, root)
    return publish_metrics(root)


if __name__ == "__main__":
    pipeline()
