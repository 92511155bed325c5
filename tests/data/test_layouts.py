"""Every published embedding layout beside CUB_200_2011/ (REFERENCE.md §2) reads through gancls.data.raw.

Each layout is written here from the tiny generated sample (StackGAN layout): Reed's ``cub_icml/``
Torch7 files with a minimal writer of the Torch7 binary format, and aelnouby's ``birds.hdf5`` with
h5py.  Each goes through validate -> prepare -> train (one epoch); mismatches with CUB's files are
reported by validate naming the file.
"""

import io
import os
import pickle
import shutil
import struct

import h5py
import numpy as np
import pytest

from gancls.config import parse_params
from gancls.data import cub, raw
from gancls.data.cub_icml import decode_reed_chars
from gancls.data.layouts import EMBEDDINGS_FILE, FILENAMES_FILE, detect_layout
from gancls.data.prepare import prepare
from gancls.data.synthetic import make_sample
from gancls.data.validate import ValidationFailed, validate_prepared, validate_raw
from gancls.models.alphabet import ALPHABET as REED_ALPHABET

from conftest import TINY, tiny_run_params

# --- a minimal Torch7 binary writer (the subset Reed's files use) ---------------------------------

T7_NIL, T7_NUMBER, T7_STRING, T7_TABLE, T7_TORCH = 0, 1, 2, 3, 4
T7_TENSOR = {np.dtype(np.float32): "Float", np.dtype(np.uint8): "Byte"}


class T7Writer:
    """torch.save's binary format on 64-bit Linux: int32 tags and lengths, int64 longs, float64 numbers."""

    def __init__(self):
        self.out = io.BytesIO()
        self.refs = 0

    def _int(self, v):
        self.out.write(struct.pack("<i", v))

    def _long(self, v):
        self.out.write(struct.pack("<q", v))

    def _raw_string(self, s: bytes):
        self._int(len(s))
        self.out.write(s)

    def _ref(self):
        self.refs += 1
        self._int(self.refs)

    def _torch_header(self, class_name: str):
        self._int(T7_TORCH)
        self._ref()
        self._raw_string(b"V 1")
        self._raw_string(class_name.encode())

    def obj(self, v):
        if v is None:
            self._int(T7_NIL)
        elif isinstance(v, (int, float)):
            self._int(T7_NUMBER)
            self.out.write(struct.pack("<d", float(v)))
        elif isinstance(v, str):
            self._int(T7_STRING)
            self._raw_string(v.encode())
        elif isinstance(v, dict):
            self._int(T7_TABLE)
            self._ref()
            self._int(len(v))
            for k, x in v.items():
                self.obj(k)
                self.obj(x)
        elif isinstance(v, np.ndarray):  # a contiguous Tensor over its own Storage
            kind = T7_TENSOR[v.dtype]
            v = np.ascontiguousarray(v)
            self._torch_header(f"torch.{kind}Tensor")
            self._int(v.ndim)
            for n in v.shape:
                self._long(n)
            for s in v.strides:
                self._long(s // v.itemsize)
            self._long(1)  # storage offset, 1-based
            self._torch_header(f"torch.{kind}Storage")
            self._long(v.size)
            self.out.write(v.tobytes())
        else:
            raise TypeError(type(v))
        return self

    def save(self, path):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(self.out.getvalue())


def reed_chars(captions, length=201) -> np.ndarray:
    """Captions as Reed's char codes, length x captions (ByteTensor), 0 = padding."""
    code = {ch: i for i, ch in enumerate(REED_ALPHABET, 1)}
    out = np.zeros((length, len(captions)), np.uint8)
    for j, c in enumerate(captions):
        codes = [code[ch] for ch in c.lower() if ch in code][:length]
        out[: len(codes), j] = codes
    return out


# --- the three layouts, from one tiny sample ------------------------------------------------------


def _sample_data(root):
    records = raw.load_index(root, "stackgan")
    emb = {s: raw.load_embeddings(root, s, "stackgan") for s in cub.SPLITS}
    return records, emb


def _with_cub(sample, dest):
    dest.mkdir(parents=True)
    shutil.copytree(sample / cub.CUB_DIR, dest / cub.CUB_DIR)
    return dest


def write_reed_t7(sample, dest):
    """cub_icml/<class>/<image>.t7 with img, txt (10 x 1024 float), char (201 x 10 byte); class lists.

    No text_c10/: the captions must come from the char tensors."""
    _with_cub(sample, dest)
    records, emb = _sample_data(sample)
    t7 = dest / "cub_icml"
    for r in records:
        info = {
            "char": reed_chars(raw.load_captions(sample, r.key)),
            "img": f"{r.key}.jpg",
            "txt": emb[r.split][r.emb_index],
        }
        T7Writer().obj(info).save(t7 / f"{r.key}.t7")
    classes = [line.split()[1] for line in (sample / cub.CUB_DIR / "classes.txt").read_text().splitlines()]
    (t7 / "allclasses.txt").write_text("\n".join(classes) + "\n")
    train = sorted({r.class_name for r in records if r.split == "train"})
    test = sorted({r.class_name for r in records if r.split == "test"})
    (t7 / "trainvalids.txt").write_text("".join(f"{classes.index(c) + 1}\n" for c in train))
    (t7 / "testclasses.txt").write_text("".join(f"{c}\n" for c in test))
    return dest


def write_hdf5(sample, dest):
    """aelnouby's birds.hdf5: train/valid/test, one group <image>_<c> per (image, caption), 5 per image
    drawn with replacement as its converter does (captions keep the newline of readlines)."""
    _with_cub(sample, dest)
    records, emb = _sample_data(sample)
    train_classes = sorted({r.class_name for r in records if r.split == "train"})
    valid = set(train_classes[-2:])
    rng = np.random.default_rng(0)
    text = h5py.special_dtype(vlen=str)
    with h5py.File(dest / "birds.hdf5", "w") as f:
        groups = {name: f.create_group(name) for name in ("train", "valid", "test")}
        for r in records:
            g = groups["test" if r.split == "test" else "valid" if r.class_name in valid else "train"]
            name = r.key.split("/")[1]
            lines = [c + "\n" for c in raw.load_captions(sample, r.key)]
            img = r.path.read_bytes()
            for c, i in enumerate(rng.choice(range(10), 5)):
                ex = g.create_group(f"{name}_{c}")
                ex.create_dataset("name", data=name)
                ex.create_dataset("img", data=np.void(img))
                ex.create_dataset("embeddings", data=emb[r.split][r.emb_index][i])
                ex.create_dataset("class", data=r.class_name)
                ex.create_dataset("txt", data=np.array(lines)[i].astype(object), dtype=text)
    return dest


@pytest.fixture(scope="session")
def layouts(tmp_path_factory):
    """{layout: raw root} for the same tiny sample in each of the three layouts."""
    base = tmp_path_factory.mktemp("layouts")
    params = parse_params_tiny()
    sample = make_sample(params.sample, base / "stackgan")
    return {
        "stackgan": sample,
        "reed_t7": write_reed_t7(sample, base / "reed_t7"),
        "hdf5": write_hdf5(sample, base / "hdf5"),
    }


def parse_params_tiny():
    import yaml

    from conftest import ROOT, merge

    return parse_params(merge(yaml.safe_load((ROOT / "params.yaml").read_text()), TINY))


@pytest.fixture
def copy_of(layouts, tmp_path):
    def make(layout):
        return shutil.copytree(layouts[layout], tmp_path / layout)

    return make


def failing(root, tmp_path) -> str:
    params = parse_params_tiny()
    with pytest.raises(ValidationFailed) as info:
        validate_raw(root, params.validation, "sample", tmp_path / "report")
    return str(info.value)


# --- reading ----------------------------------------------------------------------------------------


def test_detects_each_layout_and_refuses_two(layouts, tmp_path):
    for name, root in layouts.items():
        assert detect_layout(root) == name
        assert raw.open_raw(root).layout == name
    both = shutil.copytree(layouts["reed_t7"], tmp_path / "both")
    shutil.copytree(layouts["stackgan"] / "train", both / "train")
    with pytest.raises(cub.LayoutError, match="several embedding layouts.*set data.layout"):
        detect_layout(both)
    assert detect_layout(both, "reed_t7") == "reed_t7"
    assert [r.split for r in raw.load_index(both, "reed_t7")] == [r.split for r in raw.load_index(layouts["stackgan"])]
    with pytest.raises(cub.LayoutError, match="data.layout must be"):
        detect_layout(both, "lmdb")


def test_every_layout_gives_the_same_records_embeddings_and_captions(layouts):
    base = {r.key: r for r in raw.load_index(layouts["stackgan"])}
    for name in ("reed_t7", "hdf5"):
        root = layouts[name]
        recs = raw.load_index(root)
        assert [r.key for r in recs] == list(base)
        for r in recs:
            b = base[r.key]
            assert (r.image_id, r.class_id, r.class_name, r.bbox, r.split) == (
                b.image_id,
                b.class_id,
                b.class_name,
                b.bbox,
                b.split,
            )
            assert r.path == root / cub.CUB_DIR / "images" / f"{r.key}.jpg"
    t7, ref = layouts["reed_t7"], layouts["stackgan"]
    for split in cub.SPLITS:
        recs = [r for r in raw.load_index(t7) if r.split == split]
        ref_emb, emb = raw.load_embeddings(ref, split), raw.load_embeddings(t7, split)
        assert emb.shape == ref_emb.shape and emb.dtype == np.float32
        for r in recs:
            assert np.array_equal(emb[r.emb_index], ref_emb[base[r.key].emb_index])
    key = next(iter(base))
    assert raw.load_captions(t7, key) == raw.load_captions(ref, key)  # decoded from char
    h5 = raw.open_raw(layouts["hdf5"])
    assert h5.captions_per_image == 5
    caps = h5.captions(key)
    assert len(caps) == 5 and set(caps) <= set(raw.load_captions(ref, key))
    r = next(x for x in h5.index() if x.key == key)
    emb = h5.embeddings(r.split)[r.emb_index]
    ref_rows = raw.load_embeddings(ref, r.split)[base[key].emb_index]
    assert emb.shape == (5, 1024)
    for c, row in zip(caps, emb):  # each embedding is the one of its caption
        assert np.array_equal(row, ref_rows[raw.load_captions(ref, key).index(c)])


def test_reed_char_codes_decode_either_orientation():
    codes = reed_chars(["a red-bird, small.", "b"])
    assert decode_reed_chars(codes, 2) == ["a red-bird, small.", "b"]
    assert decode_reed_chars(codes.T.copy(), 2) == ["a red-bird, small.", "b"]


def test_t7_loading_runs_no_code(tmp_path, copy_of):
    root = copy_of("reed_t7")
    victim = next((root / "cub_icml").glob("*/*.t7"))
    # a Lua function (bytecode) and an unknown torch class: torchfile keeps them as data
    w = T7Writer()
    w._int(3), w._ref(), w._int(1), w.obj("img")
    w._int(6), w._ref(), w._raw_string(b"\x1bLua...os.execute('touch pwned')"), w.obj(None)
    w.save(victim)
    with pytest.raises(cub.LayoutError, match=f"{victim.name}: expected a table with img"):
        raw.load_index(root)
    victim.write_bytes(b"\x80\x04garbage")  # a pickle is not a Torch7 file
    with pytest.raises(cub.LayoutError, match=f"{victim.name}: cannot be read as a Torch7 file"):
        raw.load_index(root)
    assert not (tmp_path / "pwned").exists() and not os.path.exists("pwned")


# --- validate -> prepare -> train, per layout ---------------------------------------------------------


@pytest.fixture
def one_thread():
    """Train on one CPU thread: on shared, busy cores two OpenMP threads can be many times slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.slow  # trains a GAN for an epoch on each layout
@pytest.mark.parametrize("layout", ["stackgan", "reed_t7", "hdf5"])
def test_layout_runs_validate_prepare_train(layouts, layout, tmp_path, one_thread):
    from gancls.training.train import train

    root = layouts[layout]
    params = parse_params_tiny()
    summary = validate_raw(root, params.validation, "sample", tmp_path / "validation", layout=layout)
    assert summary["success"] and summary["layout"] == layout
    assert (summary["n_images"], summary["n_train"], summary["n_test"]) == (32, 24, 8)
    out = tmp_path / "birds.h5"
    counts = prepare(
        root,
        out,
        params.prepare,
        "sample",
        layout="auto",
        check=lambda p: validate_prepared(p, params.validation, tmp_path / "prepared-report"),
    )
    assert counts == {"train": 24, "test": 8}
    n_cap = 5 if layout == "hdf5" else 10
    with h5py.File(out, "r") as h5:
        assert h5.attrs["layout"] == layout and h5.attrs["captions_per_image"] == n_cap
        assert h5["train/embeddings"].shape == (24, n_cap, 1024)
        assert all(c for c in h5["test/captions"].asstr()[()].ravel())
    run_params, _ = tiny_run_params(out, tmp_path / "run", epochs=1)
    result = train(out, run_params)
    assert result and (tmp_path / "run" / "model").is_dir()


# --- mismatches, reported naming the file -----------------------------------------------------------


def test_stackgan_row_count_disagreeing_with_filenames_names_the_pickle(copy_of, tmp_path):
    root = copy_of("stackgan")
    emb = raw.load_embeddings(root, "test")
    with open(root / "test" / EMBEDDINGS_FILE, "wb") as f:
        pickle.dump(np.concatenate([emb, emb[:1]]), f, protocol=2)
    msg = failing(root, tmp_path)
    assert f"test/{EMBEDDINGS_FILE} (9 embedding rows for 8 keys in test/{FILENAMES_FILE})" in msg


def test_reed_t7_mismatches_name_the_t7_file_and_class(copy_of, tmp_path):
    root = copy_of("reed_t7")
    t7 = root / "cub_icml"
    records = raw.load_index(root)
    train = [r for r in records if r.split == "train"]
    # an image that CUB does not have
    orphan = t7 / f"{train[0].key}.t7"
    T7Writer().obj(
        {"img": "nowhere/Nobird_0001.jpg", "txt": np.ones((10, 1024), np.float32), "char": reed_chars(["x"] * 10)}
    ).save(orphan)
    # an embedding of the wrong size
    small = t7 / f"{train[5].key}.t7"
    T7Writer().obj(
        {"img": f"{train[5].key}.jpg", "txt": np.ones((10, 512), np.float32), "char": reed_chars(["a bird."] * 10)}
    ).save(small)
    # a test class dropped from the class lists
    test_class = next(r.class_name for r in records if r.split == "test")
    lists = t7 / "testclasses.txt"
    lists.write_text("".join(f"{c}\n" for c in lists.read_text().split() if c != test_class))
    msg = failing(root, tmp_path)
    assert f"cub_icml/{train[0].key}.t7 (image nowhere/Nobird_0001 is not in CUB_200_2011/images.txt)" in msg
    assert f"cub_icml/{train[5].key}.t7 gives shape 10x512, not 10x1024" in msg
    assert f"cub_icml/{test_class} (class {test_class} is in none of the class lists" in msg
    assert f"key {train[0].key} is in neither split of reed_t7" in msg  # its .t7 now names another image


def test_hdf5_missing_image_and_caption_count_name_the_files(copy_of, tmp_path):
    root = copy_of("hdf5")
    records = raw.load_index(root)
    gone = records[3]
    gone.path.unlink()
    short = next(r for r in records if r.split == "test")
    stem = short.key.split("/")[1]
    with h5py.File(root / "birds.hdf5", "a") as f:
        del f["test"][f"{stem}_4"]
    msg = failing(root, tmp_path)
    assert f"{os.path.relpath(gone.path, root)}: does not decode (file not found)" in msg
    assert f"birds.hdf5:test/{stem}_0 (txt) has 4 captions, not 5" in msg
    assert f"birds.hdf5:test/{stem}_* gives shape 4x1024, not 5x1024" in msg
