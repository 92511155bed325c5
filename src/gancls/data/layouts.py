"""The published layouts of Reed's char-CNN-RNN embeddings beside ``CUB_200_2011/`` (REFERENCE.md §2).

``data.raw_dir`` holds CUB plus one of:

* ``stackgan`` -- ``{train,test}/char-CNN-RNN-embeddings.pickle`` (N x 10 x 1024), ``filenames.pickle``,
  ``class_info.pickle`` and captions in ``text_c10/``; pickles only through ``safe_pickle_load`` (numpy arrays and plain types);
* ``reed_t7`` -- Reed's ``cub_icml/<class dir>/<image>.t7`` (its reader is ``gancls.data.cub_icml``);
* ``hdf5`` -- aelnouby's ``birds.hdf5``: groups ``train``/``valid``/``test`` (valid joins train), one
  subgroup ``<image>_<c>`` per (image, caption) with ``name``, ``class``, ``embeddings`` (1024), ``txt``
  and ``img``; read with h5py.  Its converter keeps 5 captions per image, so ``captions_per_image``
  is what most images have.

``detect_layout`` picks the layout from what is there (``data.layout: auto``) or checks a forced one.
Stages do not call the readers: ``gancls.data.raw.open_raw`` joins one to CUB's records.
"""

from __future__ import annotations

import pickle
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import cub

LAYOUTS = ("stackgan", "reed_t7", "hdf5")
T7_DIR = "cub_icml"
HDF5_FILE = "birds.hdf5"
EMB_DIM = 1024
EMBEDDINGS_FILE = "char-CNN-RNN-embeddings.pickle"
FILENAMES_FILE = "filenames.pickle"
CLASS_INFO_FILE = "class_info.pickle"


def detect_layout(root: Path, layout: str = "auto") -> str:
    """The layout of ``root``: the one asked for, else the only one present (StackGAN if none is)."""
    root = Path(root)
    if layout != "auto":
        if layout not in LAYOUTS:
            raise cub.LayoutError(f"data.layout must be auto or one of {', '.join(LAYOUTS)}, not {layout!r}")
        return layout
    markers = {"stackgan": root / "train" / EMBEDDINGS_FILE, "reed_t7": root / T7_DIR, "hdf5": root / HDF5_FILE}
    found = [name for name, marker in markers.items() if marker.exists()]
    if len(found) > 1:
        raise cub.LayoutError(
            f"{root}: holds several embedding layouts ("
            + ", ".join(f"{n}: {markers[n].relative_to(root)}" for n in found)
            + "); set data.layout to the one to use"
        )
    return found[0] if found else "stackgan"  # none: the StackGAN reader names the missing file


@dataclass(frozen=True)
class Entry:
    """One image as a layout lists it, in the order of its split's embeddings."""

    key: str  # "<class dir>/<image stem>"
    source: str  # the file that lists it (relative to the root), for messages
    emb_source: str  # the file that holds its embeddings


def _text(value) -> str:
    if isinstance(value, np.ndarray):
        value = value.reshape(-1)[0] if value.size else b""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def _stack(rows: list[np.ndarray]) -> np.ndarray | list[np.ndarray]:
    """Rows of one split as one float32 array when they agree in shape, else the list of rows."""
    if rows and len({r.shape for r in rows}) == 1:
        return np.stack(rows).astype(np.float32, copy=False)
    return rows if rows else np.zeros((0, 10, EMB_DIM), np.float32)


# --- the StackGAN pickles, read safely -------------------------------------------------------------------------------

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
        raise cub.LayoutError(f"{path}: file not found")
    try:
        with path.open("rb") as f:
            return _SafeUnpickler(f, encoding="latin1").load()
    except Exception as exc:  # noqa: BLE001 - any failure is a bad file
        raise cub.LayoutError(f"{path}: cannot be unpickled safely ({exc})") from exc


def read_stackgan_split(root: Path, split: str) -> tuple[list[str], list[int]]:
    """filenames.pickle and class_info.pickle of one split, as (keys, class ids)."""
    folder = Path(root) / split
    names = safe_pickle_load(folder / FILENAMES_FILE)
    classes = safe_pickle_load(folder / CLASS_INFO_FILE)
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
        raise cub.LayoutError(f"{folder / FILENAMES_FILE}: expected a list of strings")
    try:
        classes = [int(c) for c in np.asarray(classes).ravel()]
    except (TypeError, ValueError) as exc:
        raise cub.LayoutError(f"{folder / CLASS_INFO_FILE}: expected a list of class ids") from exc
    if len(classes) != len(names):
        raise cub.LayoutError(f"{folder / CLASS_INFO_FILE}: {len(classes)} class ids for {len(names)} filenames")
    return list(names), classes


class StackGANReader:
    name = "stackgan"
    captions_per_image = 10

    def __init__(self, root: Path):
        self.root = root
        self.problems: list[tuple[str, str]] = []
        self._entries: dict[str, list[Entry]] | None = None
        self._emb: dict[str, np.ndarray] = {}

    def entries(self) -> dict[str, list[Entry]]:
        if self._entries is None:
            self._entries = {}
            for split in cub.SPLITS:
                keys, _ = read_stackgan_split(self.root, split)
                lst, emb = f"{split}/{FILENAMES_FILE}", f"{split}/{EMBEDDINGS_FILE}"
                self._entries[split] = [Entry(k, lst, emb) for k in keys]
        return self._entries

    def embeddings(self, split: str) -> np.ndarray:
        if split not in self._emb:
            path = self.root / split / EMBEDDINGS_FILE
            data = safe_pickle_load(path)
            try:
                self._emb[split] = np.asarray(data, dtype=np.float32)
            except (TypeError, ValueError) as exc:
                raise cub.LayoutError(f"{path}: not a numeric array ({exc})") from exc
        return self._emb[split]

    def check(self) -> None:
        """Row counts of the embedding arrays against their filenames.pickle, and each key's class in
        class_info.pickle against CUB's image_class_labels.txt."""
        labels = {r.key: r.class_id for r in cub.read_cub(self.root)}
        for split in cub.SPLITS:
            keys, classes = read_stackgan_split(self.root, split)
            wrong = [(k, c) for k, c in zip(keys, classes) if k in labels and labels[k] != c]
            if wrong:
                k, c = wrong[0]
                self.problems.append(
                    (
                        f"{split}/{CLASS_INFO_FILE}",
                        f"class {c} for {k}, but "
                        f"{cub.CUB_DIR}/image_class_labels.txt says {labels[k]}"
                        + (f" ({len(wrong)} keys disagree)" if len(wrong) > 1 else ""),
                    )
                )
        for split, entries in self.entries().items():
            emb = self.embeddings(split)
            if emb.ndim >= 1 and len(emb) != len(entries):
                self.problems.append(
                    (
                        f"{split}/{EMBEDDINGS_FILE}",
                        f"{len(emb)} embedding rows for {len(entries)} keys in {split}/{FILENAMES_FILE}",
                    )
                )

    def captions(self, key: str) -> list[str]:
        return _text_c10(self.root, key)

    def caption_source(self, key: str) -> str:
        return f"{cub.TEXT_DIR}/{key}.txt"

    def split_source(self, split: str) -> str:
        return f"{split}/{FILENAMES_FILE}"

    def embeddings_file(self, split: str) -> str:
        return f"{split}/{EMBEDDINGS_FILE}"


def _text_c10(root: Path, key: str) -> list[str]:
    path = cub.caption_path(root, key)
    if not path.is_file():
        raise cub.LayoutError(f"{path}: file not found")
    return [c.strip() for c in path.read_text(encoding="utf-8").splitlines() if c.strip()]


class HDF5Reader:
    name = "hdf5"
    GROUPS = {"train": "train", "valid": "train", "test": "test"}

    def __init__(self, root: Path):
        self.root = root
        self.path = root / HDF5_FILE
        self.problems: list[tuple[str, str]] = []
        self._entries: dict[str, list[Entry]] | None = None
        self._rows: dict[str, dict] = {}  # key -> {"emb": [...], "txt": [...], "file": str}
        self.captions_per_image = 10

    def entries(self) -> dict[str, list[Entry]]:
        if self._entries is not None:
            return self._entries
        import h5py

        if not self.path.is_file():
            raise cub.LayoutError(f"{self.path}: file not found")
        per_key: dict[str, list] = {}
        split_of: dict[str, str] = {}
        try:
            with h5py.File(self.path, "r") as h5:
                for need in ("train", "test"):
                    if need not in h5:
                        raise cub.LayoutError(f"{self.path}: no group {need}")
                for gname, split in self.GROUPS.items():
                    if gname not in h5:
                        continue
                    for name, g in h5[gname].items():
                        where = f"{HDF5_FILE}:{gname}/{name}"
                        missing = [
                            d
                            for d in ("name", "class", "embeddings", "txt")
                            if not isinstance(g, h5py.Group) or d not in g
                        ]
                        if missing:
                            self.problems.append((where, f"no dataset {missing[0]}"))
                            continue
                        key = f"{_text(g['class'][()])}/{_text(g['name'][()])}"
                        if split_of.setdefault(key, split) != split:
                            self.problems.append((where, f"image {key} is in both the train and test groups"))
                            continue
                        stem, _, c = name.rpartition("_")
                        order = (0, int(c), name) if c.isdigit() else (1, 0, name)
                        per_key.setdefault(key, []).append(
                            (order, np.array(g["embeddings"][()], dtype=np.float32), _text(g["txt"][()]), where)
                        )
        except OSError as exc:
            raise cub.LayoutError(f"{self.path}: cannot be read as HDF5 ({exc})") from exc
        self._entries = {s: [] for s in cub.SPLITS}
        for key in sorted(per_key):
            rows = sorted(per_key[key], key=lambda r: r[0])
            shapes = {r[1].shape for r in rows}
            if len(shapes) > 1:
                odd = next(r for r in rows if r[1].shape != rows[0][1].shape)
                self.problems.append(
                    (odd[3], f"embeddings of shape {odd[1].shape}, but {rows[0][3]} has {rows[0][1].shape}")
                )
                emb = np.zeros((len(rows), 0), np.float32)
            else:
                emb = np.stack([r[1] for r in rows])
            first = rows[0][3]
            self._rows[key] = {"emb": emb, "txt": [r[2].strip() for r in rows], "file": first}
            self._entries[split_of[key]].append(Entry(key, first, f"{first.rpartition('_')[0]}_*"))
        counts = Counter(len(r["txt"]) for r in self._rows.values())
        if counts:
            self.captions_per_image = counts.most_common(1)[0][0]
        return self._entries

    def embeddings(self, split: str):
        return _stack([self._rows[e.key]["emb"] for e in self.entries()[split]])

    def check(self) -> None:
        self.entries()

    def captions(self, key: str) -> list[str]:
        self.entries()
        if key not in self._rows:
            raise cub.LayoutError(f"{self.path}: no group for image {key}")
        return [t for t in self._rows[key]["txt"] if t]

    def caption_source(self, key: str) -> str:
        self.entries()
        return self._rows[key]["file"] + " (txt)" if key in self._rows else HDF5_FILE

    def split_source(self, split: str) -> str:
        return f"{HDF5_FILE}:{split}"

    def embeddings_file(self, split: str) -> str:
        return f"{HDF5_FILE}:{split}"
