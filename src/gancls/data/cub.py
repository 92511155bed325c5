"""CUB-200-2011's own tables: every image with its class, bounding box and CUB's split.

The raw-data root (``data.raw_dir`` in params.yaml) holds::

    CUB_200_2011/images/<class dir>/<image>.jpg
    CUB_200_2011/{images,classes,image_class_labels,train_test_split,bounding_boxes}.txt
    text_c10/<class dir>/<image>.txt                       10 captions, one a line

plus Reed's embeddings in one of three layouts (``gancls.data.layouts``, ``gancls.data.cub_icml``), which give
the text-to-image split: the class-disjoint one of the embedding folders, not CUB's
``train_test_split.txt`` (read and kept as ``official_train`` only).  Stages read raw data through
``gancls.data.raw.open_raw``, which joins a layout to these records; this module imports none of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

SPLITS = ("train", "test")
CUB_DIR = "CUB_200_2011"
TEXT_DIR = "text_c10"


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


def caption_path(root: Path, key: str) -> Path:
    return Path(root) / TEXT_DIR / f"{key}.txt"


def read_classes(root: Path) -> dict[int, str]:
    """CUB's classes.txt: class id -> class directory name."""
    return _int_map(Path(root) / CUB_DIR / "classes.txt")


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
