"""The training split on the training device, drawn as (real images, right text, wrong text) batches."""

from __future__ import annotations

import numpy as np
import torch

WRONG_REDRAWS = 4  # wrong-text partners: redraws of same-class picks (fixed, so no host sync)


class Batches:
    """The prepared split on the training device, with Reed's augmentation and text sampling.

    Every random draw uses the generator passed in and has a size fixed by the batch, so a step
    never waits for the device and a run is reproducible from the generators' states.  Under DDP
    all ranks draw the same permutation of the split (``order_gen``) and each takes its own slice
    of every global batch.
    """

    def __init__(
        self,
        data: dict,
        image_size: int,
        captions_per_sample: int,
        flip: bool,
        device,
        channels_last: bool = False,
        rank: int = 0,
        world: int = 1,
        crop_jitter: int | None = None,
    ):
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
        # Crop offsets: anywhere (Reed's random crop) or within crop_jitter pixels of the centre crop.
        room = self.images.shape[1] - image_size
        centre = room // 2
        j = room if crop_jitter is None else crop_jitter
        self._offsets = (max(centre - j, 0), min(centre + j, room) + 1)

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
        """A random image_size crop of each stored load_size image (``crop_jitter``), random flip, to [-1, 1], NCHW."""
        b = len(idx)
        off = torch.randint(*self._offsets, (b, 2), generator=gen, device=self.device)
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
            idx = order[first : first + local]
            yield (self.augment(idx, gen), self.text(idx, gen), self.text(self.wrong(idx, gen), gen))
