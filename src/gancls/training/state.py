"""What a training run has learnt so far, as one object with one ``state_dict``: G, D, their Adam
optimisers and lr schedules, the averaged G, the fixed grid noise, the epoch, step and history."""

from __future__ import annotations

import time

import torch

from ..models.gan import build_models
from .ema import EMA


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
    opts = [
        torch.optim.Adam(
            m.parameters(),
            betas=(tcfg.beta1, tcfg.beta2),
            capturable=graphed,
            lr=torch.tensor(lr, device=device) if graphed else lr,
        )
        for m, lr in ((g, tcfg.lr), (d, tcfg.lr if tcfg.lr_d is None else tcfg.lr_d))  # lr_d: TTUR
    ]
    return g, d, *opts


class TrainingState:
    """What a run has learnt so far: G, D, their optimisers and lr schedules, the averaged G, the fixed
    grid noise, the epoch and step reached and the per-epoch history.  ``state_dict`` is what a resume
    checkpoint holds (with the random states) and what ``<train.out_dir>/checkpoint.pt`` keeps."""

    def __init__(self, mcfg, tcfg, device: torch.device, graphed: bool, gen: torch.Generator):
        self.g, self.d, self.opt_g, self.opt_d = build_training(mcfg, tcfg, device, graphed)
        self.scheds = [
            torch.optim.lr_scheduler.StepLR(o, tcfg.lr_decay_every, tcfg.lr_decay_factor)
            for o in (self.opt_g, self.opt_d)
        ]
        self.ema = EMA(self.g, tcfg.ema_decay, tcfg.ema_start)
        self.fixed_z = torch.randn(tcfg.grid_size, mcfg.z_dim, generator=gen, device=device)
        self.epoch, self.step, self.history = 0, 0, []

    def end_epoch(self, epoch: int, steps: int, stats: dict[str, float], t0: float, batch_size: int) -> dict:
        """Count the epoch, step the lr schedules, and add the epoch's row to the history."""
        self.epoch, self.step = epoch, self.step + steps
        lr = float(self.opt_g.param_groups[0]["lr"])
        for sched in self.scheds:
            sched.step()
        secs = time.perf_counter() - t0
        row = {
            "epoch": epoch,
            "steps": steps,
            **stats,
            "lr": lr,
            "seconds": secs,
            "images_per_s": steps * batch_size / secs,
        }
        self.history.append(row)
        return row

    def state_dict(self) -> dict:
        return {
            "epoch": self.epoch,
            "step": self.step,
            "history": self.history,
            "generator": self.g.state_dict(),
            "discriminator": self.d.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "schedulers": [s.state_dict() for s in self.scheds],
            "ema_generator": None if self.ema.avg is None else self.ema.avg.state_dict(),
            "fixed_z": self.fixed_z.cpu(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.g.load_state_dict(state["generator"]), self.d.load_state_dict(state["discriminator"])
        self.opt_g.load_state_dict(state["opt_g"]), self.opt_d.load_state_dict(state["opt_d"])
        for sched, saved in zip(self.scheds, state["schedulers"]):
            sched.load_state_dict(saved)
        if self.ema.avg is not None:
            self.ema.avg.load_state_dict(state["ema_generator"])
        self.fixed_z = state["fixed_z"].to(self.fixed_z.device)
        self.epoch, self.step, self.history = state["epoch"], state["step"], state["history"]
