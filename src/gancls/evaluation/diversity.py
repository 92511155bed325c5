"""Does the noise matter?  How much one caption's images vary when only z changes, next to how much
real images that agree with the caption vary.

Read from the noise sets of ``generate`` (K test captions x M noise vectors, ``noise_sets.h5``):

* ``unnamed_distinct`` (the sample): for each caption and each attribute of ``scorer.free_kinds``
  (pose, background, size) that the caption does **not** name, the number of distinct values the
  scorer's classifier reads in the caption's M images; the mean over (caption, attribute).  The real
  reference is the same count over M real test images that agree with everything the caption names
  (by their own captions), read by the same classifier.  Only captions with at least M agreeing real
  images count, for both.  A generator that ignores z draws one image per caption: it scores 1, the
  floor.  ``per_kind`` gives the figure per attribute (``background`` is the one the issue tracks).
* ``pixel_std``: the per-pixel standard deviation across the M images of a caption (0-255), mean over
  captions, next to the same over the agreeing real images.
* ``feature_spread`` (also on CUB, which has no attribute labels): the mean pairwise distance between
  the Inception features of one caption's M images, next to that of M real test images of the
  caption's class (features cached by ``real-features``); over ``evaluate.diversity_feature_captions``
  captions.

Each ``of_real`` is generated / real: 1 means the noise varies the pictures as much as reality does.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import torch

from ..data.prepared import center_crop
from .scorer import caption_labels, image_targets

MISSING_ON_CUB = (
    "CUB has no labels for what a caption leaves free (pose, background, size): only feature_spread is measured"
)


def read_noise_sets(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no noise sets; rerun `gancls generate`")
    with h5py.File(path, "r") as h5:
        return {
            "images": h5["images"][()],
            "captions": [str(c) for c in h5["captions"].asstr()[()]],
            "image_index": h5["image_index"][()],
        }


def _ratio(gen: float, real: float) -> dict:
    return {"generated": round(gen, 4), "real": round(real, 4), "of_real": round(gen / real, 4) if real else None}


def _pairwise(feats: torch.Tensor) -> float:
    """Mean distance between the distinct pairs of rows."""
    d = torch.cdist(feats, feats)
    n = len(feats)
    return float(d.sum() / (n * (n - 1)))


def agreeing_images(named: dict[str, int], targets: np.ndarray, kinds: list[str]) -> np.ndarray:
    """Rows of ``targets`` (value index per kind, -1 unknown) that have every named value."""
    ok = np.ones(len(targets), dtype=bool)
    for kind, value in named.items():
        ok &= targets[:, kinds.index(kind)] == value
    return np.flatnonzero(ok)


def unnamed_distinct(sets: dict, test: dict, model, state: dict, size: int, seed: int, device) -> dict:
    """The attribute counts and pixel spread (see the module docstring); the sample only."""
    vocab = state["vocab"]
    kinds = list(vocab)
    free = [k for k in kinds if k not in state.get("text_kinds", kinds)]
    targets = image_targets(test, vocab, state["source"])
    real_pred = model.predict(center_crop(test["images"], size), device=device)
    m = sets["images"].shape[1]
    rng = np.random.default_rng(seed)
    counts: dict[str, list[tuple[int, int]]] = {k: [] for k in free}
    pixel_gen, pixel_real, used = [], [], 0
    for k, caption in enumerate(sets["captions"]):
        cid = int(test["class_ids"][sets["image_index"][k]])
        named = {kind: vocab[kind].index(v) for kind, v in caption_labels(caption, cid, kinds, "sample").items()}
        rows = agreeing_images(named, targets, kinds)
        if len(rows) < m:
            continue
        rows = rng.choice(rows, m, replace=False)
        used += 1
        gen_pred = model.predict(sets["images"][k], device=device)
        for kind in free:
            if kind not in named:
                j = kinds.index(kind)
                counts[kind].append((len(set(gen_pred[:, j])), len(set(real_pred[rows, j]))))
        pixel_gen.append(sets["images"][k].astype(np.float32).std(axis=0).mean())
        pixel_real.append(center_crop(test["images"][rows], size).astype(np.float32).std(axis=0).mean())
    pairs = [c for kind in free for c in counts[kind]]
    if not pairs:
        return {"unnamed_distinct": None, "unnamed_missing_reason": f"no caption has {m} agreeing real test images"}
    return {
        "unnamed_distinct": _ratio(float(np.mean([g for g, _ in pairs])), float(np.mean([r for _, r in pairs]))),
        "per_kind": {
            kind: _ratio(float(np.mean([g for g, _ in c])), float(np.mean([r for _, r in c])))
            for kind, c in counts.items()
            if c
        },
        "pixel_std": _ratio(float(np.mean(pixel_gen)), float(np.mean(pixel_real))),
        "captions": used,
        "floor": 1.0,
    }


def feature_spread(sets: dict, test: dict, real_feats: torch.Tensor, extract, n_captions: int, seed: int) -> dict:
    """Mean pairwise Inception distance within a caption's M images, next to M real images of its class."""
    m = sets["images"].shape[1]
    rng = np.random.default_rng(seed)
    gen, real = [], []
    for k in range(min(n_captions, len(sets["captions"]))):
        cid = test["class_ids"][sets["image_index"][k]]
        same = np.flatnonzero(test["class_ids"] == cid)
        if len(same) < m:
            continue
        gen.append(_pairwise(extract(sets["images"][k])))
        real.append(_pairwise(real_feats[np.sort(rng.choice(same, m, replace=False))]))
    if not gen:
        return {"feature_spread": None, "feature_missing_reason": f"no test class has {m} images"}
    return {"feature_spread": {**_ratio(float(np.mean(gen)), float(np.mean(real))), "captions": len(gen)}}


def diversity(noise_sets: str | Path, test: dict, scorer, real_feats, extract, params, device) -> dict:
    """The ``diversity`` object of metrics/scores.json."""
    sets = read_noise_sets(noise_sets)
    model, state = scorer
    seed, size = int(params.seed), int(params.model.image_size)
    out = {"noise_vectors": int(sets["images"].shape[1]), "captions_drawn": len(sets["captions"])}
    if state["source"] == "cub":
        out.update(unnamed_distinct=None, unnamed_missing_reason=MISSING_ON_CUB)
    else:
        out.update(unnamed_distinct(sets, test, model, state, size, seed, device))
    n = int(params.evaluate.diversity_feature_captions)
    out.update(feature_spread(sets, test, real_feats, extract, n, seed))
    return out
