"""Generate a small stand-in for CUB-200-2011 + Reed's char-CNN-RNN embeddings, in the real layout.

``make_sample(cfg, out_dir)`` writes drawn birds under ``CUB_200_2011/`` (with CUB's text files and
tight bounding boxes), 10 captions per image under ``text_c10/``, and StackGAN-layout pickles under
``train/`` and ``test/`` (class-disjoint: the last ``round(n_classes * test_fraction)`` classes are
test).  ``gancls.data.raw`` reads it exactly as it reads the real data.

Every image has attributes (``VOCAB``): body, wing, head and beak colours from ``PALETTE``, a size,
a pose and a background.  The birds face right (``_draw_bird`` can draw them facing left): the
sample trains without Reed's random flips, and a free facing would be variation the text does not
explain, which a small generator averages into a blob.  A class has its own colours and size; an image changes each
colour with probability ``JITTER`` and draws pose and background freely, so text carries
per-image information.  Each caption names a random subset (2 to 5) of its image's attributes, and
its embedding is a fixed function of what it names -- the normalised sum of one fixed random 1024-d
vector per named ``(kind, value)`` (seeded by ``EMBED_SEED``, not by ``cfg.seed``), scaled to an
L2 norm of ``EMBED_NORM`` like real char-CNN-RNN vectors -- plus Gaussian noise of relative
size ``cfg.embedding_noise``.  ``mentions(caption)`` recovers what a caption names.  The output
is byte-identical for the same ``cfg`` and is written atomically (temporary sibling, then rename).
"""

from __future__ import annotations

import pickle
import shutil
import struct
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ..config import SampleParams

PALETTE = {
    "red": (200, 30, 30),
    "orange": (240, 140, 20),
    "yellow": (240, 220, 40),
    "green": (40, 150, 50),
    "blue": (40, 70, 200),
    "purple": (130, 50, 160),
    "brown": (120, 75, 35),
    "black": (20, 20, 20),
    "white": (245, 245, 245),
    "grey": (130, 130, 130),
}
COLOUR_KINDS = ("body", "wing", "head", "beak")
VOCAB = {
    **{kind: tuple(PALETTE) for kind in COLOUR_KINDS},
    "size": ("small", "medium", "large"),
    "pose": ("perching", "flying", "standing"),
    "background": ("sky", "foliage", "sand", "water", "branches"),
}
# How captions name things ({} = colour); mentions() searches for these phrases.
PART_WORDS = {"body": ("body", "belly"), "wing": ("wings",), "head": ("head", "crown"), "beak": ("beak", "bill")}
PHRASES = {
    "size": {"small": "small", "medium": "medium sized", "large": "large"},
    "pose": {"perching": "perched on a branch", "flying": "flying", "standing": "standing"},
    "background": {
        "sky": "against the sky",
        "foliage": "among green leaves",
        "sand": "on the sand",
        "water": "by the water",
        "branches": "among grey branches",
    },
}
TEMPLATES = (
    "this {size}bird has {parts}{ext}.",
    "a {size}bird with {parts}{ext}.",
    "the {size}bird has {parts}{ext}.",
    "this is a {size}bird with {parts}{ext}.",
    "a {size}bird that has {parts}{ext}.",
    "this particular {size}bird has {parts}{ext}.",
    "{size}bird with {parts}{ext}.",
    "this {size}bird is {plain}.",
)
SIZE_FRACTION = {"small": 0.5, "medium": 0.65, "large": 0.8}  # bird scale / shorter image side
JITTER = 0.5
EMBED_SEED, EMBED_DIM, EMBED_NORM = 20160517, 1024, 22.0
JPEG_QUALITY = 90
ADJECTIVES = (
    "Crimson",
    "Azure",
    "Golden",
    "Dusky",
    "Spotted",
    "Lesser",
    "Greater",
    "Northern",
    "Southern",
    "Painted",
    "Tufted",
    "Striped",
    "Royal",
    "Little",
    "Masked",
    "Rusty",
    "Pale",
    "Marsh",
    "Forest",
    "Coastal",
)
NOUNS = (
    "Finchling",
    "Warbler",
    "Sparrow",
    "Tanager",
    "Wren",
    "Vireo",
    "Flycatcher",
    "Grosbeak",
    "Bunting",
    "Oriole",
    "Thrush",
    "Kinglet",
    "Shrike",
    "Swallow",
    "Jay",
    "Pipit",
)


def _vectors() -> dict[tuple[str, str], np.ndarray]:
    rng = np.random.default_rng(EMBED_SEED)
    return {(kind, v): rng.standard_normal(EMBED_DIM) for kind, vals in VOCAB.items() for v in vals}


_VECTORS = _vectors()


def mentions(caption: str) -> set[tuple[str, str]]:
    """The (kind, value) attributes a generated caption names."""
    found = {(k, c) for k, words in PART_WORDS.items() for w in words for c in PALETTE if f"{c} {w}" in caption}
    return found | {
        (k, v)
        for k, table in PHRASES.items()
        for v, p in table.items()
        if (f"{p} bird" if k == "size" else p) in caption
    }


def _caption(rng: np.random.Generator, attrs: dict) -> tuple[str, list[tuple[str, str]]]:
    kinds = list(VOCAB)
    weights = np.array([2.0 if k in COLOUR_KINDS else 1.0 for k in kinds])
    chosen = set(rng.choice(kinds, size=int(rng.integers(2, 6)), replace=False, p=weights / weights.sum()))
    parts = []
    for k in COLOUR_KINDS:
        if k in chosen:
            c, word = attrs[k], PART_WORDS[k][rng.integers(len(PART_WORDS[k]))]
            article = "" if word == "wings" else ("an " if c[0] in "aeiou" else "a ")
            parts.append(f"{article}{c} {word}")
    parts_text = " and ".join([", ".join(parts[:-1]), parts[-1]] if len(parts) > 1 else parts)
    extras = [PHRASES[k][attrs[k]] for k in ("pose", "background") if k in chosen]
    size = PHRASES["size"][attrs["size"]] + " " if "size" in chosen else ""
    if parts:
        text = TEMPLATES[rng.integers(len(TEMPLATES) - 1)].format(
            size=size, parts=parts_text, ext="".join(", " + e for e in extras)
        )
    else:
        text = TEMPLATES[-1].format(size=size, plain=", ".join(extras))
    return text.strip(), [(k, attrs[k]) for k in VOCAB if k in chosen]


def _embed(rng: np.random.Generator, named: list[tuple[str, str]], noise: float) -> np.ndarray:
    v = np.sum([_VECTORS[n] for n in named], axis=0)
    v = v * (EMBED_NORM / np.linalg.norm(v))
    return v + rng.standard_normal(EMBED_DIM) * noise * EMBED_NORM / np.sqrt(EMBED_DIM)


def _smooth(rng: np.random.Generator, h: int, w: int, cells: int = 5) -> np.ndarray:
    grid = Image.fromarray((rng.random((cells, cells)) * 255).astype(np.uint8))
    return np.asarray(grid.resize((w, h), Image.BILINEAR), dtype=np.float32)[..., None] / 255 - 0.5


def _background(rng: np.random.Generator, kind: str, w: int, h: int) -> Image.Image:
    """A smooth scene (large-scale shading, no pixel noise): cheap for a small GAN to learn, so the
    sample's training budget goes into the bird and its colours."""
    y = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
    if kind == "sky":
        img = (1 - y) * np.array([90, 150, 230]) + y * np.array([190, 220, 250])
        img = img + np.clip(_smooth(rng, h, w, 4) * 2, 0, None) * 60
    elif kind == "foliage":
        img = np.array([50, 115, 40]) * (1 + 0.4 * _smooth(rng, h, w, 4))
    elif kind == "sand":
        img = np.array([215, 190, 135]) + _smooth(rng, h, w, 4) * 25
    elif kind == "water":
        ripple = np.sin(y * rng.uniform(8, 12) * np.pi + _smooth(rng, h, w, 3) * 2)
        img = np.array([40, 100, 150]) + ripple * 12
    else:  # grey branch scene
        img = np.array([165, 165, 160]) + _smooth(rng, h, w, 4) * 20
    out = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8) * np.ones((1, 1, 3), np.uint8))
    if kind == "branches":
        draw = ImageDraw.Draw(out)
        for _ in range(3):
            x0, y0, y1 = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(0, h)
            draw.line([(x0 - w, y0), (x0 + w, y1)], fill=(90, 90, 85), width=int(rng.integers(2, 6)))
    return out


# Bird geometry in units of its scale s, facing right, centred on the body; (top, bottom) per pose.
EXTENT_X = (-0.52, 0.76)
EXTENT_Y = {"perching": (-0.41, 0.31), "standing": (-0.41, 0.37), "flying": (-0.50, 0.30)}
LEG_COLOUR = (60, 50, 40)


def _draw_bird(draw: ImageDraw.ImageDraw, attrs: dict, cx: float, cy: float, s: float) -> None:
    sign = -1 if attrs.get("facing") == "left" else 1

    def pts(*xy):
        return [(cx + sign * x * s, cy + y * s) for x, y in xy]

    def oval(x, y, rx, ry, fill):
        draw.ellipse(
            [cx + sign * x * s - rx * s, cy + (y - ry) * s, cx + sign * x * s + rx * s, cy + (y + ry) * s], fill=fill
        )

    col = {k: PALETTE[attrs[k]] + (255,) for k in COLOUR_KINDS}
    width = max(1, round(0.03 * s))
    if attrs["pose"] == "flying":
        draw.line(pts((-0.08, 0.16), (-0.24, 0.30)), fill=LEG_COLOUR, width=width)
    else:
        low = 0.31 if attrs["pose"] == "perching" else 0.37
        for x in (0.0, 0.1):
            draw.line(pts((x, 0.12), (x, low)), fill=LEG_COLOUR, width=width)
            draw.line(pts((x, low), (x + 0.06, low)), fill=LEG_COLOUR, width=width)
    draw.polygon(pts((-0.22, -0.06), (-0.22, 0.06), (-0.52, 0.02), (-0.5, -0.1)), fill=col["wing"])
    oval(0, 0.01, 0.34, 0.23, col["body"])
    if attrs["pose"] == "flying":
        wing = ((0.14, -0.12), (-0.2, -0.1), (-0.4, -0.5), (0.06, -0.47))
    else:
        wing = ((0.16, -0.1), (-0.02, -0.19), (-0.3, -0.14), (-0.5, 0.0), (-0.22, 0.03), (0.04, -0.01))
    draw.polygon(pts(*wing), fill=col["wing"])
    oval(0.3, -0.2, 0.21, 0.21, col["head"])
    draw.polygon(pts((0.42, -0.33), (0.42, -0.07), (0.76, -0.2)), fill=col["beak"])  # a stout bill
    oval(0.34, -0.26, 0.045, 0.045, (255, 255, 255, 255))
    oval(0.345, -0.26, 0.025, 0.025, (0, 0, 0, 255))


def _render(rng: np.random.Generator, attrs: dict, w: int, h: int):
    """The RGB image and the bird's tight box (x, y, w, h)."""
    s = SIZE_FRACTION[attrs["size"]] * min(w, h)
    xs = sorted(v * (-1 if attrs.get("facing") == "left" else 1) for v in EXTENT_X)
    top, bottom = EXTENT_Y[attrs["pose"]]
    cx = rng.uniform(2 - xs[0] * s, max(2 - xs[0] * s, w - 2 - xs[1] * s))
    cy = rng.uniform(2 - top * s, max(2 - top * s, h - 2 - bottom * s))
    img = _background(rng, attrs["background"], w, h)
    if attrs["pose"] == "perching":
        foot = cy + 0.31 * s + max(1, round(0.03 * s))
        ImageDraw.Draw(img).line(
            [(0, foot + rng.uniform(-0.1, 0.1) * h), (w, foot)], fill=(95, 65, 40), width=max(2, round(0.05 * s))
        )
    layer = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    _draw_bird(ImageDraw.Draw(layer), attrs, cx, cy, s)
    x0, y0, x1, y1 = layer.getchannel("A").getbbox()
    img.paste(layer, (0, 0), layer)
    return img, (float(x0), float(y0), float(x1 - x0), float(y1 - y0))


class _Py2Pickler(pickle._Pickler):
    """Protocol 2 with bytes written as Python 2 ``str`` (BINSTRING), as in the original pickles.

    (Python 3 writes bytes under protocol 2 as a ``_codecs.encode`` call, which the safe reader
    rightly refuses; the real files hold the array data as a latin1 string instead.)
    """

    dispatch = dict(pickle._Pickler.dispatch)

    def _save_bytes(self, obj: bytes) -> None:
        n = len(obj)
        if n < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([n]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", n) + obj)
        self.memoize(obj)

    dispatch[bytes] = _save_bytes


def _write_pickle(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        _Py2Pickler(f, protocol=2).dump(obj)


def _image_attrs(rng: np.random.Generator, base: dict) -> dict:
    attrs = {k: str(rng.choice(VOCAB[k]) if rng.random() < JITTER else base[k]) for k in COLOUR_KINDS}
    attrs["size"] = str(base["size"] if rng.random() < 0.5 else rng.choice(VOCAB["size"]))
    attrs.update({k: str(rng.choice(VOCAB[k])) for k in ("pose", "background")})
    return attrs


def _write(cfg: SampleParams, root: Path, classes: list | None = None) -> None:
    """The sample of ``cfg`` under ``root``; each class's (folder name, base attributes, is test) is
    appended to ``classes`` when given."""
    rng = np.random.default_rng(int(cfg.seed))
    n_classes, per_class = int(cfg.n_classes), int(cfg.images_per_class)
    if n_classes < 2 or per_class < 1 or n_classes > len(ADJECTIVES) * len(NOUNS):
        raise ValueError(f"sample: need 2..{len(ADJECTIVES) * len(NOUNS)} classes, >= 1 image each")
    n_test = min(max(int(n_classes * float(cfg.test_fraction) + 0.5), 1), n_classes - 1)
    lo, hi = (int(v) for v in cfg.image_size)
    noise = float(cfg.embedding_noise)
    names = [
        f"{ADJECTIVES[i // len(NOUNS)]}_{NOUNS[i % len(NOUNS)]}"
        for i in rng.permutation(len(ADJECTIVES) * len(NOUNS))[:n_classes]
    ]
    class_dirs = [f"{c + 1:03d}.{name}" for c, name in enumerate(names)]
    n_images, n_train_images = n_classes * per_class, (n_classes - n_test) * per_class
    n_gray = max(1, int(n_images * float(cfg.grayscale_fraction) + 0.5))
    others = rng.choice(n_images, size=min(n_gray, n_images), replace=False)[: n_gray - 1]
    gray = {int(rng.integers(n_train_images)), *others.tolist()}  # at least one in train

    cub = root / "CUB_200_2011"
    tables = {t: [] for t in ("images", "image_class_labels", "train_test_split", "bounding_boxes")}
    split = {"train": ([], [], []), "test": ([], [], [])}  # filenames, class ids, embeddings
    for c, class_dir in enumerate(class_dirs):
        base = {k: rng.choice(VOCAB[k]) for k in (*COLOUR_KINDS, "size")}
        if classes is not None:
            classes.append((class_dir, base, c >= n_classes - n_test))
        official = set(rng.permutation(per_class)[: (per_class + 1) // 2].tolist())
        (cub / "images" / class_dir).mkdir(parents=True)
        (root / "text_c10" / class_dir).mkdir(parents=True)
        for i in range(per_class):
            image_id = c * per_class + i + 1
            attrs = _image_attrs(rng, base)
            w, h = (int(v) for v in rng.integers(lo, hi + 1, size=2))
            img, box = _render(rng, attrs, w, h)
            if image_id - 1 in gray:
                img = img.convert("L")
            stem = f"{names[c]}_{i + 1:04d}_{int(rng.integers(1, 800000))}"
            img.save(cub / "images" / class_dir / f"{stem}.jpg", "JPEG", quality=JPEG_QUALITY)
            captions = [_caption(rng, attrs) for _ in range(10)]
            (root / "text_c10" / class_dir / f"{stem}.txt").write_text(
                "".join(text + "\n" for text, _ in captions), encoding="utf-8"
            )
            names_, classes_, embs = split["test" if c >= n_classes - n_test else "train"]
            names_.append(f"{class_dir}/{stem}")
            classes_.append(c + 1)
            embs.append([_embed(rng, named, noise) for _, named in captions])
            tables["images"].append(f"{image_id} {class_dir}/{stem}.jpg")
            tables["image_class_labels"].append(f"{image_id} {c + 1}")
            tables["train_test_split"].append(f"{image_id} {int(i in official)}")
            tables["bounding_boxes"].append(f"{image_id} " + " ".join(f"{v:.1f}" for v in box))
    for name, lines in tables.items():
        (cub / f"{name}.txt").write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    (cub / "classes.txt").write_text("".join(f"{c + 1} {d}\n" for c, d in enumerate(class_dirs)), encoding="utf-8")
    for name, (names_, classes_, embs) in split.items():
        array = np.asarray(embs, dtype=np.float32).reshape(len(names_), 10, EMBED_DIM)
        _write_pickle(root / name / "char-CNN-RNN-embeddings.pickle", array)
        _write_pickle(root / name / "filenames.pickle", names_)
        _write_pickle(root / name / "class_info.pickle", classes_)


def more_test_images(cfg: SampleParams, n: int, seed: int, out_dir: str | Path) -> list[tuple[Path, tuple]]:
    """``n`` new images of the sample's test classes, written as JPEGs to ``out_dir`` with their boxes.

    The same class definitions as the sample of ``cfg`` (replayed), other random draws (``seed``):
    images the test split could have held, for the real-against-real floor of FID and KID.  Classes
    take turns; each image draws its attributes, size and greyscale as the sample's own do.
    """
    classes: list = []
    with tempfile.TemporaryDirectory() as tmp:
        _write(cfg, Path(tmp), classes)
    test = [(class_dir, base) for class_dir, base, is_test in classes if is_test]
    rng = np.random.default_rng([int(seed), int(cfg.seed)])
    lo, hi = (int(v) for v in cfg.image_size)
    out_dir = Path(out_dir)
    drawn = []
    for i in range(int(n)):
        class_dir, base = test[i % len(test)]
        attrs = _image_attrs(rng, base)
        w, h = (int(v) for v in rng.integers(lo, hi + 1, size=2))
        img, box = _render(rng, attrs, w, h)
        if rng.random() < float(cfg.grayscale_fraction):
            img = img.convert("L")
        path = out_dir / f"{class_dir}_{i:05d}.jpg"
        img.save(path, "JPEG", quality=JPEG_QUALITY)
        drawn.append((path, box))
    return drawn


def make_sample(cfg: SampleParams, out_dir: str | Path) -> Path:
    """Write the sample of ``cfg`` (params.yaml ``sample:``) to ``out_dir`` atomically."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=out_dir.name + ".tmp-", dir=out_dir.parent))
    old = None
    try:
        _write(cfg, tmp)
        if out_dir.exists():
            old = Path(tempfile.mkdtemp(prefix=out_dir.name + ".old-", dir=out_dir.parent))
            old.rmdir()
            out_dir.rename(old)
        tmp.rename(out_dir)
    except BaseException:
        if old is not None and not out_dir.exists():
            old.rename(out_dir)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return out_dir
