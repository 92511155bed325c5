"""prepare stage: raw CUB + embeddings folder -> one HDF5 file, streamed image by image.

The file's layout and its reader are in ``gancls.prepared``.
"""
from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
from PIL import Image
from tqdm import tqdm

from . import cub
from .config import PrepareParams, atomic_path


def crop_box(bbox, width: int, height: int) -> tuple[int, int, int, int]:
    """StackGAN's square crop around the bird: half side 0.75 * max(w, h), clipped to the image."""
    x, y, w, h = bbox
    half = int(max(w, h) * 0.75)
    cx, cy = int(x + w / 2), int(y + h / 2)
    return max(0, cx - half), max(0, cy - half), min(width, cx + half), min(height, cy + half)


def load_image(path: Path, bbox, size: int, bbox_crop: bool) -> np.ndarray:
    with Image.open(path) as im:
        im = im.convert("RGB")
        if bbox_crop:
            im = im.crop(crop_box(bbox, *im.size))
        im = im.resize((size, size), Image.Resampling.BICUBIC)
        return np.asarray(im, dtype=np.uint8)


def prepare(raw_dir: str | Path, out: str | Path, cfg: PrepareParams, source: str, check=None) -> dict:
    """Write the prepared HDF5 file atomically; return counts per split.

    ``check(path)`` (the prepared-data validation) runs on the finished file before it replaces
    ``out``; if it raises, ``out`` is left as it was.
    """
    raw_dir = Path(raw_dir)
    size = int(cfg.load_size)
    by_split: dict[str, list[cub.Record]] = {s: [] for s in cub.SPLITS}
    for rec in cub.load_index(raw_dir):
        if rec.split is not None:
            by_split[rec.split].append(rec)
    counts = {}
    with atomic_path(out) as tmp:
        with h5py.File(tmp, "w") as h5:
            h5.attrs.update(load_size=size, bbox_crop=bool(cfg.bbox_crop), source=source,
                            raw_dir=str(raw_dir))
            text = h5py.string_dtype()
            for split, records in by_split.items():
                records.sort(key=lambda r: r.emb_index)
                emb = cub.load_embeddings(raw_dir, split)
                n = len(records)
                if emb.ndim != 3 or emb.shape[0] < n:
                    raise cub.LayoutError(
                        f"{raw_dir / split / cub.EMBEDDINGS_FILE}: shape {emb.shape} does not fit {n} images"
                    )
                g = h5.create_group(split)
                images = g.create_dataset("images", (n, size, size, 3), np.uint8, chunks=(1, size, size, 3))
                g.create_dataset("embeddings", data=emb[[r.emb_index for r in records]])
                g.create_dataset("class_ids", data=np.array([r.class_id for r in records], np.int32))
                g.create_dataset("keys", data=[r.key for r in records], dtype=text)
                captions = g.create_dataset("captions", (n, emb.shape[1]), dtype=text)
                bar = tqdm(records, desc=f"prepare {split}", unit="img", mininterval=1, disable=None)
                for i, rec in enumerate(bar):
                    images[i] = load_image(rec.path, rec.bbox, size, bool(cfg.bbox_crop))
                    lines = cub.load_captions(raw_dir, rec.key)
                    captions[i] = (lines + [""] * emb.shape[1])[: emb.shape[1]]
                counts[split] = n
        if check is not None:
            check(tmp)  # validate before the file replaces the old one
    return counts
