"""The prepared HDF5 file (written by ``gancls prepare``), read by train, train-scorer, generate,
evaluate and sample.

Layout (one group per text-to-image split, rows in the order of the layout's embedding rows)::

    /<split>/images      uint8   (N, S, S, 3)   S = prepare.load_size, RGB
    /<split>/embeddings  float32 (N, K, 1024)   K captions per image: 10 (5 for aelnouby's birds.hdf5)
    /<split>/class_ids   int32   (N,)
    /<split>/keys        str     (N,)           "<class dir>/<image stem>"
    /<split>/captions    str     (N, K)
    attrs: load_size, bbox_crop, source, raw_dir, layout, captions_per_image
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

DATASETS = ("images", "embeddings", "class_ids", "keys", "captions")


class PreparedFileError(ValueError):
    """The prepared file lacks a split or dataset (e.g. written by an older ``gancls prepare``)."""


def read_prepared(path: str | Path, split: str, names: tuple[str, ...] = DATASETS) -> dict[str, np.ndarray]:
    """Datasets ``names`` of one split of the prepared file, fully in memory (CUB's train images: 0.5 GB)."""
    with h5py.File(path, "r") as h5:
        if split not in h5:
            raise PreparedFileError(f"{path}: no split '{split}'; rerun `gancls prepare`")
        g = h5[split]
        missing = [f"{split}/{name}" for name in names if name not in g]
        if missing:
            raise PreparedFileError(
                f"{path}: no dataset {', '.join(missing)} (a file of another layout?); rerun `gancls prepare`"
            )
        return {
            name: np.array(g[name].asstr()[()], dtype=object) if name in ("keys", "captions") else g[name][()]
            for name in names
        }


def center_crop(images: np.ndarray, size: int) -> np.ndarray:
    """The centre ``size`` x ``size`` of NHWC images: what the model sees of a prepared image."""
    h, w = images.shape[1:3]
    top, left = (h - size) // 2, (w - size) // 2
    return images[:, top : top + size, left : left + size]
