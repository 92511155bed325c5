"""Orchestration overhead of the scheduled run: a flow run's wall time minus the stages' own time.

Builds the tiny pipeline (configs/tiny.yaml) in a temporary clone of this repository
(``gancls.runs.project.clone_project``), wraps each stage's command so that it records its own duration, then
runs the clone's ``flows/scheduled.py:scheduled`` (prefect.yaml's entrypoint) twice against a temporary Prefect server (``prefect_test_harness``): once with every stage stale, once with
nothing changed.  Prints one JSON line:

    python benchmarks/flow_overhead.py            # about 3-5 minutes on 2 CPU cores

``overhead_s`` = first run's wall time - sum of the stage commands' times: the temporary worktree,
``dvc checkout``/``status``, one ``dvc repro`` per step, ``dvc exp save``, ``dvc metrics diff``,
artifacts and Prefect's own bookkeeping.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "tiny.yaml"
# The clone's committed metrics are the full default run's; a tiny run scores far below them (text match
# ~0.1 against 0.5, FID ~440 against ~265) and would fail as a regression.  This measures time, not scores.
WIDE_LIMITS = {"flow": {"regression": {"text_match.accuracy": {"max_drop": 1.0}, "fid": {"max_rise": 1.0e6}}}}

TIMER = """import json, subprocess, sys, time
t = time.perf_counter()
rc = subprocess.call(sys.argv[2:])
with open(sys.argv[1], "a") as f:
    f.write(json.dumps({"cmd": " ".join(sys.argv[2:]), "seconds": time.perf_counter() - t}) + "\\n")
sys.exit(rc)
"""


def main() -> None:
    from prefect.flows import load_flow_from_entrypoint
    from prefect.testing.utilities import prefect_test_harness

    from gancls.runs.process import git
    from gancls.runs.project import clone_project, merge

    with tempfile.TemporaryDirectory(prefix="flow-overhead-") as tmp:
        tmp = Path(tmp)
        times, timer = tmp / "stage_times.jsonl", tmp / "timer.py"
        timer.write_text(TIMER)
        repo = clone_project(ROOT, tmp / "repo", merge(yaml.safe_load(TINY.read_text()), WIDE_LIMITS))
        stages = yaml.safe_load((repo / "dvc.yaml").read_text())
        for stage in stages["stages"].values():
            stage["cmd"] = f"{sys.executable} {timer} {times} {stage['cmd']}"
        (repo / "dvc.yaml").write_text(yaml.safe_dump(stages, sort_keys=False))
        shutil.copy(ROOT / ".gitignore", repo)  # as in the project: Data Docs are not committed
        git("add", "-A", cwd=repo)
        git("commit", "-qm", "timed stages", cwd=repo)
        # the clone's own flow, loaded as a deployment loads it (its folder first on the import path)
        with contextlib.chdir(repo):
            scheduled = load_flow_from_entrypoint("flows/scheduled.py:scheduled", use_placeholder_flow=False)
        with prefect_test_harness():
            t = time.perf_counter()
            state = scheduled(root=str(repo), return_state=True)
            wall = time.perf_counter() - t
            first = state.result()
            tasks = task_times(state.state_details.flow_run_id)
            t = time.perf_counter()
            second = scheduled(root=str(repo))
            nothing = time.perf_counter() - t
        rows = [json.loads(line) for line in times.read_text().splitlines()]
        stage_s = sum(r["seconds"] for r in rows)
        assert first["changed"] and not second["changed"], (first, second)
    print(
        json.dumps(
            {
                "benchmark": "flow_overhead",
                "config": "tiny (configs/tiny.yaml)",
                "stages_run": len(rows),
                "flow_wall_s": round(wall, 2),
                "stages_s": round(stage_s, 2),
                "overhead_s": round(wall - stage_s, 2),
                "nothing_changed_wall_s": round(nothing, 2),
                "steps": first["steps"],
                "task_s": tasks,
                "stage_s": {r["cmd"].split()[-1]: round(r["seconds"], 2) for r in rows},
            }
        )
    )


def task_times(flow_run_id) -> dict:
    """Wall time of each task run of the flow run (Prefect's start and end times)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    return {r.name: round((r.end_time - r.start_time).total_seconds(), 2) for r in runs if r.start_time and r.end_time}


if __name__ == "__main__":
    main()
