"""``gancls sample``: draw images for test captions that match a query, as a captioned grid.

New sentences cannot be drawn: a caption has to be turned into Reed's char-CNN-RNN embedding
first, and that text encoder is not part of gancls.  So the captions come from the test split of
the prepared data (they have their embeddings), chosen by a text query or by caption id.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

from .checkpoint import load_generator
from .config import resolve_device
from .grids import captioned_grid
from .prepared import read_split

ENCODER_NOTE = ("Only captions of the prepared test split can be drawn: a new sentence needs Reed's "
                "char-CNN-RNN text encoder, which is not included.")


class NoMatch(LookupError):
    """No test caption matches the query; the message says what was searched."""


def find_captions(captions: np.ndarray, keys: np.ndarray, query: str | None = None,
                  caption_id: str | None = None) -> list[tuple[int, int]]:
    """(image row, caption index) of the matching test captions.

    ``query``: a phrase that must appear in the caption as whole words, case-insensitive
    ("red body" matches "... a red body and ..." but not "red wings and a blue body").
    ``caption_id``: ``<key>`` (all captions of that test image) or ``<key>#<i>`` (caption i).
    """
    if caption_id:
        key, _, idx = caption_id.partition("#")
        rows = [i for i, k in enumerate(keys) if str(k) == key]
        if not rows:
            raise NoMatch(f"no test image with key {key!r} (keys look like {str(keys[0])!r})")
        if idx:
            if not idx.isdigit() or int(idx) >= captions.shape[1]:
                raise NoMatch(f"caption index {idx!r} is not in 0..{captions.shape[1] - 1}")
            return [(rows[0], int(idx))]
        return [(rows[0], j) for j in range(captions.shape[1]) if str(captions[rows[0], j])]
    if not query or not query.strip():
        raise NoMatch("give --query TEXT or --caption-id KEY[#i]")
    pattern = re.compile(r"\b" + r"\W+".join(re.escape(w) for w in query.lower().split()) + r"\b")
    return [(i, j) for i in range(captions.shape[0]) for j in range(captions.shape[1])
            if pattern.search(str(captions[i, j]).lower())]


@torch.no_grad()
def sample_images(generator_path: str | Path, prepared: str | Path, out: str | Path, *,
                  query: str | None = None, caption_id: str | None = None, per_caption: int = 8,
                  max_captions: int = 8, seed: int = 0, device: str = "auto") -> dict:
    """Write a grid: one row per matching caption (up to ``max_captions``), ``per_caption`` images."""
    if per_caption < 1 or max_captions < 1:
        raise ValueError("--n and --max-captions must be at least 1")
    test = read_split(prepared, "test")
    found = find_captions(test["captions"], test["keys"], query, caption_id)
    if not found:
        raise NoMatch(f"no test caption of {prepared} matches {query!r}")
    rng = np.random.default_rng(seed)
    picked = [found[i] for i in sorted(rng.choice(len(found), min(max_captions, len(found)), replace=False))]
    dev = resolve_device(device)
    g, mcfg = load_generator(generator_path, dev)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    z = torch.randn(len(picked) * per_caption, mcfg.z_dim, generator=gen).to(dev)
    emb = torch.from_numpy(np.stack([test["embeddings"][i, j] for i, j in picked])).to(dev)
    images = g(z, emb.repeat_interleave(per_caption, dim=0))
    labels = [f"{test['captions'][i, j]}  [{test['keys'][i]}#{j}]" for i, j in picked]
    title = (f"query {query!r}: {len(picked)} of {len(found)} matching test captions"
             if query else f"caption {caption_id}")
    captioned_grid(images, labels, per_caption, out, title=title)
    return {"grid": str(out), "captions": len(picked), "matches": len(found)}
