"""Reed's own layout of the embeddings: ``cub_icml/<class dir>/<image>.t7`` (REFERENCE.md §2).

One Torch7 table per image with ``img`` (path under ``images/``), ``txt`` (10 x 1024) and ``char``
(character codes of the captions), and the class lists ``allclasses.txt`` + ``trainvalids.txt`` (or
``trainclasses.txt`` / ``valclasses.txt``) and ``testclasses.txt`` that give the split; read with
``torchfile`` (a plain parser of the binary format: it builds tables, strings, numbers and numpy
arrays and runs nothing).  Captions come from ``text_c10/`` when it is there, otherwise from
``char`` decoded with Reed's alphabet (``decode_reed_chars``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..models.alphabet import CHAR as _REED_CHARS
from . import cub
from .layouts import T7_DIR, Entry, _stack, _text, _text_c10


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

    def embeddings_file(self, split: str) -> str:
        return f"{T7_DIR}/ ({split} classes)"
