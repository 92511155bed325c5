"""train stage: GAN-CLS with the matching-aware discriminator and the GAN-INT generator term.

Per step (Reed et al. 2016, Algorithm 1, plus GAN-INT):
    t       = mean of ``captions_per_sample`` of the image's 10 caption embeddings (right text)
    t_wrong = the text of an image of a different class
    t_int   = beta * t + (1 - beta) * t of another image in the batch
    D loss  = BCE(D(x, t), 1) + 1/2 [BCE(D(x, t_wrong), 0) + BCE(D(G(z, t), t), 0)]
    G loss  = BCE(D(G(z, t), t), 1) + int_weight * BCE(D(G(z', t_int), t_int), 1)
One D step then one G step; Adam, lr halved every ``lr_decay_every`` epochs.
"""
from __future__ import annotations

import copy
import csv
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from .config import Params, atomic_path, resolve_device, seed_everything, write_json
from .grids import captioned_image, save_gif, save_png
from .model import build_models
from .prepared import read_split

SHIPPED_LAST = "last epoch: G's weights after the final step"
SHIPPED_EMA = ("last epoch: exponential moving average of G's weights (decay {decay}) with re-estimated "
               "BatchNorm statistics")
LOSS_FIELDS = ["epoch", "steps", "d_loss", "g_loss", "g_int_loss", "d_real", "d_wrong", "d_fake", "lr",
               "seconds", "images_per_s"]


class Batches:
    """The prepared split on the training device, with Reed's augmentation and text sampling."""

    def __init__(self, data: dict, image_size: int, captions_per_sample: int, flip: bool, device,
                 channels_last: bool = False):
        self.images = torch.from_numpy(data["images"]).to(device)  # N, S, S, 3 uint8
        self.embeddings = torch.from_numpy(data["embeddings"]).to(device)  # N, 10, 1024
        self.class_ids = torch.from_numpy(data["class_ids"].astype(np.int64)).to(device)
        self.n = self.images.shape[0]
        self.image_size = image_size
        self.k = captions_per_sample
        self.flip = flip
        self.device = device
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        if len(torch.unique(self.class_ids)) < 2:
            raise ValueError("training needs images of at least two classes (wrong-text pairs)")

    def text(self, idx: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Mean of k distinct random caption embeddings of each image."""
        ncap = self.embeddings.shape[1]
        k = min(self.k, ncap)
        pick = torch.rand(len(idx), ncap, generator=gen, device=self.device).argsort(dim=1)[:, :k]
        return self.embeddings[idx[:, None], pick].mean(dim=1)

    def wrong(self, idx: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Indices of images of a different class than each of ``idx``."""
        other = torch.randint(0, self.n, (len(idx),), generator=gen, device=self.device)
        for _ in range(100):
            same = self.class_ids[other] == self.class_ids[idx]
            if not same.any():
                break
            other[same] = torch.randint(0, self.n, (int(same.sum()),), generator=gen, device=self.device)
        return other

    def augment(self, idx: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Random image_size crop of the stored load_size image, random flip, to [-1, 1], NCHW."""
        imgs = self.images[idx]
        s = imgs.shape[1]
        top, left = (torch.randint(0, s - self.image_size + 1, (2,), generator=gen, device=self.device)
                     .tolist())
        imgs = imgs[:, top:top + self.image_size, left:left + self.image_size]
        imgs = imgs.permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)
        if self.flip:
            flip = torch.rand(len(idx), generator=gen, device=self.device) < 0.5
            imgs = torch.where(flip[:, None, None, None], imgs.flip(3), imgs)
        return imgs.contiguous(memory_format=self.memory_format)

    def epoch(self, batch_size: int, gen: torch.Generator):
        order = torch.randperm(self.n, generator=gen, device=self.device)
        # Full batches only (BatchNorm); a split smaller than a batch gives one batch.
        nb = max(self.n // batch_size, 1)
        for b in range(nb):
            idx = order[b * batch_size:(b + 1) * batch_size]
            yield (self.augment(idx, gen), self.text(idx, gen), self.text(self.wrong(idx, gen), gen))


def _bce(logits: torch.Tensor, target: float) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


def train_step(g, d, opt_g, opt_d, real, text, wrong_text, z_dim: int, int_weight: float,
               int_beta: float) -> dict:
    """One D step then one G step.

    D sees real/right, real/wrong and fake/right as three separate batches (as in Reed's code):
    BatchNorm over a mixed batch would let D tell fakes by batch statistics that a batch of only
    fakes in the G step does not have, and G would get no gradient.
    """
    b = real.shape[0]
    dev = real.device
    fake = g(torch.randn(b, z_dim, device=dev), text)

    # Discriminator: real/right -> 1, real/wrong -> 0, fake/right -> 0.  The real images go through
    # D's image tower once (features of the same batch; BatchNorm sees the same statistics either way).
    opt_d.zero_grad(set_to_none=True)
    if hasattr(d, "judge"):
        h_real = d.image(real)
        s_real, s_wrong = d.judge(h_real, text), d.judge(h_real, wrong_text)
    else:
        s_real, s_wrong = d(real, text), d(real, wrong_text)
    s_fake = d(fake.detach(), text)
    d_loss = _bce(s_real, 1.0) + 0.5 * (_bce(s_wrong, 0.0) + _bce(s_fake, 0.0))
    d_loss.backward()
    opt_d.step()

    # Generator: fool D with right text, and with interpolated text (GAN-INT; D never trains on it).
    opt_g.zero_grad(set_to_none=True)
    g_loss = _bce(d(fake, text), 1.0)
    if int_weight > 0:
        text_int = int_beta * text + (1 - int_beta) * text.roll(1, dims=0)
        g_int = _bce(d(g(torch.randn(b, z_dim, device=dev), text_int), text_int), 1.0)
    else:
        g_int = torch.zeros((), device=dev)
    (g_loss + int_weight * g_int).backward()
    opt_g.step()
    return {
        "d_loss": d_loss.item(), "g_loss": g_loss.item(), "g_int_loss": g_int.item(),
        "d_real": torch.sigmoid(s_real).mean().item(), "d_wrong": torch.sigmoid(s_wrong).mean().item(),
        "d_fake": torch.sigmoid(s_fake).mean().item(),
    }


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
            for a, p in zip(self.avg.parameters(), g.parameters()):
                a.lerp_(p, 1.0 - self.decay)

    @torch.no_grad()
    def shipped(self, g: nn.Module, data: "Batches", z_dim: int, bn_batches: int, batch_size: int,
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


def train(prepared: str | Path, params: Params, loss_csv: str | Path, grid_png: str | Path,
          metrics_json: str | Path, progress_gif: str | Path | None = None) -> dict:
    tcfg, mcfg = params.train, params.model
    seed_everything(int(params.seed))
    device = resolve_device(tcfg.device)
    gen = torch.Generator(device=device).manual_seed(int(params.seed))
    split = read_split(prepared, "train")
    data = Batches(split, mcfg.image_size, tcfg.captions_per_sample, tcfg.flip, device,
                   tcfg.channels_last)
    g, d = build_models(mcfg)
    fmt = torch.channels_last if tcfg.channels_last else torch.contiguous_format
    g.to(device, memory_format=fmt), d.to(device, memory_format=fmt)
    betas = (tcfg.beta1, tcfg.beta2)
    opt_g = torch.optim.Adam(g.parameters(), lr=tcfg.lr, betas=betas)
    opt_d = torch.optim.Adam(d.parameters(), lr=tcfg.lr, betas=betas)
    sched = [torch.optim.lr_scheduler.StepLR(o, tcfg.lr_decay_every, tcfg.lr_decay_factor)
             for o in (opt_g, opt_d)]
    ema = EMA(g, tcfg.ema_decay)

    def shipped():
        return ema.shipped(g, data, mcfg.z_dim, tcfg.bn_stat_batches, tcfg.batch_size,
                           int(params.seed) + 7)

    # Fixed noise and fixed captions (first captions of images spread over the training split).
    fixed_z = torch.randn(tcfg.grid_size, mcfg.z_dim, generator=gen, device=device)
    grid_idx = np.linspace(0, data.n - 1, min(tcfg.grid_size, data.n)).astype(int)
    fixed_text = data.embeddings[torch.from_numpy(grid_idx).to(device), 0]
    fixed_captions = [str(split["captions"][i, 0]) for i in grid_idx]
    frames = []

    out_dir = Path(tcfg.out_dir)
    rows = []
    start = time.perf_counter()
    for epoch in range(1, tcfg.epochs + 1):
        t0 = time.perf_counter()
        sums: dict[str, float] = {}
        steps = images = 0
        for real, text, wrong in tqdm(data.epoch(tcfg.batch_size, gen), desc=f"epoch {epoch}",
                                      total=max(data.n // tcfg.batch_size, 1), leave=False,
                                      disable=None,
                                      mininterval=2):
            stats = train_step(g, d, opt_g, opt_d, real, text, wrong, mcfg.z_dim,
                               tcfg.int_weight, tcfg.int_beta)
            ema.update(g)
            for k, v in stats.items():
                sums[k] = sums.get(k, 0.0) + v
            steps += 1
            images += real.shape[0]
        lr = opt_g.param_groups[0]["lr"]
        for s in sched:
            s.step()
        secs = time.perf_counter() - t0
        row = {"epoch": epoch, "steps": steps, **{k: v / steps for k, v in sums.items()}, "lr": lr,
               "seconds": secs, "images_per_s": images / secs}
        rows.append(row)
        print(f"epoch {epoch}/{tcfg.epochs}: d_loss {row['d_loss']:.3f} g_loss {row['g_loss']:.3f}"
              f" ({row['images_per_s']:.1f} img/s)", flush=True)
        if epoch % tcfg.sample_every == 0 or epoch == tcfg.epochs:
            frames.append(sample_frame(shipped(), fixed_z, fixed_text, fixed_captions,
                                       f"epoch {epoch}/{tcfg.epochs}: training captions x fixed noise"))
            save_png(frames[-1], grid_png)

    with atomic_path(loss_csv) as tmp, tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=LOSS_FIELDS)
        writer.writeheader()
        writer.writerows({k: (round(v, 6) if isinstance(v, float) else v) for k, v in r.items()}
                         for r in rows)
    final = shipped()
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        state = {"generator": g.state_dict(), "discriminator": d.state_dict(),
                 "opt_g": opt_g.state_dict(), "opt_d": opt_d.state_dict(), "epoch": tcfg.epochs,
                 "model": mcfg.model_dump(), "ema_generator": None if ema.avg is None else ema.avg.state_dict()}
        torch.save(state, tmp / "checkpoint.pt")
        torch.save({"generator": final.state_dict(), "model": mcfg.model_dump()}, tmp / "generator.pt")
    last = rows[-1]
    summary = {
        "epochs": tcfg.epochs, "device": str(device), "train_images": data.n,
        "seconds": round(time.perf_counter() - start, 2), "shipped": SHIPPED_EMA.format(decay=tcfg.ema_decay) if ema.avg is not None else SHIPPED_LAST,
        "steps": sum(r["steps"] for r in rows),
        "images_per_s": round(float(np.mean([r["images_per_s"] for r in rows])), 2),
        **{k: round(last[k], 4) for k in ("d_loss", "g_loss", "g_int_loss", "d_real", "d_wrong", "d_fake")},
    }
    if progress_gif is not None:
        save_gif(frames, progress_gif)
    write_json(metrics_json, summary)
    return summary

