"""The published layouts of Reed's char-CNN-RNN embeddings beside ``CUB_200_2011/`` (REFERENCE.md §2).

``data.raw_dir`` holds CUB plus one of:

* ``stackgan`` -- ``{train,test}/char-CNN-RNN-embeddings.pickle`` (N x 10 x 1024), ``filenames.pickle``,
  ``class_info.pickle`` and captions in ``text_c10/``; pickles only through ``cub.safe_pickle_load``;
* ``reed_t7`` -- ``cub_icml/<class dir>/<image>.t7``, one Torch7 table per image with ``img`` (path under
  ``images/``), ``txt`` (10 x 1024) and ``char`` (character codes of the captions), and the class lists
  ``allclasses.txt`` + ``trainvalids.txt`` (or ``trainclasses.txt`` / ``valclasses.txt``) and
  ``testclasses.txt`` that give the split; read with ``torchfile`` (a plain parser of the binary format:
  it builds tables, strings, numbers and numpy arrays and runs nothing).  Captions come from
  ``text_c10/`` when it is there, otherwise from ``char`` decoded with Reed's alphabet;
* ``hdf5`` -- aelnouby's ``birds.hdf5``: groups ``train``/``valid``/``test`` (valid joins train), one
  subgroup ``<image>_<c>`` per (image, caption) with ``name``, ``class``, ``embeddings`` (1024), ``txt``
  and ``img``; read with h5py.  Its converter keeps 5 captions per image, so ``captions_per_image``
  is what most images have.

``detect_layout`` picks the layout from what is there (``data.layout: auto``) or checks a forced one.
``RawData`` joins a layout to CUB's records: ``gancls.cub`` is the entry point the stages call.
Problems that tie a layout file to no CUB image, or a class to no split, are collected in
``RawData.problems()`` as ``(file relative to the root, what)`` for validation to report.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import cub

LAYOUTS = ("stackgan", "reed_t7", "hdf5")
T7_DIR = "cub_icml"
HDF5_FILE = "birds.hdf5"
EMB_DIM = 1024
# Reed's char-CNN-RNN alphabet (icml2016 data/donkey_folder_txt.lua); code i is its i-th character
# (1-based), a repeated character keeps its last code, any other code is padding.
REED_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789-,;.!?:'\"/\\|_@#$%^&*~`+-=<>()[]{} "
_REED_CHARS = {code: ch for ch, code in {ch: i for i, ch in enumerate(REED_ALPHABET, 1)}.items()}


def detect_layout(root: Path, layout: str = "auto") -> str:
    """The layout of ``root``: the one asked for, else the only one present (StackGAN if none is)."""
    root = Path(root)
    if layout != "auto":
        if layout not in LAYOUTS:
            raise cub.LayoutError(f"data.layout must be auto or one of {', '.join(LAYOUTS)}, not {layout!r}")
        return layout
    markers = {"stackgan": root / "train" / cub.EMBEDDINGS_FILE, "reed_t7": root / T7_DIR, "hdf5": root / HDF5_FILE}
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
                keys, _ = cub.read_split(self.root, split)
                lst, emb = f"{split}/{cub.FILENAMES_FILE}", f"{split}/{cub.EMBEDDINGS_FILE}"
                self._entries[split] = [Entry(k, lst, emb) for k in keys]
        return self._entries

    def embeddings(self, split: str) -> np.ndarray:
        if split not in self._emb:
            path = self.root / split / cub.EMBEDDINGS_FILE
            data = cub.safe_pickle_load(path)
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
            keys, classes = cub.read_split(self.root, split)
            wrong = [(k, c) for k, c in zip(keys, classes) if k in labels and labels[k] != c]
            if wrong:
                k, c = wrong[0]
                self.problems.append(
                    (
                        f"{split}/{cub.CLASS_INFO_FILE}",
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
                        f"{split}/{cub.EMBEDDINGS_FILE}",
                        f"{len(emb)} embedding rows for {len(entries)} keys in {split}/{cub.FILENAMES_FILE}",
                    )
                )

    def captions(self, key: str) -> list[str]:
        return _text_c10(self.root, key)

    def caption_source(self, key: str) -> str:
        return f"{cub.TEXT_DIR}/{key}.txt"

    def split_source(self, split: str) -> str:
        return f"{split}/{cub.FILENAMES_FILE}"

    def embeddings_source(self, split: str) -> str:
        return f"{split}/{cub.EMBEDDINGS_FILE}"


def _text_c10(root: Path, key: str) -> list[str]:
    path = cub.caption_path(root, key)
    if not path.is_file():
        raise cub.LayoutError(f"{path}: file not found")
    return [c.strip() for c in path.read_text(encoding="utf-8").splitlines() if c.strip()]


def decode_reed_chars(codes: np.ndarray, n_captions: int) -> list[str]:
    """Captions from a ``char`` tensor (length x captions, or captions x length) of Reed's codes."""
    codes = np.asarray(codes)
    if codes.ndim == 1:
        codes = codes[:, None]
    if codes.ndim != 2:
        return []
    if codes.shape[1] != n_captions and codes.shape[0] == n_captions:
        codes = codes.T  # captions as rows
    return ["".join(_REED_CHARS.get(int(c), "") for c in codes[:, j]).strip() for j in range(codes.shape[1])]


class ReedT7Reader:
    name = "reed_t7"
    captions_per_image = 10

    def __init__(self, root: Path):
        self.root = root
        self.dir = root / T7_DIR
        self.problems: list[tuple[str, str]] = []
        self._entries: dict[str, list[Entry]] | None = None
        self._rows: dict[str, dict] = {}  # key -> {"txt", "char", "file"}
        self._lists = ""

    def _names(self, name: str) -> list[str] | None:
        path = self.dir / name
        if not path.is_file():
            return None
        return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]

    def _by_ids(self, name: str, allclasses: list[str] | None) -> list[str] | None:
        ids = self._names(name)
        if ids is None:
            return None
        if allclasses is None:
            raise cub.LayoutError(f"{self.dir / 'allclasses.txt'}: file not found (needed by {name})")
        out = []
        for lineno, text in enumerate(ids, 1):
            try:
                out.append(allclasses[int(text) - 1])
                if int(text) < 1:
                    raise IndexError
            except (ValueError, IndexError):
                raise cub.LayoutError(
                    f"{self.dir / name}:{lineno}: {text!r} is not a class id of allclasses.txt (1..{len(allclasses)})"
                ) from None
        return out

    def class_split(self) -> dict[str, set[str]]:
        """The split's classes from Reed's class lists (train = train + val)."""
        allclasses = self._names("allclasses.txt")
        found: dict[str, dict[str, list[str]]] = {"train": {}, "test": {}}
        for split, files in (
            ("train", ("trainvalids.txt", "trainvalclasses.txt", "trainclasses.txt", "valclasses.txt")),
            ("test", ("testids.txt", "testclasses.txt")),
        ):
            for name in files:
                names = self._by_ids(name, allclasses) if name.endswith("ids.txt") else self._names(name)
                if names is not None:
                    found[split][name] = names
        if not found["train"]:
            raise cub.LayoutError(
                f"{self.dir / 'trainvalids.txt'}: file not found "
                "(nor trainvalclasses.txt, trainclasses.txt, valclasses.txt)"
            )
        if not found["test"]:
            raise cub.LayoutError(f"{self.dir / 'testclasses.txt'}: file not found")
        self._lists = " / ".join(f"{T7_DIR}/{n}" for s in found.values() for n in s)
        split = {s: {c for names in lists.values() for c in names} for s, lists in found.items()}
        for c in sorted(split["train"] & split["test"]):
            self.problems.append(
                (f"{T7_DIR}/{next(iter(found['test']))}", f"class {c} is in both the train and the test class lists")
            )
        return split

    def _load(self, path: Path) -> dict:
        import torchfile  # parses data only: no pickle, no code

        try:
            obj = torchfile.load(str(path))
        except Exception as exc:  # noqa: BLE001 - any failure is a bad file
            raise cub.LayoutError(f"{path}: cannot be read as a Torch7 file ({exc})") from exc
        get = (lambda k: obj.get(k.encode(), obj.get(k))) if isinstance(obj, dict) else None
        if get is None or get("img") is None or not isinstance(get("txt"), np.ndarray):
            raise cub.LayoutError(f"{path}: expected a table with img (path) and txt (tensor)")
        char = get("char")
        return {
            "img": _text(get("img")),
            "txt": np.array(get("txt"), dtype=np.float32),
            "char": None if not isinstance(char, np.ndarray) else np.array(char),
        }

    def entries(self) -> dict[str, list[Entry]]:
        if self._entries is not None:
            return self._entries
        if not self.dir.is_dir():
            raise cub.LayoutError(f"{self.dir}: folder not found")
        split_of = self.class_split()
        self._entries = {s: [] for s in cub.SPLITS}
        folders = sorted(p for p in self.dir.iterdir() if p.is_dir())
        for c in sorted(set().union(*split_of.values()) - {p.name for p in folders}):
            self.problems.append((f"{T7_DIR}/{c}", f"class {c} of the class lists has no folder"))
        for folder in folders:
            splits = [s for s in cub.SPLITS if folder.name in split_of[s]]
            if not splits:
                self.problems.append(
                    (f"{T7_DIR}/{folder.name}", f"class {folder.name} is in none of the class lists ({self._lists})")
                )
                continue
            for path in sorted(folder.glob("*.t7")):
                rel = str(path.relative_to(self.root))
                row = self._load(path)
                img = row["img"]
                key = img[:-4] if img.lower().endswith(".jpg") else img.rsplit(".", 1)[0]
                if key in self._rows:
                    self.problems.append((rel, f"image {img} is also in {self._rows[key]['file']}"))
                    continue
                self._rows[key] = {**row, "file": rel}
                self._entries[splits[0]].append(Entry(key, rel, rel))
        return self._entries

    def embeddings(self, split: str):
        return _stack([self._rows[e.key]["txt"] for e in self.entries()[split]])

    def check(self) -> None:
        self.entries()

    def captions(self, key: str) -> list[str]:
        if cub.caption_path(self.root, key).is_file():
            return _text_c10(self.root, key)
        row = self._rows.get(key)
        if row is None:
            path = self.dir / f"{key}.t7"  # Reed's files are named after the image
            if not path.is_file() and self._entries is None:
                self.entries()
                row = self._rows.get(key)
            if row is None:
                if not path.is_file():
                    raise cub.LayoutError(f"{cub.caption_path(self.root, key)}: file not found (nor {T7_DIR}/{key}.t7)")
                row = self._load(path)
        if row["char"] is None:
            raise cub.LayoutError(f"{self.dir / (key + '.t7')}: no char tensor and no {cub.TEXT_DIR}/{key}.txt")
        return [c for c in decode_reed_chars(row["char"], len(row["txt"])) if c]

    def caption_source(self, key: str) -> str:
        if cub.caption_path(self.root, key).is_file() or key not in self._rows:
            return f"{cub.TEXT_DIR}/{key}.txt"
        return self._rows[key]["file"]

    def split_source(self, split: str) -> str:
        return f"{T7_DIR}/" + ("testclasses.txt" if split == "test" else "trainvalids.txt")

    def embeddings_source(self, split: str) -> str:
        return f"{T7_DIR}/ ({split} classes)"


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

    def embeddings_source(self, split: str) -> str:
        return f"{HDF5_FILE}:{split}"


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

    def embedding_source(self, key: str, split: str | None = None) -> str:
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

    def embeddings_source(self, split: str) -> str:
        """The file (or group) that holds the split's embeddings, for messages."""
        return self.reader.embeddings_source(split)

    def problems(self) -> list[tuple[str, str]]:
        """(file relative to the root, what) for every layout entry that does not fit CUB or the split."""
        self.index()
        self.reader.check()
        return self._problems + self.reader.problems
