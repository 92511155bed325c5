"""Several processes under ``torchrun``: PyTorch DDP, set up from the environment torchrun writes.

One process (no ``WORLD_SIZE`` above 1 in the environment) needs nothing of this: ``Dist.single``.
Under torchrun each rank trains on its own shard of every epoch; gradients are averaged by DDP;
rank 0 alone writes checkpoints, logs, grids and metrics.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..config import ConfigError, resolve_device


@dataclass(frozen=True)
class Dist:
    rank: int
    world: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    @classmethod
    def setup(cls, device_name: str) -> Dist:
        """Join the process group when started by torchrun; else a single process on ``device_name``."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        device = resolve_device(device_name)
        if world <= 1:
            return cls(0, 1, device)
        if device.type == "cuda":
            local = int(os.environ.get("LOCAL_RANK", "0"))
            if local >= torch.cuda.device_count():
                raise ConfigError(f"LOCAL_RANK {local} but only {torch.cuda.device_count()} CUDA devices")
            device = torch.device("cuda", local)
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        return cls(dist.get_rank(), dist.get_world_size(), device)

    def wrap(self, module: torch.nn.Module) -> torch.nn.Module:
        """DDP around ``module`` when several processes train; the module itself otherwise.

        BatchNorm buffers stay per rank (``broadcast_buffers=False``): D runs several forward passes
        per step, and a buffer broadcast between them would clash with autograd.
        """
        if not self.active:
            return module
        ids = [self.device.index] if self.device.type == "cuda" else None
        return torch.nn.parallel.DistributedDataParallel(module, device_ids=ids, broadcast_buffers=False)

    def sum_(self, t: torch.Tensor) -> torch.Tensor:
        if self.active:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t

    def gather(self, obj) -> list:
        """``obj`` of every rank, in rank order (a collective: every rank calls it)."""
        if not self.active:
            return [obj]
        out = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def close(self) -> None:
        if self.active and dist.is_initialized():
            dist.destroy_process_group()


def launch(processes: int, argv: list[str]) -> int:
    """``python -m gancls.cli <argv>`` as ``processes`` DDP processes on this machine (torchrun
    ``--standalone``); each gets its share of the CPU cores as threads.  Returns torchrun's exit code."""
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // processes)))
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={processes}",
        "-m",
        "gancls.cli",
        *argv,
    ]
    return subprocess.run(cmd, env=env).returncode


def no_sync(module: torch.nn.Module):
    """DDP's ``no_sync`` (no gradient all-reduce in this backward) or a no-op for a plain module."""
    return module.no_sync() if hasattr(module, "no_sync") else contextlib.nullcontext()
