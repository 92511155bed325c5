"""DiffAugment (Zhao et al. 2020): the same random, differentiable augmentation of every image D
sees, real and fake, in D's step and G's (``train.augment``).  With 1,500 training images D
memorises the real ones; augmented, it cannot, and G's gradient stays informative.

Policies (comma-separated): ``translation`` shifts the image by up to 1/8 of its side in each
direction, filling with zeros; ``cutout`` zeroes a random square of half the side.  Not colour: the
captions name colours, and D must judge them.
"""

from __future__ import annotations

import torch

POLICIES = ("translation", "cutout")


def translation(x: torch.Tensor, ratio: float = 0.125) -> torch.Tensor:
    b, _, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dy = torch.randint(-sh, sh + 1, (b, 1, 1), device=x.device)
    dx = torch.randint(-sw, sw + 1, (b, 1, 1), device=x.device)
    ys = torch.arange(h, device=x.device)[None, :, None] + dy  # (b, h, 1): source row of each output row
    xs = torch.arange(w, device=x.device)[None, None, :] + dx  # (b, 1, w)
    inside = ((ys >= 0) & (ys < h) & (xs >= 0) & (xs < w)).unsqueeze(1)
    ys, xs = ys.clamp(0, h - 1).expand(b, h, w), xs.clamp(0, w - 1).expand(b, h, w)
    flat = (ys * w + xs).reshape(b, 1, h * w).expand(-1, x.shape[1], -1)
    moved = x.reshape(b, x.shape[1], h * w).gather(2, flat).reshape_as(x)
    return moved * inside.to(x.dtype)


def cutout(x: torch.Tensor, ratio: float = 0.5) -> torch.Tensor:
    b, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    top = torch.randint(0, h, (b, 1, 1), device=x.device) - ch // 2  # the square may leave the image
    left = torch.randint(0, w, (b, 1, 1), device=x.device) - cw // 2
    ys = torch.arange(h, device=x.device)[None, :, None]
    xs = torch.arange(w, device=x.device)[None, None, :]
    hole = (ys >= top) & (ys < top + ch) & (xs >= left) & (xs < left + cw)
    return x * (~hole).unsqueeze(1).to(x.dtype)


def diff_augment(x: torch.Tensor, policy: list[str]) -> torch.Tensor:
    """``x`` through each augmentation of ``policy`` in turn (an empty policy returns ``x``)."""
    if not policy:
        return x
    fmt = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
    for name in policy:
        x = {"translation": translation, "cutout": cutout}[name](x)
    return x.contiguous(memory_format=fmt)
