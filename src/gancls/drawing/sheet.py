"""The comparison sheet of ``gancls sweep`` / ``gancls compare``: the same test captions and noise vectors
drawn by several experiments' generators, side by side, each block titled with its setting.

The generators and the prepared test split are read from the experiments with ``dvc.api.open`` (the
workspace is not touched): captions spread evenly over the test split (first caption of each), noise
from ``torch.Generator`` seeded with ``seed``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch
import yaml
from PIL import Image

from ..data.prepared import read_prepared
from ..models.generator_file import load_generator
from .grids import PANEL_WIDTH, captioned_image, save_png


def _fetch(path: str, rev: str, root: str | Path, into: Path) -> Path:
    import dvc.api

    out = into / rev / path
    out.parent.mkdir(parents=True, exist_ok=True)
    with dvc.api.open(path, repo=str(root), rev=rev, mode="rb") as src:
        out.write_bytes(src.read())
    return out


@torch.no_grad()
def settings_sheet(
    experiments: dict[str, str],
    path: str | Path,
    root: str | Path = ".",
    captions: int = 4,
    noise: int = 4,
    seed: int = 0,
) -> Path:
    """``experiments``: setting label -> experiment name.  One block of captions x noise per setting."""
    blocks = []
    with tempfile.TemporaryDirectory(prefix="gancls-sheet.") as tmp:
        for i, (label, exp) in enumerate(experiments.items()):
            params = yaml.safe_load(_fetch("params.yaml", exp, root, Path(tmp)).read_text(encoding="utf-8"))
            if i == 0:  # the first setting's test split: the captions every block draws
                test = read_prepared(_fetch(params["prepare"]["out"], exp, root, Path(tmp)), "test")
                idx = np.linspace(0, len(test["embeddings"]) - 1, min(captions, len(test["embeddings"]))).astype(int)
                text = torch.from_numpy(np.asarray(test["embeddings"][idx, 0], dtype=np.float32))
                labels = [str(test["captions"][j, 0]) for j in idx]
            g, mcfg = load_generator(_fetch(f"{params['train']['out_dir']}/generator.pt", exp, root, Path(tmp)))
            z = torch.randn(noise, mcfg.z_dim, generator=torch.Generator().manual_seed(seed))
            images = g(z.repeat(len(idx), 1), text.repeat_interleave(noise, dim=0))
            blocks.append(
                captioned_image(
                    images,
                    labels if i == 0 else [""] * len(idx),
                    noise,
                    title=f"{label}: {exp}",
                    panel_width=PANEL_WIDTH if i == 0 else 8,
                )
            )
    sheet = Image.new("RGB", (sum(b.width for b in blocks), max(b.height for b in blocks)), "white")
    x = 0
    for block in blocks:
        sheet.paste(block, (x, 0))
        x += block.width
    return save_png(sheet, path)
