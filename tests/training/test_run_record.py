"""The run's record (``gancls.training.run_record.RunRecord``) and the loop's time profile (``gancls.training.loop_times``)."""

import builtins
import io
import json

from PIL import Image

from gancls.training import loop_times
from gancls.training.loop_times import LoopTimes
from gancls.training.run_record import RunRecord

from conftest import section

ROW = {"steps": 3, "d_loss": 1.0, "g_loss": 2.0, "d_real": 0.6, "d_fake": 0.3, "images_per_s": 9.0, "seconds": 0.1}


def test_epochs_are_recorded_without_reading_the_history_back(tmp_path, monkeypatch):
    """Each epoch's DVCLive record is written without opening a file of the run's history for reading
    (DVCLive's ``Live.next_step`` re-reads every metrics TSV each epoch: a run's record-keeping would
    grow with the square of its epochs), and the summary still holds the epoch just recorded."""
    live_dir = tmp_path / "live"
    cfg = section(
        "train",
        epochs=12,
        sample_every=5,
        live_dir=str(live_dir),
        grid=str(tmp_path / "grid.png"),
        progress_gif=str(tmp_path / "progress.gif"),
    )
    times = LoopTimes()
    record = RunRecord(cfg, main=True, times=times)
    reads = []
    real_open = builtins.open

    def watched_open(file, mode="r", *args, **kwargs):
        if isinstance(file, str | bytes) or hasattr(file, "__fspath__"):
            path = str(file if not isinstance(file, bytes) else file.decode())
            if path.startswith(str(live_dir)) and not any(c in mode for c in "wax+"):
                reads.append(path)
        return real_open(file, mode, *args, **kwargs)

    frame = lambda title: Image.new("RGB", (8, 8))  # noqa: E731
    for epoch in range(1, cfg.epochs + 1):
        times.start_epoch()
        with monkeypatch.context() as m:
            m.setattr(builtins, "open", watched_open)
            m.setattr(io, "open", watched_open)
            record.epoch({"epoch": epoch, "lr": 1e-3, **ROW}, 3 * epoch, frame)
            record.next_step()
        times.end_epoch(epoch)
        assert reads == [], f"epoch {epoch} read back {reads}"
        assert json.loads((live_dir / "metrics.json").read_text())["step"] == epoch
    record.finish({"epochs": cfg.epochs})

    rows = (live_dir / "plots" / "metrics" / "d_loss.tsv").read_text().splitlines()
    assert [r.split("\t")[0] for r in rows] == ["step", *map(str, range(1, cfg.epochs + 1))]
    summary = json.loads((live_dir / "metrics.json").read_text())
    assert summary["step"] == cfg.epochs and summary["epochs"] == cfg.epochs
    assert sorted(p.name for p in (live_dir / "plots" / "images" / "samples").iterdir()) == [
        "00005.png",
        "00010.png",
        "00012.png",
    ]
    # the profile: one row per epoch; the grid epochs' grids and every epoch's DVCLive writes counted
    assert [r["epoch"] for r in times.epochs] == list(range(1, cfg.epochs + 1))
    assert all(r["live"] > 0 for r in times.epochs)
    assert [r["epoch"] for r in times.epochs if r["grids"] > 0] == [5, 10, 12]


def test_loop_times_count_nested_parts_once(monkeypatch):
    """A part entered inside another pauses it: every second is counted once, the rest is ``update``."""
    clock = [0.0]
    monkeypatch.setattr(loop_times.time, "perf_counter", lambda: clock[0])

    def wait(seconds):
        clock[0] += seconds

    times = LoopTimes()
    times.start_epoch()
    with times.part("reads"):
        wait(2)
        with times.part("grids"):
            wait(5)
        wait(1)
    wait(20)  # the loop's body: no part
    times.end_epoch(1)
    (row,) = times.epochs
    assert (row["reads"], row["grids"], row["update"], row["seconds"]) == (3, 5, 20, 28)
    assert row["record"] == 5
    assert times.total["reads"] == 3 and times.total["update"] == 20
