"""Where a training loop's wall-clock time goes, part by part and epoch by epoch (``LoopTimes``).

The loop marks its parts (``with times.part("reads"): ...``); a part entered inside another pauses the
outer one, so every second is counted once, and what no part claims is ``update``.  It is host time,
read with ``time.perf_counter`` (about a microsecond a part on a busy 2-core CPU, a few parts a step)
and never syncs a device: on a GPU the ``step`` part is the time to launch the step's kernels, and the
device's own time shows up in the part that waits for it (``reads``, where the statistics come to the
host).  Nothing here changes a run.
"""

from __future__ import annotations

import time

# the parts of an epoch that the loop marks: reading the statistics to the host (with the console line),
# DVCLive (metrics and summary), the sample grids, the quality probe (quality.py), the resume checkpoints;
# the rest of an epoch is "update" (the steps, the averaged G, drawing batches, the progress bar)
EPOCH_PARTS = ("reads", "live", "grids", "quality", "checkpoint")
RECORD_PARTS = ("live", "grids", "quality", "checkpoint")  # record-keeping: what the update does not need
# outside the epochs: building the models and resuming, and the shipped model written at the end
RUN_PARTS = ("setup", "final")


class LoopTimes:
    """Seconds per part: ``total`` over the run, ``epochs`` one row per epoch (its ``seconds`` and parts)."""

    def __init__(self):
        self.total = dict.fromkeys(RUN_PARTS + EPOCH_PARTS + ("update",), 0.0)
        self.epochs: list[dict[str, float]] = []
        self._now = dict.fromkeys(EPOCH_PARTS, 0.0)
        self._stack: list[str] = []
        self._since = time.perf_counter()
        self._epoch_t0: float | None = None
        self._parts: dict[str, _Part] = {}

    def part(self, name: str) -> _Part:
        """A context: its time (less the parts inside it) counted to ``name``."""
        if name not in self._parts:
            self._parts[name] = _Part(self, name)
        return self._parts[name]

    def start_epoch(self) -> None:
        self._now = dict.fromkeys(EPOCH_PARTS, 0.0)
        self._epoch_t0 = time.perf_counter()

    def end_epoch(self, epoch: int) -> None:
        seconds = time.perf_counter() - self._epoch_t0
        row = {"epoch": epoch, "seconds": seconds, **self._now}
        row["update"] = seconds - sum(self._now.values())
        row["record"] = sum(self._now[k] for k in RECORD_PARTS)
        self.epochs.append(row)
        for k in EPOCH_PARTS + ("update",):
            self.total[k] += row[k]
        self._epoch_t0 = None

    def _switch(self) -> None:
        """Count the time since the last mark to the part running (if any)."""
        now = time.perf_counter()
        if self._stack:
            name = self._stack[-1]
            if name in RUN_PARTS:
                self.total[name] += now - self._since
            else:
                self._now[name] += now - self._since
        self._since = now


class _Part:
    __slots__ = ("times", "name")

    def __init__(self, times: LoopTimes, name: str):
        self.times, self.name = times, name

    def __enter__(self) -> None:
        self.times._switch()
        self.times._stack.append(self.name)

    def __exit__(self, *exc) -> None:
        self.times._switch()
        self.times._stack.pop()
