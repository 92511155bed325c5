"""prepare stage: raw CUB + embeddings folder -> one HDF5 file, streamed image by image.

The file's layout and its reader are in ``gancls.data.prepared``.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
from pathlib import Path

import h5py
import numpy as np
from PIL import Image
from tqdm import tqdm

from ..config import PrepareParams
from ..files import atomic_path
from . import cub
from .raw import open_raw


def crop_box(bbox, width: int, height: int) -> tuple[int, int, int, int]:
    """StackGAN's square crop around the bird: half side 0.75 * max(w, h), clipped to the image."""
    x, y, w, h = bbox
    half = int(max(w, h) * 0.75)
    cx, cy = int(x + w / 2), int(y + h / 2)
    return max(0, cx - half), max(0, cy - half), min(width, cx + half), min(height, cy + half)


def load_image(path: Path, bbox, size: int, bbox_crop: bool) -> np.ndarray:
    """The image as ``size`` x ``size`` RGB uint8: bounding-box crop (StackGAN), bicubic resize.

    A JPEG is decoded directly at a reduced scale (libjpeg's DCT scaling, ``Image.draft``) as long
    as the crop keeps at least twice ``size`` pixels a side: about 4x faster than decoding at full
    size and then shrinking, and within half a grey level of it on average.
    """
    with Image.open(path) as im:
        width, height = im.size
        box = crop_box(bbox, width, height) if bbox_crop else (0, 0, width, height)
        side = max(box[2] - box[0], box[3] - box[1], 1)
        scale = min(1.0, 2 * size / side)
        im.draft("RGB", (max(1, int(width * scale)), max(1, int(height * scale))))
        sx, sy = im.size[0] / width, im.size[1] / height
        im = im.convert("RGB")
        if bbox_crop:
            im = im.crop((round(box[0] * sx), round(box[1] * sy), round(box[2] * sx), round(box[3] * sy)))
        im = im.resize((size, size), Image.Resampling.BICUBIC)
        return np.asarray(im, dtype=np.uint8)


WRITE_BLOCK = 256  # images written to the HDF5 file at a time


def _load_job(job) -> np.ndarray:
    path, bbox, size, crop = job
    try:
        return load_image(path, bbox, size, crop)
    except Exception as exc:  # noqa: BLE001 - any decode failure names the file
        raise cub.LayoutError(f"{path}: cannot be prepared ({type(exc).__name__}: {exc})") from None


@contextlib.contextmanager
def _decoder(workers: int):
    """``decode(jobs)``: the prepared images of ``jobs`` in order, decoded by ``workers`` processes
    (0: one per core; 1: in this process).  Workers start from a fresh server process, so they hold
    neither the embeddings nor anything else of this one, and memory stays flat in the dataset size."""
    n = workers or os.cpu_count() or 1
    if n == 1:
        yield lambda jobs: map(_load_job, jobs)
        return
    with multiprocessing.get_context("forkserver").Pool(n) as pool:
        yield lambda jobs: pool.imap(_load_job, jobs, chunksize=16)


def prepare(
    raw_dir: str | Path, out: str | Path, cfg: PrepareParams, source: str, check=None, layout: str = "auto"
) -> dict:
    """Write the prepared HDF5 file atomically; return counts per split.

    ``check(path)`` (the prepared-data validation) runs on the finished file before it replaces
    ``out``; if it raises, ``out`` is left as it was.  ``layout`` (params ``data.layout``) forces
    the embedding layout read by ``gancls.data.raw``; ``auto`` detects it.
    """
    raw_dir = Path(raw_dir)
    size = int(cfg.load_size)
    raw = open_raw(raw_dir, layout)
    by_split: dict[str, list[cub.Record]] = {s: [] for s in cub.SPLITS}
    for rec in raw.index():
        if rec.split is not None:
            by_split[rec.split].append(rec)
    counts = {}
    with _decoder(cfg.workers) as decode, atomic_path(out) as tmp:
        with h5py.File(tmp, "w") as h5:
            h5.attrs.update(
                load_size=size,
                bbox_crop=bool(cfg.bbox_crop),
                source=source,
                raw_dir=str(raw_dir),
                layout=raw.layout,
                captions_per_image=raw.captions_per_image,
            )
            text = h5py.string_dtype()
            for split, records in by_split.items():
                records.sort(key=lambda r: r.emb_index)
                emb = raw.embeddings(split)
                n = len(records)
                if not isinstance(emb, np.ndarray) or emb.ndim != 3 or emb.shape[0] < n:
                    shape = emb.shape if isinstance(emb, np.ndarray) else "ragged (rows differ in shape)"
                    raise cub.LayoutError(
                        f"{raw_dir / raw.embeddings_file(split)}: embeddings of shape {shape} do not fit {n} images"
                    )
                g = h5.create_group(split)
                images = g.create_dataset("images", (n, size, size, 3), np.uint8, chunks=(1, size, size, 3))
                g.create_dataset("embeddings", data=emb[[r.emb_index for r in records]])
                g.create_dataset("class_ids", data=np.array([r.class_id for r in records], np.int32))
                g.create_dataset("keys", data=[r.key for r in records], dtype=text)
                captions = g.create_dataset("captions", (n, emb.shape[1]), dtype=text)
                jobs = [(rec.path, rec.bbox, size, bool(cfg.bbox_crop)) for rec in records]
                block: list[np.ndarray] = []
                for i, image in enumerate(
                    tqdm(decode(jobs), total=n, desc=f"prepare {split}", unit="img", mininterval=1, disable=None)
                ):
                    block.append(image)
                    lines = raw.captions(records[i].key)
                    captions[i] = (lines + [""] * emb.shape[1])[: emb.shape[1]]
                    if len(block) == WRITE_BLOCK or i == n - 1:
                        images[i + 1 - len(block) : i + 1] = np.stack(block)
                        block.clear()
                counts[split] = n
        if check is not None:
            check(tmp)  # validate before the file replaces the old one
    return counts
