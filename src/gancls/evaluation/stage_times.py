"""Where a run's minutes go: each DVC stage's wall-clock seconds, written by ``gancls <stage>`` as one
of that stage's outputs (``<stage_times>/<stage>.json``, a DVC metric), read back by the run report.

A stage that DVC restored from its cache keeps the seconds it took when it ran; the report says so by
showing when each ran.  Import costs count: the clock starts before the stage's own imports.
"""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from ..files import write_json

# The stages of dvc.yaml, in the order a fresh `dvc repro` runs them.
STAGES = (
    "make-sample",
    "validate",
    "prepare",
    "train-scorer",
    "train-text-encoder",
    "real-features",
    "real-floor",
    "train",
    "generate",
    "evaluate",
)


class StageClock:
    """The running stage's clock: ``seconds()`` so far (the report of the evaluate stage reads its own)."""

    def __init__(self, stage: str):
        self.stage, self.t0 = stage, time.perf_counter()

    def seconds(self) -> float:
        return time.perf_counter() - self.t0


@contextmanager
def timed(stage: str, folder: str | Path):
    """Time the block; if it succeeds, write ``<folder>/<stage>.json`` (seconds and when it finished)."""
    clock = StageClock(stage)
    yield clock
    write_json(
        Path(folder) / f"{stage}.json",
        {
            "stage": stage,
            "seconds": round(clock.seconds(), 2),
            "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        },
    )


def read_times(folder: str | Path) -> dict[str, dict]:
    """Each stage's record under ``folder`` that exists and reads, in STAGES order."""
    out = {}
    for stage in STAGES:
        path = Path(folder) / f"{stage}.json"
        try:
            out[stage] = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
    return out
