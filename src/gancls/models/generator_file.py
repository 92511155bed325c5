"""The shipped generator, ``generator.pt``: G's weights and the ``model:`` params it was built with.

Read with ``torch.load(..., weights_only=True)``: tensors and plain containers only, so loading a
model file never runs code from it.  ``gancls train`` writes it, ``gancls generate``, ``sample`` and
the demo page read it.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..config import ModelParams
from ..files import save_torch
from .gan import build_generator


class CheckpointError(ValueError):
    """A model file is missing, unreadable or not what it should be; the message names it."""


def first_line(exc: BaseException) -> str:
    """``Type: first line of the message`` of an exception, for one-line errors."""
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def save_generator(g: nn.Module, model: ModelParams, path: str | Path) -> None:
    """G's weights and its ``model:`` params to ``path`` (the caller makes the write atomic)."""
    save_torch({"generator": g.state_dict(), "model": model.model_dump()}, path)


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
        raise CheckpointError(f"{path}: not a loadable gancls generator ({first_line(exc)})") from exc
    return g.to(device).eval(), model
