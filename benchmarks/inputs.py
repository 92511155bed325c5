"""The benchmarks' inputs, each built in a process of its own before a measurement starts (not a test).

A benchmark measures only what it names: data built in the measuring process would count in its
``peak_rss_mb`` (and warm its caches), so ``in_child`` runs a builder here in a fresh (spawned) child
process and the measuring process only reads the finished file.  A benchmark that also counts its
children's memory (``RUSAGE_CHILDREN``: a builder it waited for would count there) runs the measurement
itself in a child too, a sibling of the builder.  Builders take plain values (a params dict, paths),
write atomically and do nothing when their output is already there.
"""

from __future__ import annotations

import multiprocessing
import sys
from pathlib import Path

import numpy as np

CUB_TRAIN_IMAGES = 8855  # CUB-200-2011's training split (Reed's / StackGAN's class-disjoint 150 classes)


def in_child(fn, *args) -> None:
    """``fn(*args)`` in a spawned child process; exits with a line if it fails."""
    child = multiprocessing.get_context("spawn").Process(target=fn, args=args)
    child.start()
    child.join()
    if child.exitcode != 0:
        sys.exit(f"{fn.__name__}{args!r:.200} failed in its child process (exit status {child.exitcode})")


def sample_prepared(raw: dict) -> None:
    """``raw["prepare"]["out"]``: the embedded sample of ``raw``'s ``sample`` section, generated and prepared."""
    from gancls.config import parse_params
    from gancls.data.prepare import prepare
    from gancls.data.synthetic import make_sample

    params = parse_params(raw)  # (checked by the parent)
    if Path(params.prepare.out).is_file():
        return
    print(f"{params.prepare.out} missing: making the embedded sample and preparing it", file=sys.stderr)
    make_sample(params.sample, params.sample.out_dir)
    prepare(params.sample.out_dir, params.prepare.out, params.prepare, "sample")


def raw_sample(params: dict, folder: str | Path) -> None:
    """``folder``: the sample generator's raw folder (StackGAN layout) of ``params``'s ``sample`` section."""
    from gancls.config import parse_params
    from gancls.data.synthetic import make_sample

    folder = Path(folder)
    if (folder / "CUB_200_2011/images.txt").is_file():
        return
    print(f"building the raw folder {folder} (once)", file=sys.stderr)
    make_sample(parse_params(params).sample, folder)


def cub_sized(source: str | Path, out: str | Path, n: int = CUB_TRAIN_IMAGES) -> None:
    """``out``: a prepared file whose train split has CUB's ``n`` images, the train rows of ``source`` (a
    prepared file) repeated in order until there are ``n``; its other splits copied.  The training loop's
    speed depends on the number and size of the images, not on what they show."""
    import h5py

    from gancls.files import atomic_path

    out = Path(out)
    if out.is_file():
        return
    with h5py.File(source, "r") as src, atomic_path(out) as tmp, h5py.File(tmp, "w") as dst:
        dst.attrs.update(src.attrs)
        for split in src:
            if split != "train":
                src.copy(src[split], dst, name=split)
                continue
            group = dst.create_group("train")
            rows = np.resize(np.arange(len(src["train/class_ids"])), n)  # 0, 1, ..., m-1, 0, 1, ...
            for name, data in src["train"].items():
                values = data[()]
                kwargs = {"dtype": h5py.string_dtype()} if data.dtype.kind in "OS" else {}
                group.create_dataset(name, data=values[rows], **kwargs)
