"""The exponential moving average of G's weights that a run ships (``train.ema_decay``)."""

from __future__ import annotations

import copy

import torch
from torch import nn

from .batches import Batches


class EMA:
    """Exponential moving average of G's weights (``train.ema_decay``; 0 turns it off).

    GAN iterates oscillate; their running average draws steadier images (as in ProGAN/StyleGAN).
    ``shipped()`` is the averaged G with BatchNorm statistics re-estimated for the averaged weights
    ("standing statistics"): ``bn_batches`` forward passes in training mode over training texts.
    Until step ``start`` (``train.ema_start``) the average is a copy of G: the first steps' weights,
    far from where training goes, do not linger in it.
    """

    def __init__(self, g: nn.Module, decay: float, start: int = 0):
        self.decay, self.start = float(decay), int(start)
        self.avg = copy.deepcopy(g).eval() if self.decay > 0 else None
        if self.avg is not None:
            self.avg.requires_grad_(False)

    @torch.no_grad()
    def update(self, g: nn.Module, step: int) -> None:
        """Average in G's weights after training step ``step`` (counted from 1)."""
        if self.avg is not None:
            weight = 1.0 if step <= self.start else 1.0 - self.decay
            torch._foreach_lerp_(list(self.avg.parameters()), list(g.parameters()), weight)

    @torch.no_grad()
    def shipped(
        self, g: nn.Module, data: Batches, z_dim: int, bn_batches: int, batch_size: int, seed: int
    ) -> nn.Module:
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
