"""The one entry to raw data: ``open_raw(data.raw_dir, data.layout)`` for every stage.

``RawData`` joins CUB's records (``gancls.data.cub``) to the embeddings and captions of one layout
(``gancls.data.layouts``: StackGAN pickles, aelnouby's HDF5; ``gancls.data.cub_icml``: Reed's Torch7 files),
detected from what is in the root or forced by ``data.layout``.  Problems that tie a layout file to
no CUB image, or a class to no split, are collected in ``RawData.problems()`` as ``(file relative to
the root, what)`` for validation to report.  Imports go one way: raw -> layouts, cub_icml -> cub.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from . import cub
from .cub_icml import ReedT7Reader
from .layouts import Entry, HDF5Reader, StackGANReader, detect_layout

READERS = {"stackgan": StackGANReader, "reed_t7": ReedT7Reader, "hdf5": HDF5Reader}


class RawData:
    """``data.raw_dir`` read through its embedding layout (detected, or forced by ``layout``)."""

    def __init__(self, root, layout: str = "auto"):
        self.root = Path(root)
        self.layout = detect_layout(self.root, layout)
        self.reader = READERS[self.layout](self.root)
        self._records: list[cub.Record] | None = None
        self._problems: list[tuple[str, str]] = []

    @property
    def captions_per_image(self) -> int:
        self.reader.entries()
        return self.reader.captions_per_image

    def index(self) -> list[cub.Record]:
        """CUB's records with the split and embedding row the layout gives each image."""
        if self._records is None:
            records = cub.read_cub(self.root)
            entries = self.reader.entries()
            known = {r.key for r in records}
            where: dict[str, tuple[str, int, Entry]] = {}
            problems = []
            for split, lst in entries.items():
                for i, e in enumerate(lst):
                    if e.key not in known:
                        problems.append((e.source, f"image {e.key} is not in {cub.CUB_DIR}/images.txt"))
                    elif e.key in where:
                        problems.append((e.source, f"image {e.key} is also listed in {where[e.key][2].source}"))
                    else:
                        where[e.key] = (split, i, e)
            self._where = where
            self._problems = problems
            self._records = [
                dataclasses.replace(r, split=where[r.key][0], emb_index=where[r.key][1]) if r.key in where else r
                for r in records
            ]
        return self._records

    def image_embeddings_file(self, key: str, split: str | None = None) -> str:
        self.index()
        if key in self._where:
            return self._where[key][2].emb_source
        return self.reader.split_source(split or "train")

    def embeddings(self, split: str):
        """The split's embeddings: float32 N x captions x 1024, or a list of rows if their shapes differ."""
        return self.reader.embeddings(split)

    def captions(self, key: str) -> list[str]:
        return self.reader.captions(key)

    def caption_source(self, key: str) -> str:
        return self.reader.caption_source(key)

    def split_source(self, split: str) -> str:
        return self.reader.split_source(split)

    def embeddings_file(self, split: str) -> str:
        """The file (or group) that holds the split's embeddings, for messages."""
        return self.reader.embeddings_file(split)

    def problems(self) -> list[tuple[str, str]]:
        """(file relative to the root, what) for every layout entry that does not fit CUB or the split."""
        self.index()
        self.reader.check()
        return self._problems + self.reader.problems


def open_raw(root: Path, layout: str = "auto") -> RawData:
    """``data.raw_dir`` read through its embedding layout."""
    return RawData(root, layout)


def load_index(root: Path, layout: str = "auto") -> list[cub.Record]:
    """Every image of CUB_200_2011 with its class, box and text-to-image split."""
    return open_raw(root, layout).index()


def load_embeddings(root: Path, split: str, layout: str = "auto") -> np.ndarray:
    """The split's embedding array as float32; its shape is checked by validation, not here.

    (A list of per-image arrays where a layout's images disagree in shape.)"""
    return open_raw(root, layout).embeddings(split)


def load_captions(root: Path, key: str, layout: str = "auto") -> list[str]:
    return open_raw(root, layout).captions(key)
