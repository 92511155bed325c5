"""Saved models: the trained generator (``generator.pt``) that generate, evaluate and sample load.

Files are read with ``torch.load(..., weights_only=True)``: tensors and plain containers only, so
loading a model file never runs code from it.
"""
from __future__ import annotations

from pathlib import Path

import torch

from .config import ModelParams
from .model import build_generator


class CheckpointError(ValueError):
    """A model file is missing, unreadable or not what it should be; the message names it."""


def load_generator(path: str | Path, device="cpu"):
    """G in eval mode and the ``model:`` params it was trained with (``ModelParams``)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: generator file not found (run `gancls train` first)")
    try:
        state = torch.load(path, map_location=device, weights_only=True)
        model = ModelParams.model_validate(state["model"])
        g = build_generator(model)
        g.load_state_dict(state["generator"])
    except Exception as exc:  # noqa: BLE001 - any failure means a bad file
        raise CheckpointError(f"{path}: not a loadable gancls generator ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else ''})") from exc
    return g.to(device).eval(), model
