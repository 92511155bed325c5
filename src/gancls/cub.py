"""Readers for CUB-200-2011 plus Reed's char-CNN-RNN embeddings in the StackGAN layout.

The raw-data root (``data.raw_dir`` in params.yaml) holds::

    CUB_200_2011/images/<class dir>/<image>.jpg
    CUB_200_2011/{images,classes,image_class_labels,train_test_split,bounding_boxes}.txt
    text_c10/<class dir>/<image>.txt                       10 captions, one a line
    {train,test}/char-CNN-RNN-embeddings.pickle            N x 10 x 1024 float32
    {train,test}/filenames.pickle                          ["<class dir>/<image>", ...]
    {train,test}/class_info.pickle                         [class id, ...]

The text-to-image split is the class-disjoint one given by ``train/`` and ``test/`` (not CUB's
``train_test_split.txt``, which is read and kept as ``official_train`` only).  Both the real data
and the generated sample are read by this module alone.

Reed's ``cub_icml/`` Torch7 files and aelnouby's ``birds.hdf5`` are read too (``gancls.layouts``):
``load_index``, ``load_embeddings`` and ``load_captions`` dispatch on the layout found in the root
(or forced by ``layout``, params ``data.layout``); ``open_raw`` gives one reader for a whole stage.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SPLITS = ("train", "test")
CUB_DIR = "CUB_200_2011"
TEXT_DIR = "text_c10"
EMBEDDINGS_FILE = "char-CNN-RNN-embeddings.pickle"
FILENAMES_FILE = "filenames.pickle"
CLASS_INFO_FILE = "class_info.pickle"


class LayoutError(ValueError):
    """A raw-data file is missing or malformed; the message names the file."""


@dataclass(frozen=True)
class Record:
    image_id: int  # 1-based, from images.txt
    key: str  # "<class dir>/<image stem>", the key of filenames.pickle and text_c10
    path: Path  # the JPEG
    class_id: int  # 1-based, from image_class_labels.txt
    class_name: str  # the class directory, e.g. "001.Black_footed_Albatross"
    bbox: tuple[float, float, float, float]  # x, y, w, h in pixels
    official_train: bool  # CUB's own split (train_test_split.txt); not used for text-to-image
    split: str | None  # "train" / "test" from the embedding folders; None if in neither
    emb_index: int  # row in that split's embedding array, -1 if split is None


# --- safe pickle -------------------------------------------------------------------------------

_ALLOWED_GLOBALS = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("_codecs", "encode"),  # how protocol 2 stores bytes (the array buffers)
    ("copy_reg", "_reconstructor"),
    ("copyreg", "_reconstructor"),
    ("__builtin__", "object"),
    ("builtins", "object"),
}


class _SafeUnpickler(pickle.Unpickler):
    """Unpickler that builds numpy arrays, lists, strings and numbers, and nothing else."""

    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")


def safe_pickle_load(path: Path):
    """Load a (possibly Python 2, latin1) pickle allowing only numpy arrays and plain types."""
    path = Path(path)
    if not path.is_file():
        raise LayoutError(f"{path}: file not found")
    try:
        with path.open("rb") as f:
            return _SafeUnpickler(f, encoding="latin1").load()
    except Exception as exc:  # noqa: BLE001 - any failure is a bad file
        raise LayoutError(f"{path}: cannot be unpickled safely ({exc})") from exc


# --- CUB text files ----------------------------------------------------------------------------


def _read_table(path: Path, ncols: int) -> list[list[str]]:
    if not path.is_file():
        raise LayoutError(f"{path}: file not found")
    rows = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != ncols:
            raise LayoutError(f"{path}:{lineno}: expected {ncols} fields, got {len(parts)}")
        rows.append(parts)
    return rows


def _int_map(path: Path) -> dict[int, str]:
    out: dict[int, str] = {}
    for a, b in _read_table(path, 2):  # a missing or malformed file is a LayoutError of its own
        try:
            key = int(a)
        except ValueError as exc:
            raise LayoutError(f"{path}: non-integer id ({exc})") from exc
        if key in out:
            raise LayoutError(f"{path}: id {key} is listed twice")
        out[key] = b
    return out


def read_split(root: Path, split: str) -> tuple[list[str], list[int]]:
    """filenames.pickle and class_info.pickle of one split, as (keys, class ids)."""
    folder = Path(root) / split
    names = safe_pickle_load(folder / FILENAMES_FILE)
    classes = safe_pickle_load(folder / CLASS_INFO_FILE)
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
        raise LayoutError(f"{folder / FILENAMES_FILE}: expected a list of strings")
    try:
        classes = [int(c) for c in np.asarray(classes).ravel()]
    except (TypeError, ValueError) as exc:
        raise LayoutError(f"{folder / CLASS_INFO_FILE}: expected a list of class ids") from exc
    if len(classes) != len(names):
        raise LayoutError(f"{folder / CLASS_INFO_FILE}: {len(classes)} class ids for {len(names)} filenames")
    return list(names), classes


def open_raw(root: Path, layout: str = "auto"):
    """The raw root read through its embedding layout (``gancls.layouts.RawData``)."""
    from .layouts import RawData

    return RawData(root, layout)


def load_embeddings(root: Path, split: str, layout: str = "auto") -> np.ndarray:
    """The split's embedding array as float32; its shape is checked by validation, not here.

    (A list of per-image arrays where a layout's images disagree in shape.)"""
    return open_raw(root, layout).embeddings(split)


def caption_path(root: Path, key: str) -> Path:
    return Path(root) / TEXT_DIR / f"{key}.txt"


def load_captions(root: Path, key: str, layout: str = "auto") -> list[str]:
    return open_raw(root, layout).captions(key)


def load_index(root: Path, layout: str = "auto") -> list[Record]:
    """Every image of CUB_200_2011 with its class, box and text-to-image split."""
    return open_raw(root, layout).index()


def read_cub(root: Path) -> list[Record]:
    """Every image of CUB_200_2011 with its class and box; split None (the layout gives it)."""
    root = Path(root)
    cub = root / CUB_DIR
    images = _int_map(cub / "images.txt")
    labels = {k: int(v) for k, v in _int_map(cub / "image_class_labels.txt").items()}
    classes = _int_map(cub / "classes.txt")
    official = {k: v == "1" for k, v in _int_map(cub / "train_test_split.txt").items()}
    boxes = {}
    bbox_path = cub / "bounding_boxes.txt"
    for parts in _read_table(bbox_path, 5):
        try:
            image_id, box = int(parts[0]), tuple(float(v) for v in parts[1:])
        except ValueError as exc:
            raise LayoutError(f"{bbox_path}: bad number ({exc})") from exc
        if image_id in boxes:
            raise LayoutError(f"{bbox_path}: id {image_id} is listed twice")
        boxes[image_id] = box

    records = []
    for image_id, rel in sorted(images.items()):
        for table, name in (
            (labels, "image_class_labels.txt"),
            (official, "train_test_split.txt"),
            (boxes, "bounding_boxes.txt"),
        ):
            if image_id not in table:
                raise LayoutError(f"{cub / name}: no entry for image id {image_id}")
        class_id = labels[image_id]
        if class_id not in classes:
            raise LayoutError(f"{cub / 'classes.txt'}: no class {class_id} (image id {image_id})")
        key = rel[:-4] if rel.lower().endswith(".jpg") else rel.rsplit(".", 1)[0]
        split, emb_index = None, -1
        records.append(
            Record(
                image_id=image_id,
                key=key,
                path=cub / "images" / rel,
                class_id=class_id,
                class_name=classes[class_id],
                bbox=boxes[image_id],
                official_train=official[image_id],
                split=split,
                emb_index=emb_index,
            )
        )
    return records
