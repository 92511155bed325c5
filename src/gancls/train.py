"""train stage: GAN-CLS with the matching-aware discriminator and the GAN-INT generator term.

Per step (Reed et al. 2016, Algorithm 1, plus GAN-INT):
    t       = mean of ``captions_per_sample`` of the image's 10 caption embeddings (right text)
    t_wrong = the text of an image of a different class
    t_int   = beta * t + (1 - beta) * t of another image in the batch
    D loss  = BCE(D(x, t), 1) + 1/2 [BCE(D(x, t_wrong), 0) + BCE(D(G(z, t), t), 0)]
    G loss  = BCE(D(G(z, t), t), 1) + int_weight * BCE(D(G(z', t_int), t_int), 1)
One D step then one G step; Adam, lr halved every ``lr_decay_every`` epochs.

The run: checkpoints every ``checkpoint_every`` epochs and automatic resume (``checkpoint.py``), a
guard that stops at the first non-finite loss, bf16 autocast / TF32 / channels-last / torch.compile
switches, statistics kept on the device and read once per ``log_every`` steps, DDP under torchrun
(``distributed.py``), and per-epoch metrics, summary and sample grids through DVCLive.
"""
from __future__ import annotations

import copy
import csv
import json
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from tqdm import tqdm

from .checkpoint import (
    check_resumable,
    clear_checkpoints,
    latest_checkpoint,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
    trained_with,
)
from .config import ConfigError, Params, atomic_path, file_digest, save_torch, seed_everything
from .distributed import Dist, no_sync
from .grids import captioned_image, save_gif, save_png
from .model import build_models
from .prepared import read_split

SHIPPED_LAST = "last epoch: G's weights after the final step"
SHIPPED_EMA = ("last epoch: exponential moving average of G's weights (decay {decay}) with re-estimated "
               "BatchNorm statistics")
STATS = ("d_loss", "g_loss", "g_int_loss", "d_real", "d_wrong", "d_fake")  # what train_step returns
LOSSES = 3  # the first three are losses: the non-finite guard watches them
WRONG_REDRAWS = 4  # wrong-text partners: redraws of same-class picks (fixed, so no host sync)


class TrainingDiverged(RuntimeError):
    """A loss became NaN or infinite; the message names the epoch and step."""


class Batches:
    """The prepared split on the training device, with Reed's augmentation and text sampling.

    Every random draw uses the generator passed in and has a size fixed by the batch, so a step
    never waits for the device and a run is reproducible from the generators' states.  Under DDP
    all ranks draw the same permutation of the split (``order_gen``) and each takes its own slice
    of every global batch.
    """

    def __init__(self, data: dict, image_size: int, captions_per_sample: int, flip: bool, device,
                 channels_last: bool = False, rank: int = 0, world: int = 1):
        self.images = torch.from_numpy(data["images"]).to(device)  # N, S, S, 3 uint8
        self.embeddings = torch.from_numpy(data["embeddings"]).to(device)  # N, 10, 1024
        cls = data["class_ids"].astype(np.int64)
        self.class_ids = torch.from_numpy(cls).to(device)
        self.n = self.images.shape[0]
        self.image_size = image_size
        self.k = captions_per_sample
        self.flip = flip
        self.device = device
        self.rank, self.world = rank, world
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        if len(np.unique(cls)) < 2:
            raise ValueError("training needs images of at least two classes (wrong-text pairs)")
        # For each image, one image of another class: the wrong partner when every redraw hit its class.
        other = int(np.argmax(cls != cls[0]))
        self.fallback = torch.from_numpy(np.where(cls == cls[0], other, 0)).to(device)
        self._span = torch.arange(image_size, device=device)

    def text(self, idx: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Mean of k distinct random caption embeddings of each image."""
        ncap = self.embeddings.shape[1]
        k = min(self.k, ncap)
        pick = torch.rand(len(idx), ncap, generator=gen, device=self.device).argsort(dim=1)[:, :k]
        return self.embeddings[idx[:, None], pick].mean(dim=1)

    def wrong(self, idx: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Indices of images of a different class than each of ``idx`` (uniform over the split)."""
        other = torch.randint(0, self.n, (len(idx),), generator=gen, device=self.device)
        for _ in range(WRONG_REDRAWS):
            redraw = torch.randint(0, self.n, (len(idx),), generator=gen, device=self.device)
            other = torch.where(self.class_ids[other] == self.class_ids[idx], redraw, other)
        return torch.where(self.class_ids[other] == self.class_ids[idx], self.fallback[idx], other)

    def augment(self, idx: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """A random image_size crop of each stored load_size image, random flip, to [-1, 1], NCHW."""
        b, s = len(idx), self.images.shape[1]
        off = torch.randint(0, s - self.image_size + 1, (b, 2), generator=gen, device=self.device)
        rows = off[:, :1] + self._span
        cols = off[:, 1:] + self._span
        if self.flip:
            flip = torch.rand(b, 1, generator=gen, device=self.device) < 0.5
            cols = torch.where(flip, cols.flip(1), cols)
        imgs = self.images[idx[:, None, None], rows[:, :, None], cols[:, None, :]]  # B, S, S, 3
        imgs = imgs.permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)
        return imgs.contiguous(memory_format=self.memory_format)

    def steps_per_epoch(self, batch_size: int) -> int:
        # Full batches only (BatchNorm); a split smaller than a batch gives one batch.
        return max(self.n // batch_size, 1)

    def epoch(self, batch_size: int, gen: torch.Generator, order_gen: torch.Generator | None = None):
        """(real images, right text, wrong text) of this rank, for each global batch of an epoch."""
        order = torch.randperm(self.n, generator=order_gen or gen, device=self.device)
        local = batch_size // self.world
        for b in range(self.steps_per_epoch(batch_size)):
            first = b * batch_size + self.rank * local
            idx = order[first:first + local]
            yield (self.augment(idx, gen), self.text(idx, gen), self.text(self.wrong(idx, gen), gen))


def _bce(logits: torch.Tensor, target: float) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits.float(), torch.full_like(logits, target, dtype=torch.float))


def train_step(g, d, opt_g, opt_d, real, text, wrong_text, z_dim: int, int_weight: float,
               int_beta: float, precision: str = "fp32", cast_cache: bool = True) -> torch.Tensor:
    """One D step then one G step; the STATS as one tensor on the device (no host sync).

    D sees real/right, real/wrong and fake/right as separate batches (as in Reed's code): BatchNorm
    over a mixed batch would let D tell fakes by batch statistics that a batch of only fakes in the
    G step does not have, and G would get no gradient.  The real images go through D's image tower
    once for the right and the wrong text.  ``precision="bf16"`` runs the passes under bfloat16
    autocast (the losses in fp32).
    """
    b = real.shape[0]
    dev = real.device
    amp = (torch.autocast(dev.type, dtype=torch.bfloat16, cache_enabled=cast_cache) if precision == "bf16"
           else nullcontext())
    with amp:
        fake = g(torch.randn(b, z_dim, device=dev), text)

    # Discriminator: real/right -> 1, real/wrong -> 0, fake/right -> 0.
    opt_d.zero_grad(set_to_none=True)
    with amp:
        s_real, s_wrong = d(real, text, wrong_text)
        s_fake = d(fake.detach(), text)
    d_loss = _bce(s_real, 1.0) + 0.5 * (_bce(s_wrong, 0.0) + _bce(s_fake, 0.0))
    d_loss.backward()
    opt_d.step()

    # Generator: fool D with right text, and with interpolated text (GAN-INT; D never trains on it).
    # D's gradients of this step are thrown away, so under DDP they are not all-reduced.
    opt_g.zero_grad(set_to_none=True)
    with no_sync(d):
        with amp:
            g_loss = _bce(d(fake, text), 1.0)
            if int_weight > 0:
                text_int = int_beta * text + (1 - int_beta) * text.roll(1, dims=0)
                g_int = _bce(d(g(torch.randn(b, z_dim, device=dev), text_int), text_int), 1.0)
            else:
                g_int = torch.zeros((), device=dev)
        (g_loss + int_weight * g_int).backward()
    opt_g.step()
    with torch.no_grad():
        return torch.stack([d_loss, g_loss, g_int, torch.sigmoid(s_real.float()).mean(),
                            torch.sigmoid(s_wrong.float()).mean(), torch.sigmoid(s_fake.float()).mean()])


class GraphedStep:
    """``train_step`` recorded once as a CUDA graph and replayed (``train.cuda_graph``).

    A step launches hundreds of small kernels; on a GPU their launch cost, not the arithmetic, bounds
    the speed.  The first ``warmup`` calls run eagerly on a side stream (cuDNN picks its algorithms),
    the next records the whole step -- both forward passes, both backward passes, both Adam updates
    (``capturable=True``, lr as a device tensor so the scheduler still works) -- and every call then
    copies its batch into the recorded input tensors and replays the graph.  Random draws inside
    (z) advance with every replay.
    """

    def __init__(self, step, warmup: int = 3):
        self.step, self.warmup = step, warmup
        self.calls = 0
        self.graph = self.inputs = self.out = None

    def __call__(self, real, text, wrong) -> torch.Tensor:
        self.calls += 1
        if self.calls <= self.warmup:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                out = self.step(real, text, wrong)
            torch.cuda.current_stream().wait_stream(side)
            return out
        if self.graph is None:
            self.inputs = [t.clone() for t in (real, text, wrong)]
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self.out = self.step(*self.inputs)
        else:
            for dst, src in zip(self.inputs, (real, text, wrong)):
                dst.copy_(src)
        self.graph.replay()
        return self.out.clone()


class EMA:
    """Exponential moving average of G's weights (``train.ema_decay``; 0 turns it off).

    GAN iterates oscillate; their running average draws steadier images (as in ProGAN/StyleGAN).
    ``shipped()`` is the averaged G with BatchNorm statistics re-estimated for the averaged weights
    ("standing statistics"): ``bn_batches`` forward passes in training mode over training texts.
    """

    def __init__(self, g: nn.Module, decay: float):
        self.decay = float(decay)
        self.avg = copy.deepcopy(g).eval() if self.decay > 0 else None
        if self.avg is not None:
            self.avg.requires_grad_(False)

    @torch.no_grad()
    def update(self, g: nn.Module) -> None:
        if self.avg is not None:
            torch._foreach_lerp_(list(self.avg.parameters()), list(g.parameters()), 1.0 - self.decay)

    @torch.no_grad()
    def shipped(self, g: nn.Module, data: Batches, z_dim: int, bn_batches: int, batch_size: int,
                seed: int) -> nn.Module:
        """The generator to ship: the live G when EMA is off, else the EMA G with standing stats."""
        if self.avg is None:
            return g
        out = copy.deepcopy(self.avg)
        norms = [m for m in out.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the passes below
        out.train()
        gen = torch.Generator(device=data.device).manual_seed(seed)
        for _ in range(bn_batches):
            idx = torch.randint(0, data.n, (batch_size,), generator=gen, device=data.device)
            out(torch.randn(batch_size, z_dim, generator=gen, device=data.device), data.text(idx, gen))
        for m in norms:
            m.momentum = 0.1
        return out.eval()


@torch.no_grad()
def sample_frame(g, z: torch.Tensor, texts: torch.Tensor, captions: list[str], title: str):
    """Rows: captions, columns: noise vectors (the same z in every row); a captioned PIL image."""
    was_training = g.training
    g.eval()
    n_text, n_z = texts.shape[0], z.shape[0]
    imgs = g(z.repeat(n_text, 1), texts.repeat_interleave(n_z, dim=0))
    g.train(was_training)
    return captioned_image(imgs, captions, n_z, title=title)


class EpochStats:
    """Per-step STATS kept on the device; read to the host once per ``log_every`` steps.

    Each read checks the losses: the first non-finite one stops training (``TrainingDiverged``)
    before anything of that epoch is saved.  Under DDP the sums and the check cover all ranks.
    """

    def __init__(self, dist: Dist, epoch: int, first_step: int):
        self.dist, self.epoch, self.first_step = dist, epoch, first_step
        self.pending: list[torch.Tensor] = []
        self.sums = np.zeros(len(STATS))
        self.count = 0  # steps read so far (over all ranks)
        self.latest: dict[str, float] = {}

    def add(self, stats: torch.Tensor) -> None:
        self.pending.append(stats)

    def read(self) -> None:
        if not self.pending:
            return
        block = torch.stack(self.pending).float()
        bad = ~torch.isfinite(block[:, :LOSSES]).all(dim=1)
        # first bad step of this block (or len), then the block's sums: one transfer, one all-reduce
        first = torch.where(bad, torch.arange(len(block), device=block.device), len(block)).min()
        packed = torch.cat([block.sum(0), first.float()[None], torch.ones(1, device=block.device)])
        if self.dist.active:
            first_all = packed[-2].clone()
            self.dist.sum_(packed)
            torch.distributed.all_reduce(first_all, op=torch.distributed.ReduceOp.MIN)
            packed[-2] = first_all
        host = packed.cpu().numpy()
        ranks = int(host[-1])
        if host[-2] < len(block):
            step = self.first_step + self.count // ranks + int(host[-2]) + 1
            values = block[int(host[-2])] if bool(bad[int(host[-2])]) else None
            detail = "" if values is None else " (" + ", ".join(
                f"{k} {v:.4g}" for k, v in zip(STATS[:LOSSES], values[:LOSSES].tolist())) + ")"
            raise TrainingDiverged(f"non-finite loss at epoch {self.epoch}, step {step}{detail}")
        self.sums += host[:len(STATS)]
        self.count += len(block) * ranks
        self.latest = {k: float(v) for k, v in zip(STATS, host[:len(STATS)] / (len(block) * ranks))}
        self.pending.clear()

    def means(self) -> dict[str, float]:
        return {k: float(v) for k, v in zip(STATS, self.sums / max(self.count, 1))}


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


FRAMES = "samples"  # DVCLive image folder of the fixed-caption grids: samples/<epoch>.png


def build_training(mcfg, tcfg, device: torch.device, graphed: bool):
    """G and D on ``device`` in the configured memory layout, with their Adam optimisers; the CUDA
    backend switches set.  ``graphed``: optimisers that a CUDA graph can record (``capturable``, lr a
    device tensor so the scheduler still works)."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tcfg.tf32
    g, d = build_models(mcfg)
    fmt = torch.channels_last if tcfg.channels_last else torch.contiguous_format
    g.to(device, memory_format=fmt), d.to(device, memory_format=fmt)
    opts = [torch.optim.Adam(m.parameters(), betas=(tcfg.beta1, tcfg.beta2), capturable=graphed,
                             lr=torch.tensor(tcfg.lr, device=device) if graphed else tcfg.lr) for m in (g, d)]
    return g, d, *opts


def train(prepared: str | Path, params: Params) -> dict:
    """Train GAN-CLS on the prepared file's train split; every output path comes from ``params.train``.

    Resumes from the newest checkpoint in ``train.checkpoint_dir`` unless ``train.resume`` is false;
    returns the summary that DVCLive writes to ``<train.live_dir>/metrics.json``.
    """
    dist = Dist.setup(params.train.device)
    try:
        return _train(prepared, params, dist)
    finally:
        dist.close()


def _train(prepared: str | Path, params: Params, dist: Dist) -> dict:
    tcfg, mcfg = params.train, params.model
    device = dist.device
    seed = int(params.seed)
    if tcfg.batch_size % dist.world:
        raise ConfigError(f"train.batch_size {tcfg.batch_size} is not divisible by the {dist.world} processes")
    seed_everything(seed + dist.rank)
    gen = torch.Generator(device=device).manual_seed(seed + 1000 * dist.rank)  # this rank's draws
    order_gen = torch.Generator(device=device).manual_seed(seed + 1)  # the same on every rank
    split = read_split(prepared, "train")
    try:
        data = Batches(split, mcfg.image_size, tcfg.captions_per_sample, tcfg.flip, device,
                       tcfg.channels_last, dist.rank, dist.world)
    except ValueError as exc:
        raise ConfigError(f"{prepared}: {exc}") from None
    if dist.active and data.n < tcfg.batch_size:
        raise ConfigError(f"{prepared}: {data.n} training images, fewer than one batch of {tcfg.batch_size} "
                          f"(train.batch_size) over {dist.world} processes")
    graphed = tcfg.cuda_graph and device.type == "cuda" and not dist.active
    if tcfg.cuda_graph and not graphed and dist.main:
        print("train.cuda_graph needs one process on a CUDA device: running the steps eagerly", flush=True)
    if graphed and tcfg.compile:
        raise ConfigError("train.compile and train.cuda_graph: choose one")
    g, d, opt_g, opt_d = build_training(mcfg, tcfg, device, graphed)
    sched = [torch.optim.lr_scheduler.StepLR(o, tcfg.lr_decay_every, tcfg.lr_decay_factor)
             for o in (opt_g, opt_d)]
    ema = EMA(g, tcfg.ema_decay)
    # Fixed noise and fixed captions (first captions of images spread over the training split).
    fixed_z = torch.randn(tcfg.grid_size, mcfg.z_dim, generator=gen, device=device)
    grid_idx = np.linspace(0, data.n - 1, min(tcfg.grid_size, data.n)).astype(int)
    fixed_text = data.embeddings[torch.from_numpy(grid_idx).to(device), 0]
    fixed_captions = [str(split["captions"][i, 0]) for i in grid_idx]

    # Resume from the newest checkpoint of the same configuration.
    ckpt_dir = Path(tcfg.checkpoint_dir)
    data_sha1 = file_digest(prepared)
    generators = {"gen": gen, "order_gen": order_gen}
    start, step, history, resumed_from = 0, 0, [], None
    latest = latest_checkpoint(ckpt_dir) if tcfg.resume else None
    if latest is not None:
        state = load_checkpoint(latest)
        check_resumable(latest, state, params, data_sha1, dist.world)
        g.load_state_dict(state["generator"]), d.load_state_dict(state["discriminator"])
        opt_g.load_state_dict(state["opt_g"]), opt_d.load_state_dict(state["opt_d"])
        for s_, st in zip(sched, state["schedulers"]):
            s_.load_state_dict(st)
        if ema.avg is not None:
            ema.avg.load_state_dict(state["ema_generator"])
        fixed_z = state["fixed_z"].to(device)
        set_rng_state(state["rng"][dist.rank], generators)
        start, step, history, resumed_from = state["epoch"], state["step"], state["history"], latest
        if dist.main:
            print(f"resuming from {latest}: epoch {start} of {tcfg.epochs} done ({step} steps)", flush=True)
    elif dist.main:
        clear_checkpoints(ckpt_dir)

    g_run, d_run = dist.wrap(g), dist.wrap(d)
    if tcfg.compile:
        g_run, d_run = torch.compile(g_run), torch.compile(d_run)

    def shipped():
        return ema.shipped(g, data, mcfg.z_dim, tcfg.bn_stat_batches, max(tcfg.batch_size // dist.world, 2),
                           seed + 7)

    live = frames = None
    if dist.main:
        from dvclive import Live

        live_dir = Path(tcfg.live_dir)
        frames = [Image.open(p).copy() for p in _trim_live(live_dir, start)] if resumed_from else []
        live = Live(str(live_dir), resume=resumed_from is not None, save_dvc_exp=False, dvcyaml=False)

    def one_step(real, text, wrong):
        return train_step(g_run, d_run, opt_g, opt_d, real, text, wrong, mcfg.z_dim, tcfg.int_weight,
                          tcfg.int_beta, tcfg.precision, cast_cache=not graphed)

    run_step = GraphedStep(one_step) if graphed else one_step
    per_epoch = data.steps_per_epoch(tcfg.batch_size)
    for epoch in range(start + 1, tcfg.epochs + 1):
        t0 = time.perf_counter()
        stats = EpochStats(dist, epoch, step)
        bar = tqdm(total=per_epoch, desc=f"epoch {epoch}/{tcfg.epochs}", leave=False, mininterval=2,
                   disable=None if dist.main else True)
        for i, (real, text, wrong) in enumerate(data.epoch(tcfg.batch_size, gen, order_gen), 1):
            stats.add(run_step(real, text, wrong))
            ema.update(g)
            bar.update(1)
            if i % tcfg.log_every == 0 or i == per_epoch:
                stats.read()
                bar.set_postfix({"d_loss": f"{stats.latest['d_loss']:.3f}",
                                 "g_loss": f"{stats.latest['g_loss']:.3f}",
                                 "D(x)": f"{stats.latest['d_real']:.2f}", "D(G(z))": f"{stats.latest['d_fake']:.2f}",
                                 "img/s": f"{i * tcfg.batch_size / (time.perf_counter() - t0):.0f}"},
                                refresh=False)
        bar.close()
        step += per_epoch
        lr = float(opt_g.param_groups[0]["lr"])
        for s_ in sched:
            s_.step()
        secs = time.perf_counter() - t0
        row = {"epoch": epoch, "steps": per_epoch, **stats.means(), "lr": lr, "seconds": secs,
               "images_per_s": per_epoch * tcfg.batch_size / secs}
        history.append(row)
        frame = None
        if dist.main:
            print(f"epoch {epoch}/{tcfg.epochs}: d_loss {row['d_loss']:.3f} g_loss {row['g_loss']:.3f} "
                  f"D(x) {row['d_real']:.2f} D(G(z)) {row['d_fake']:.2f} ({row['images_per_s']:.1f} img/s)",
                  flush=True)
            if epoch % tcfg.sample_every == 0 or epoch == tcfg.epochs:
                frame = sample_frame(shipped(), fixed_z, fixed_text, fixed_captions,
                                     f"epoch {epoch}/{tcfg.epochs}: training captions x fixed noise")
                frames.append(frame)
                save_png(frame, tcfg.grid)
            live.step = epoch
            for k in (*STATS, "lr", "images_per_s"):
                live.log_metric(k, row[k])
            live.log_metric("steps", step)
            if frame is not None:
                live.log_image(f"{FRAMES}/{epoch:05d}.png", frame)
        if epoch % tcfg.checkpoint_every == 0 or epoch == tcfg.epochs:
            rngs = dist.gather(rng_state(generators))
            if dist.main:
                save_checkpoint(ckpt_dir, epoch, {
                    "epoch": epoch, "step": step, "generator": g.state_dict(), "discriminator": d.state_dict(),
                    "opt_g": opt_g.state_dict(), "opt_d": opt_d.state_dict(),
                    "schedulers": [s_.state_dict() for s_ in sched],
                    "ema_generator": None if ema.avg is None else ema.avg.state_dict(),
                    "fixed_z": fixed_z.cpu(), "rng": rngs, "history": history,
                    "trained_with": trained_with(params, data_sha1)})
        if dist.main:
            live.next_step()  # writes the summary: `dvc exp show` sees the epoch

    if not dist.main:
        dist.barrier()
        return {}
    final = shipped()
    with atomic_path(tcfg.out_dir) as tmp:
        tmp.mkdir()
        state = {"generator": g.state_dict(), "discriminator": d.state_dict(),
                 "opt_g": opt_g.state_dict(), "opt_d": opt_d.state_dict(), "epoch": tcfg.epochs,
                 "model": mcfg.model_dump(), "ema_generator": None if ema.avg is None else ema.avg.state_dict()}
        save_torch(state, tmp / "checkpoint.pt")
        save_torch({"generator": final.state_dict(), "model": mcfg.model_dump()}, tmp / "generator.pt")
    last = history[-1]
    summary = {
        "epochs": tcfg.epochs, "device": str(device), "processes": dist.world, "precision": tcfg.precision,
        "train_images": data.n, "steps": step,
        "seconds": round(sum(r["seconds"] for r in history), 2),
        "images_per_s": round(float(np.mean([r["images_per_s"] for r in history])), 2),
        "resumed_from_epoch": start,
        "shipped": SHIPPED_EMA.format(decay=tcfg.ema_decay) if ema.avg is not None else SHIPPED_LAST,
        **{k: round(float(last[k]), 4) for k in STATS},
    }
    if frames:
        save_gif(frames, tcfg.progress_gif)
    live.summary.update(summary)
    live.end()
    clear_checkpoints(ckpt_dir)  # the run is complete: its whole state is in out_dir/checkpoint.pt
    dist.barrier()
    return summary
