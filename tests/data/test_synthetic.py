"""The generated sample: deterministic, atomic, in the CUB + StackGAN layout that gancls.data.cub reads,
and with images and embeddings that carry what the captions say."""

from __future__ import annotations

import hashlib
import itertools
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gancls.data import cub, layouts, raw, synthetic

from conftest import section

CFG = section(
    "sample",
    n_classes=8,
    images_per_class=4,
    test_fraction=0.25,
    grayscale_fraction=0.02,
    image_size=[96, 128],
    embedding_noise=0.05,
    seed=0,
)
N_TEST_CLASSES = 2  # round(8 * 0.25)


def tree_hashes(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sample") / "sample"
    assert synthetic.make_sample(CFG, out) == out
    return out


@pytest.fixture(scope="module")
def records(root):
    return raw.load_index(root)


def test_deterministic(tmp_path, root):
    again = synthetic.make_sample(CFG, tmp_path / "again")
    first = tree_hashes(root)
    assert len(first) == 2 * CFG.n_classes * CFG.images_per_class + 5 + 6  # + tables, pickles
    assert tree_hashes(again) == first
    other = synthetic.make_sample(CFG.model_copy(update={"seed": 1}), tmp_path / "other")
    assert tree_hashes(other) != first


def test_layout_read_by_cub(root, records):
    n = CFG.n_classes * CFG.images_per_class
    assert [r.image_id for r in records] == list(range(1, n + 1))
    assert all(r.split in cub.SPLITS for r in records)
    by_key = {r.key: r for r in records}
    seen = []
    for split in cub.SPLITS:
        keys, class_ids = layouts.read_stackgan_split(root, split)
        assert len(keys) == len(raw.load_embeddings(root, split))
        for i, (key, class_id) in enumerate(zip(keys, class_ids)):
            rec = by_key[key]
            assert (rec.split, rec.emb_index, rec.class_id) == (split, i, class_id)
            assert rec.class_name == key.split("/")[0] and rec.path.stem == key.split("/")[1]
        seen += keys
    assert sorted(seen) == sorted(by_key)  # every image in exactly one split
    for rec in records:
        name = rec.class_name.split(".", 1)[1]
        assert rec.class_name == f"{rec.class_id:03d}.{name}"
        assert rec.path.name.startswith(name + "_") and rec.path.suffix == ".jpg"
        with Image.open(rec.path) as img:
            w, h = img.size
        assert 96 <= w <= 128 and 96 <= h <= 128
        x, y, bw, bh = rec.bbox
        assert 0 <= x and 0 <= y and bw > 10 and bh > 10 and x + bw <= w and y + bh <= h
    for class_id in {r.class_id for r in records}:  # CUB's own split: about half of each class
        flags = [r.official_train for r in records if r.class_id == class_id]
        assert sum(flags) == (len(flags) + 1) // 2


def test_split_is_class_disjoint(root, records):
    train = set(layouts.read_stackgan_split(root, "train")[1])
    test = set(layouts.read_stackgan_split(root, "test")[1])
    assert not train & test
    n = CFG.n_classes
    assert test == set(range(n - N_TEST_CLASSES + 1, n + 1))
    assert train == set(range(1, n - N_TEST_CLASSES + 1))


def test_grayscale_images(records):
    modes = {r.key: Image.open(r.path).mode for r in records}
    gray = [r for r in records if modes[r.key] == "L"]
    assert gray and any(r.split == "train" for r in gray)
    assert sum(m == "RGB" for m in modes.values()) > len(records) // 2


def test_embeddings(root):
    for split in cub.SPLITS:
        emb = raw.load_embeddings(root, split)
        n = len(layouts.read_stackgan_split(root, split)[0])
        assert emb.dtype == np.float32 and emb.shape == (n, 10, 1024) and n > 0
        assert np.isfinite(emb).all()
        norms = np.linalg.norm(emb, axis=-1)
        assert 15 < norms.min() and norms.max() < 30  # char-CNN-RNN scale
        assert np.mean(np.abs(emb) < 3) > 0.99


def test_captions(root, records):
    for rec in records:
        lines = cub.caption_path(root, rec.key).read_text(encoding="utf-8").splitlines()
        assert len(lines) == 10 and raw.load_captions(root, rec.key) == lines
        named = [synthetic.mentions(line) for line in lines]
        assert all(len(m) >= 2 and line == line.lower() for m, line in zip(named, lines))
        for kind in synthetic.VOCAB:  # all captions of an image agree on each attribute
            assert len({v for m in named for k, v in m if k == kind}) <= 1
    assert len({line for r in records for line in raw.load_captions(root, r.key)}) > 100


def test_images_show_named_body_colour(root, records):
    names = list(synthetic.PALETTE)
    palette = np.array([synthetic.PALETTE[n] for n in names], dtype=float)
    checked = 0
    for rec in records:
        img = Image.open(rec.path)
        bodies = {v for c in raw.load_captions(root, rec.key) for k, v in synthetic.mentions(c) if k == "body"}
        if img.mode != "RGB" or not bodies:
            continue
        x, y, w, h = rec.bbox
        # the belly: below the wing, behind the head (the birds face right; the box spans tail to bill tip)
        cx, cy, d = int(x + 0.38 * w), int(y + 0.72 * h), max(1, int(0.05 * min(w, h)))
        pixels = np.asarray(img, dtype=float)[cy - d : cy + d + 1, cx - d : cx + d + 1].reshape(-1, 3)
        nearest = names[int(np.argmin(((palette - np.median(pixels, 0)) ** 2).sum(1)))]
        assert {nearest} == bodies, rec.key
        checked += 1
    assert checked >= len(records) // 2


def test_box_is_tight(monkeypatch):
    flat = (10, 200, 10)
    monkeypatch.setattr(synthetic, "_background", lambda rng, kind, w, h: Image.new("RGB", (w, h), flat))
    attrs = {
        "body": "red",
        "wing": "blue",
        "head": "yellow",
        "beak": "orange",
        "size": "medium",
        "pose": "flying",
        "facing": "left",
        "background": "sky",
    }
    img, (x, y, w, h) = synthetic._render(np.random.default_rng(0), attrs, 120, 100)
    a = np.asarray(img)
    bird = (a != flat).any(axis=-1)
    ys, xs = np.nonzero(bird)
    assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (x, y, x + w, y + h)


def test_embeddings_follow_named_attributes(root, records):
    named, vecs = [], []
    for rec in records[:12]:
        emb = raw.load_embeddings(root, rec.split)[rec.emb_index]
        for line, vec in zip(raw.load_captions(root, rec.key), emb):
            named.append(frozenset(synthetic.mentions(line)))
            vecs.append(vec / np.linalg.norm(vec))
    same, disjoint, overlap = [], [], []
    for i, j in itertools.combinations(range(len(vecs)), 2):
        cos = float(vecs[i] @ vecs[j])
        (same if named[i] == named[j] else overlap if named[i] & named[j] else disjoint).append(cos)
    assert same and overlap and disjoint
    assert min(same) > 0.95 > max(overlap)
    assert min(overlap) > max(disjoint) - 0.1 and np.mean(overlap) > np.mean(disjoint) + 0.2
    assert abs(np.mean(disjoint)) < 0.1


def test_failure_keeps_existing_sample(tmp_path, monkeypatch):
    out = synthetic.make_sample(CFG, tmp_path / "out")
    (out / "stale.txt").write_text("old")
    before = tree_hashes(out)
    calls = []

    def boom(*args):
        calls.append(args)
        if len(calls) == 5:
            raise RuntimeError("disk full")
        return real(*args)

    real = synthetic._render
    monkeypatch.setattr(synthetic, "_render", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        synthetic.make_sample(CFG.model_copy(update={"seed": 3}), out)
    assert tree_hashes(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]

    monkeypatch.setattr(synthetic, "_render", real)  # a successful rerun replaces it whole
    synthetic.make_sample(CFG, out)
    assert not (out / "stale.txt").exists() and len(tree_hashes(out)) == len(before) - 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_more_test_images_are_other_draws_of_the_test_classes(root, tmp_path):
    """The floor's other real images (gancls.evaluation.floor): the sample's test classes in turn, none an
    image of the sample, the same bytes for a seed and others for another seed, boxes inside the image."""
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir(), (tmp_path / "c").mkdir()
    drawn = synthetic.more_test_images(CFG, 5, 7, tmp_path / "a")
    classes = (root / "CUB_200_2011/classes.txt").read_text().split()[1::2]
    test_classes = classes[-N_TEST_CLASSES:]
    assert [p.name.rsplit("_", 1)[0] for p, _ in drawn] == [test_classes[i % N_TEST_CLASSES] for i in range(5)]
    sha = lambda p: hashlib.sha256(p.read_bytes()).hexdigest()
    assert not {sha(p) for p, _ in drawn} & set(tree_hashes(root).values())
    again = synthetic.more_test_images(CFG, 5, 7, tmp_path / "b")
    assert [sha(p) for p, _ in again] == [sha(p) for p, _ in drawn]
    other = synthetic.more_test_images(CFG, 5, 8, tmp_path / "c")
    assert not {sha(p) for p, _ in other} & {sha(p) for p, _ in drawn}
    for path, (x, y, w, h) in drawn:
        width, height = Image.open(path).size
        assert 0 <= x and 0 <= y and x + w <= width and y + h <= height and w > 0 and h > 0
