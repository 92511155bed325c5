"""Training checkpoints that resume a run (the shipped ``generator.pt`` is ``gancls.models.generator_file``).

Files are read with ``torch.load(..., weights_only=True)``: tensors and plain containers only, so
loading a checkpoint file never runs code from it.

Training checkpoints (``train.checkpoint_dir``, outside the train stage's DVC outputs so that a
re-run stage finds them) hold everything a run needs to continue bit for bit: G, D, both optimisers
and schedulers, the averaged G, the epoch and step, every random-number state of every process, the
per-epoch history, and the params and prepared data they were trained with.  A run resumes only
from a checkpoint of the same configuration; anything else is refused with a message naming the file.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from ..config import Params, TrainParams
from ..files import atomic_path, save_torch
from ..models.generator_file import CheckpointError, first_line

FORMAT = 1
# train: keys that may differ between a checkpoint and the run that resumes it: how a run is watched
# and placed (TrainParams.RUN_KEYS) but for the number of processes (one RNG state each), CUDA graphs
# and the grid's size (the fixed grid noise is part of the state); and how long it goes, and the
# BatchNorm re-estimation done after the last epoch.
RESUMABLE = (TrainParams.RUN_KEYS - {"processes", "cuda_graph", "grid_size"}) | {"epochs", "bn_stat_batches"}


# --- training checkpoints ------------------------------------------------------------------------


def rng_state(generators: dict[str, torch.Generator]) -> dict:
    """Every random-number state of this process (as tensors and plain values)."""
    npst = np.random.get_state(legacy=False)
    return {
        "python": random.getstate(),
        "numpy": {
            "bit_generator": npst["bit_generator"],
            "pos": int(npst["state"]["pos"]),
            "key": torch.from_numpy(npst["state"]["key"].astype(np.int64)),
            "has_gauss": int(npst["has_gauss"]),
            "gauss": float(npst["gauss"]),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "generators": {k: g.get_state() for k, g in generators.items()},
    }


def set_rng_state(state: dict, generators: dict[str, torch.Generator]) -> None:
    random.setstate(_as_tuple(state["python"]))
    n = state["numpy"]
    np.random.set_state(
        {
            "bit_generator": n["bit_generator"],
            "has_gauss": n["has_gauss"],
            "gauss": n["gauss"],
            "state": {"key": n["key"].numpy().astype(np.uint32), "pos": n["pos"]},
        }
    )
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    for k, g in generators.items():
        g.set_state(state["generators"][k])


def _as_tuple(x):
    return tuple(_as_tuple(v) for v in x) if isinstance(x, (list, tuple)) else x


def trained_with(params: Params, data_sha1: str) -> dict:
    """What a checkpoint records of its configuration (compared by ``check_resumable``)."""
    return {
        "seed": params.seed,
        "model": params.model.model_dump(mode="json"),
        "train": params.train.model_dump(mode="json"),
        "data_sha1": data_sha1,
    }


def checkpoint_path(directory: str | Path, epoch: int) -> Path:
    return Path(directory) / f"epoch_{epoch:05d}.pt"


def latest_checkpoint(directory: str | Path) -> Path | None:
    found = sorted(Path(directory).glob("epoch_*.pt"))
    return found[-1] if found else None


def save_checkpoint(directory: str | Path, epoch: int, state: dict) -> Path:
    """Write ``epoch_NNNNN.pt`` atomically, then remove the older ones."""
    path = checkpoint_path(directory, epoch)
    with atomic_path(path) as tmp:
        save_torch({"format": FORMAT, **state}, tmp)
    for old in Path(directory).glob("epoch_*.pt"):
        if old != path:
            old.unlink(missing_ok=True)
    return path


def clear_checkpoints(directory: str | Path) -> None:
    for old in Path(directory).glob("epoch_*.pt"):
        old.unlink(missing_ok=True)


def load_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(state, dict) or state.get("format") != FORMAT:
            raise ValueError(f"format {state.get('format') if isinstance(state, dict) else '?'}, expected {FORMAT}")
    except Exception as exc:  # noqa: BLE001 - any failure means a bad file
        raise CheckpointError(
            f"{path}: not a loadable gancls training checkpoint ({first_line(exc)}); "
            "delete it or set train.resume: false"
        ) from exc
    return state


def check_resumable(path: str | Path, state: dict, params: Params, data_sha1: str, world_size: int) -> None:
    """Refuse, naming the file and the keys, to resume a checkpoint of another configuration."""
    had, now = state["trained_with"], trained_with(params, data_sha1)
    fix = "; set train.resume: false to start afresh (or delete the file)"
    arch = [f"model.{k} {had['model'].get(k)!r} -> {v!r}" for k, v in now["model"].items() if had["model"].get(k) != v]
    if arch:
        raise CheckpointError(f"{path}: checkpoint of another architecture ({', '.join(arch)}){fix}")
    other = [
        f"train.{k} {had['train'].get(k)!r} -> {v!r}"
        for k, v in now["train"].items()
        if k not in RESUMABLE and had["train"].get(k) != v
    ]
    if had["seed"] != now["seed"]:
        other.append(f"seed {had['seed']} -> {now['seed']}")
    if had["data_sha1"] != data_sha1:
        other.append("the prepared data changed")
    if other:
        raise CheckpointError(f"{path}: checkpoint trained with other settings ({', '.join(other)}){fix}")
    if len(state["rng"]) != world_size:
        raise CheckpointError(
            f"{path}: written by {len(state['rng'])} training processes, this run has {world_size}{fix}"
        )
    if state["epoch"] > params.train.epochs:
        raise CheckpointError(
            f"{path}: checkpoint is at epoch {state['epoch']}, beyond train.epochs {params.train.epochs}{fix}"
        )
