"""The training statistics, kept on the device and read to the host once per ``train.log_every`` steps,
with the guard that stops a run at its first non-finite loss."""

from __future__ import annotations

import numpy as np
import torch

from .distributed import Dist

# what train.train_step returns; the first LOSSES are losses, which the non-finite guard watches
STATS = ("d_loss", "g_loss", "g_int_loss", "g_ms_loss", "kl_loss", "d_real", "d_wrong", "d_fake")
LOSSES = 5


class TrainingDiverged(RuntimeError):
    """A loss became NaN or infinite; the message names the epoch and step."""


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
            losses = [] if values is None else list(zip(STATS[:LOSSES], values[:LOSSES].tolist()))
            # the GAN-CLS losses, and a departure's term only when it is on (not exactly 0)
            shown = [f"{k} {v:.4g}" for i, (k, v) in enumerate(losses) if i < 3 or v != 0]
            detail = f" ({', '.join(shown)})" if shown else ""
            raise TrainingDiverged(f"non-finite loss at epoch {self.epoch}, step {step}{detail}")
        self.sums += host[: len(STATS)]
        self.count += len(block) * ranks
        self.latest = {k: float(v) for k, v in zip(STATS, host[: len(STATS)] / (len(block) * ranks))}
        self.pending.clear()

    def means(self) -> dict[str, float]:
        return {k: float(v) for k, v in zip(STATS, self.sums / max(self.count, 1))}
