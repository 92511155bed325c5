"""The record of a training run, behind one object (``RunRecord``): the console lines, the progress
bar, DVCLive's per-epoch metrics and fixed-caption grids, the latest grid and the progress GIF.
Off rank 0 it records nothing.

A resumed run continues the DVCLive history it finds, after dropping what epochs past the checkpoint
wrote and what a killed run left half-written (DVCLive writes in place).
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from PIL import Image
from tqdm import tqdm

from ..config import TrainParams
from ..drawing.grids import captioned_image, save_gif, save_png
from ..files import atomic_path
from .loop_times import LoopTimes

FRAMES = "samples"  # DVCLive image folder of the fixed-caption grids: samples/<epoch>.png
NOT_LOGGED = ("epoch", "steps", "seconds")  # of an epoch's row: the rest are DVCLive metrics


class RunRecord:
    """Console, progress bar, DVCLive and grids of one run (``main``: this process records)."""

    def __init__(self, cfg: TrainParams, main: bool, resumed_epoch: int | None = None, times: LoopTimes | None = None):
        self.cfg, self.main = cfg, main
        self.times = times if times is not None else LoopTimes()  # DVCLive's time counts to "live", grids' to "grids"
        self.live, self.frames = None, []
        if main:
            from dvclive.vscode import mark_dvclive_step_completed as mark_step

            from dvclive import Live

            self._mark_step = mark_step  # the step signal of DVC's VS Code extension (next_step)
            self._signals = ThreadPoolExecutor(1, thread_name_prefix="dvclive-step")  # its fsync, off the loop
            live_dir = Path(cfg.live_dir)
            if resumed_epoch is not None:
                self.frames = [Image.open(p).copy() for p in _trim_live(live_dir, resumed_epoch)]
            self.live = Live(str(live_dir), resume=resumed_epoch is not None, save_dvc_exp=False, dvcyaml=False)

    def say(self, line: str) -> None:
        if self.main:
            print(line, flush=True)

    def bar(self, epoch: int, steps: int) -> tqdm:
        return tqdm(
            total=steps,
            desc=f"epoch {epoch}/{self.cfg.epochs}",
            leave=False,
            mininterval=2,
            disable=None if self.main else True,
        )

    def show(self, bar: tqdm, latest: dict[str, float], images: int, t0: float) -> None:
        """The latest statistics beside the bar (``images`` so far this epoch, since ``t0``)."""
        bar.set_postfix(
            {
                "d_loss": f"{latest['d_loss']:.3f}",
                "g_loss": f"{latest['g_loss']:.3f}",
                "D(x)": f"{latest['d_real']:.2f}",
                "D(G(z))": f"{latest['d_fake']:.2f}",
                "img/s": f"{images / (time.perf_counter() - t0):.0f}",
            },
            refresh=False,
        )

    def epoch(self, row: dict, step: int, frame: Callable[[str], Image.Image]) -> None:
        """An epoch's line and metrics; every ``sample_every`` epochs (and the last) the grid ``frame(title)``."""
        if not self.main:
            return
        epoch, cfg = row["epoch"], self.cfg
        self.say(
            f"epoch {epoch}/{cfg.epochs}: d_loss {row['d_loss']:.3f} g_loss {row['g_loss']:.3f} "
            f"D(x) {row['d_real']:.2f} D(G(z)) {row['d_fake']:.2f} ({row['images_per_s']:.1f} img/s)"
        )
        image = None
        if epoch % cfg.sample_every == 0 or epoch == cfg.epochs:
            with self.times.part("grids"):
                image = frame(f"epoch {epoch}/{cfg.epochs}: training captions x fixed noise")
                self.frames.append(image)
                save_png(image, cfg.grid)
        with self.times.part("live"):
            self.live.step = epoch
            for k, v in row.items():
                if k not in NOT_LOGGED:
                    self.live.log_metric(k, v)
            self.live.log_metric("steps", step)
        if image is not None:
            with self.times.part("grids"):
                self.live.log_image(f"{FRAMES}/{epoch:05d}.png", image)

    def next_step(self) -> None:
        """Writes DVCLive's summary: `dvc exp show` (and `gancls runs`) see the epoch.

        Not ``Live.next_step()``: its ``sync()`` gathers data for DVC Studio (``post_data_to_studio`` ->
        ``_get_live_data`` -> ``dvclive.utils.parse_metrics``) whether or not Studio is set up, re-reading
        every metrics TSV from its first row at each call: O(epochs) an epoch, O(epochs^2) a run.  This is
        the rest of it: the summary (``make_summary``; the step is set in ``epoch``) and the step signal
        of DVC's VS Code extension (a file written and fsynced, about 7 ms: on a thread of its own, in
        order); DVCLive's report and dvc.yaml are off.  ``finish`` (``Live.end()``) still syncs once,
        Studio included.
        """
        if self.main:
            with self.times.part("live"):
                self.live.make_summary()
                self._signals.submit(self._mark_step, self.live.step)

    def finish(self, summary: dict) -> None:
        if not self.main:
            return
        if self.frames:  # again at the end: a run resumed after its last epoch has drawn nothing new
            save_png(self.frames[-1], self.cfg.grid)
            save_gif(self.frames, self.cfg.progress_gif)
        self._signals.shutdown(wait=True)  # the last step signal before end() removes it
        self.live.summary.update(summary)
        self.live.end()


@torch.no_grad()
def sample_frame(g, z: torch.Tensor, texts: torch.Tensor, captions: list[str], title: str):
    """Rows: captions, columns: noise vectors (the same z in every row); a captioned PIL image."""
    was_training = g.training
    g.eval()
    n_text, n_z = texts.shape[0], z.shape[0]
    imgs = g(z.repeat(n_text, 1), texts.repeat_interleave(n_z, dim=0))
    g.train(was_training)
    return captioned_image(imgs, captions, n_z, title=title)


def _trim_live(live_dir: Path, epoch: int) -> list[Path]:
    """A resumed run's DVCLive history: drop what epochs after ``epoch`` wrote, and what a killed run left
    half-written (DVCLive writes in place: a partial TSV row, summary or frame); the kept frames."""
    summary = live_dir / "metrics.json"
    if summary.is_file():
        try:
            json.loads(summary.read_text(encoding="utf-8"))
        except ValueError:
            summary.unlink()  # DVCLive writes it again at the next step
    metrics = live_dir / "plots" / "metrics"
    tsvs = sorted(p for p in metrics.rglob("*.tsv") if not any(s.startswith(".") for s in p.relative_to(metrics).parts))
    for tsv in tsvs:
        with tsv.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f, delimiter="\t")
            rows, fields = list(reader), reader.fieldnames
        if not fields or "step" not in fields:
            tsv.unlink()
            continue
        keep = [r for r in rows if _row_step(r) is not None and _row_step(r) <= epoch]
        if len(keep) != len(rows):
            with atomic_path(tsv) as tmp, tmp.open("w", newline="", encoding="utf-8") as f:
                w = csv.DictWriter(f, fieldnames=fields, delimiter="\t")
                w.writeheader()
                w.writerows(keep)
    frames = []
    for png in sorted((live_dir / "plots" / "images" / FRAMES).glob("*.png")):
        if not png.stem.isdigit() or int(png.stem) > epoch:
            png.unlink()
            continue
        try:
            with Image.open(png) as im:
                im.load()
            frames.append(png)
        except (OSError, SyntaxError, ValueError):  # half-written by a killed run: the GIF goes without it
            png.unlink()
    return frames


def _row_step(row: dict) -> int | None:
    """The step of a complete TSV row; None for a row a killed writer cut short."""
    if None in row or any(v is None or v == "" for v in row.values()):
        return None
    try:
        return int(row["step"])
    except ValueError:
        return None
