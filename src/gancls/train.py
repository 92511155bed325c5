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

import csv
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.utils import save_image
from tqdm import tqdm

from .config import atomic_path, resolve_device, seed_everything, write_json
from .model import build_generator, build_models
from .prepare import read_split

LOSS_FIELDS = ["epoch", "d_loss", "g_loss", "g_int_loss", "d_real", "d_wrong", "d_fake", "lr",
               "seconds", "images_per_s"]


class Batches:
    """The prepared split on the training device, with Reed's augmentation and text sampling."""

    def __init__(self, data: dict, image_size: int, captions_per_sample: int, flip: bool, device):
        self.images = torch.from_numpy(data["images"]).to(device)  # N, S, S, 3 uint8
        self.embeddings = torch.from_numpy(data["embeddings"]).to(device)  # N, 10, 1024
        self.class_ids = torch.from_numpy(data["class_ids"].astype(np.int64)).to(device)
        self.n = self.images.shape[0]
        self.image_size = image_size
        self.k = captions_per_sample
        self.flip = flip
        self.device = device
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
        return imgs

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

    # Discriminator: real/right -> 1, real/wrong -> 0, fake/right -> 0.
    opt_d.zero_grad(set_to_none=True)
    s_real, s_wrong, s_fake = d(real, text), d(real, wrong_text), d(fake.detach(), text)
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


@torch.no_grad()
def sample_grid(g, z: torch.Tensor, texts: torch.Tensor, path: Path) -> None:
    """Rows: captions, columns: noise vectors (the same z in every row)."""
    was_training = g.training
    g.eval()
    n_text, n_z = texts.shape[0], z.shape[0]
    imgs = g(z.repeat(n_text, 1), texts.repeat_interleave(n_z, dim=0))
    g.train(was_training)
    with atomic_path(path) as tmp:
        save_image(imgs.float().cpu(), tmp, nrow=n_z, normalize=True, value_range=(-1, 1), format="png")


def train(prepared: str | Path, params: dict, loss_csv: str | Path, grid_png: str | Path,
          metrics_json: str | Path) -> dict:
    tcfg, mcfg = params["train"], params["model"]
    seed_everything(int(params["seed"]))
    device = resolve_device(tcfg["device"])
    gen = torch.Generator(device=device).manual_seed(int(params["seed"]))
    data = Batches(read_split(prepared, "train"), mcfg["image_size"], tcfg["captions_per_sample"],
                   tcfg["flip"], device)
    g, d = build_models(mcfg)
    g.to(device), d.to(device)
    betas = (tcfg["beta1"], tcfg["beta2"])
    opt_g = torch.optim.Adam(g.parameters(), lr=tcfg["lr"], betas=betas)
    opt_d = torch.optim.Adam(d.parameters(), lr=tcfg["lr"], betas=betas)
    sched = [torch.optim.lr_scheduler.StepLR(o, tcfg["lr_decay_every"], tcfg["lr_decay_factor"])
             for o in (opt_g, opt_d)]

    # Fixed noise and fixed captions (the first images of the training split) for the sample grid.
    fixed_z = torch.randn(tcfg["grid_size"], mcfg["z_dim"], generator=gen, device=device)
    grid_idx = torch.arange(min(tcfg["grid_size"], data.n), device=device)
    fixed_text = data.embeddings[grid_idx].mean(dim=1)

    out_dir = Path(tcfg["out_dir"])
    rows = []
    start = time.perf_counter()
    for epoch in range(1, tcfg["epochs"] + 1):
        t0 = time.perf_counter()
        sums: dict[str, float] = {}
        steps = images = 0
        for real, text, wrong in tqdm(data.epoch(tcfg["batch_size"], gen), desc=f"epoch {epoch}",
                                      total=max(data.n // tcfg["batch_size"], 1), leave=False,
                                      disable=None,
                                      mininterval=2):
            stats = train_step(g, d, opt_g, opt_d, real, text, wrong, mcfg["z_dim"],
                               tcfg["int_weight"], tcfg["int_beta"])
            for k, v in stats.items():
                sums[k] = sums.get(k, 0.0) + v
            steps += 1
            images += real.shape[0]
        lr = opt_g.param_groups[0]["lr"]
        for s in sched:
            s.step()
        secs = time.perf_counter() - t0
        row = {"epoch": epoch, **{k: v / steps for k, v in sums.items()}, "lr": lr,
               "seconds": secs, "images_per_s": images / secs}
        rows.append(row)
        print(f"epoch {epoch}/{tcfg['epochs']}: d_loss {row['d_loss']:.3f} g_loss {row['g_loss']:.3f}"
              f" ({row['images_per_s']:.1f} img/s)", flush=True)
        if epoch % tcfg["sample_every"] == 0 or epoch == tcfg["epochs"]:
            sample_grid(g, fixed_z, fixed_text, Path(grid_png))

    with atomic_path(loss_csv) as tmp, tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=LOSS_FIELDS)
        writer.writeheader()
        writer.writerows({k: (round(v, 6) if isinstance(v, float) else v) for k, v in r.items()}
                         for r in rows)
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        state = {"generator": g.state_dict(), "discriminator": d.state_dict(),
                 "opt_g": opt_g.state_dict(), "opt_d": opt_d.state_dict(), "epoch": tcfg["epochs"],
                 "model": mcfg}
        torch.save(state, tmp / "checkpoint.pt")
        torch.save({"generator": g.state_dict(), "model": mcfg}, tmp / "generator.pt")
    last = rows[-1]
    summary = {
        "epochs": tcfg["epochs"], "device": str(device), "train_images": data.n,
        "seconds": round(time.perf_counter() - start, 2),
        "images_per_s": round(float(np.mean([r["images_per_s"] for r in rows])), 2),
        **{k: round(last[k], 4) for k in ("d_loss", "g_loss", "g_int_loss", "d_real", "d_wrong", "d_fake")},
    }
    write_json(metrics_json, summary)
    return summary


def load_generator(path: str | Path, device="cpu"):
    state = torch.load(path, map_location=device, weights_only=True)
    g = build_generator(state["model"])
    g.load_state_dict(state["generator"])
    return g.to(device).eval(), state["model"]
