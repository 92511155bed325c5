"""Great Expectations validation of the raw CUB-layout data and of the prepared HDF5 file."""

import json
import os
import pickle
import shutil

import h5py
import numpy as np
import pytest

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

from gancls.data import cub, layouts  # noqa: E402
from gancls.data.raw import load_embeddings, load_index
from gancls.data.synthetic import make_sample  # noqa: E402
from gancls.data.validate import ValidationFailed, build_manifest, validate_prepared, validate_raw  # noqa: E402

from conftest import section  # noqa: E402

SAMPLE = section(
    "sample",
    n_classes=8,
    images_per_class=4,
    test_fraction=0.25,
    grayscale_fraction=0.05,
    image_size=[64, 96],
    embedding_noise=0.05,
    seed=0,
)
CFG = section("validate", min_side=32, max_abs_embedding=1000.0, min_embedding_norm=0.001)


@pytest.fixture(scope="session")
def pristine(tmp_path_factory):
    return make_sample(SAMPLE, tmp_path_factory.mktemp("sample") / "raw")


@pytest.fixture
def raw(pristine, tmp_path):
    """A private copy of the sample, free to corrupt."""
    return shutil.copytree(pristine, tmp_path / "raw")


def records(root):
    return {r.key: r for r in load_index(root)}


def failing(root, tmp_path, source="sample") -> str:
    """Run validate_raw expecting failure; check the report was still written; return the message."""
    report = tmp_path / "report"
    with pytest.raises(ValidationFailed) as info:
        validate_raw(root, CFG, source, report)
    result = json.loads((report / "result.json").read_text())
    assert result["success"] is False and result["failures"]
    assert (report / "data_docs" / "index.html").is_file()
    msg = str(info.value)
    assert result["failures"] == msg.splitlines()[:-1]  # every failure, plus the report line
    return msg


def test_good_sample_passes_and_writes_report(raw, tmp_path):
    summary = validate_raw(raw, CFG, "sample", tmp_path / "report")
    assert summary["success"] is True
    assert (summary["n_images"], summary["n_train"], summary["n_test"], summary["n_classes"]) == (32, 24, 8, 8)
    result = json.loads((tmp_path / "report" / "result.json").read_text())
    assert result["success"] is True and result["failures"] == []
    assert set(result["validations"]) == {"manifest", "classes", "splits"}
    assert all(v["success"] for v in result["validations"].values())
    n_expectations = sum(len(v["results"]) for v in result["validations"].values())
    assert n_expectations >= 15
    docs = tmp_path / "report" / "data_docs"
    assert (docs / "index.html").is_file() and summary["data_docs"] == str(docs / "index.html")
    assert "manifest" in (docs / "index.html").read_text()


def test_manifest_columns(raw):
    df = build_manifest(raw)
    assert len(df) == 32 and df.key.is_unique
    assert df.decodes.all() and (df.emb_shape == "10x1024").all() and (df.n_captions == 10).all()
    assert set(df["mode"]) <= {"RGB", "L"} and "L" in set(df["mode"])  # the sample has a gray image
    assert df.emb_finite.all() and (df.emb_norm_min > 1).all() and df.bbox_ok.all()
    assert set(df.split) == {"train", "test"} and df.path.map(os.path.isfile).all()


def test_corrupt_jpegs_fail_naming_each_file(raw, tmp_path):
    df = build_manifest(raw)
    truncated, garbage = df.path.iloc[2], df.path.iloc[20]
    data = open(truncated, "rb").read()
    open(truncated, "wb").write(data[: len(data) // 2])
    open(garbage, "wb").write(b"this is not a jpeg")
    again = build_manifest(raw).set_index("path")
    assert not again.decodes[truncated] and "truncated" in again.decode_error[truncated]
    msg = failing(raw, tmp_path)
    first = msg.splitlines()[0]
    assert first.startswith(os.path.relpath(truncated, raw) + ": does not decode (image file is truncated")
    assert "2 of 32 rows bad" in first and os.path.relpath(garbage, raw) in first


def test_wrong_embedding_shape_fails_naming_pickle(raw, tmp_path):
    path = raw / "test" / layouts.EMBEDDINGS_FILE
    n = len(load_embeddings(raw, "test"))
    with open(path, "wb") as f:
        pickle.dump(np.ones((n, 10, 512), np.float32), f, protocol=2)
    msg = failing(raw, tmp_path)
    assert f"test/{layouts.EMBEDDINGS_FILE} gives shape 10x512, not 10x1024" in msg
    assert "8 of 32 rows bad" in msg


def test_embedding_array_of_wrong_ndim_marks_whole_split(raw, tmp_path):
    n = len(load_embeddings(raw, "train"))
    with open(raw / "train" / layouts.EMBEDDINGS_FILE, "wb") as f:
        pickle.dump(np.ones((n, 1024), np.float32), f, protocol=2)
    df = build_manifest(raw)
    assert set(df.emb_shape[df.split == "train"]) == {f"{n}x1024"}
    assert set(df.emb_shape[df.split == "test"]) == {"10x1024"}
    assert f"train/{layouts.EMBEDDINGS_FILE} gives shape {n}x1024" in failing(raw, tmp_path)


def test_caption_file_with_nine_lines_fails(raw, tmp_path):
    key = sorted(records(raw))[5]
    caption_file = cub.caption_path(raw, key)
    caption_file.write_text("".join(caption_file.read_text().splitlines(keepends=True)[:9]))
    msg = failing(raw, tmp_path)
    assert f"text_c10/{key}.txt has 9 captions, not 10" in msg
    assert os.path.relpath(records(raw)[key].path, raw) in msg


def test_class_in_both_splits_fails(raw, tmp_path):
    recs = list(records(raw).values())
    moved = next(r for r in recs if r.split == "train")
    test_class = next(r.class_id for r in recs if r.split == "test")
    labels = raw / cub.CUB_DIR / "image_class_labels.txt"
    lines = [
        f"{i} {test_class if int(i) == moved.image_id else c}"
        for i, c in (line.split() for line in labels.read_text().splitlines())
    ]
    labels.write_text("\n".join(lines) + "\n")
    msg = failing(raw, tmp_path)
    assert f"class {test_class} is in both splits (4 test, 1 train)" in msg
    assert os.path.relpath(moved.path, raw) + ": class" in msg


def test_every_violation_is_listed_one_per_line(raw, tmp_path):
    recs = sorted(records(raw).values(), key=lambda r: r.image_id)
    open(recs[0].path, "wb").write(b"")
    cub.caption_path(raw, recs[1].key).unlink()
    msg = failing(raw, tmp_path)
    lines = msg.splitlines()
    assert len(lines) == 3 and "does not decode" in lines[0] and "has 0 captions" in lines[1]
    assert lines[-1].startswith("(report: ")


def test_cub_source_requires_real_counts(raw, tmp_path):
    msg = failing(raw, tmp_path, source="cub")
    assert "CUB_200_2011/images.txt: CUB has 11788 images, observed 32" in msg
    assert "the train split has 24 images, not 8855" in msg and "CUB has 200 classes, observed 8" in msg


def test_cub_subset_passes_without_cub_counts(raw, tmp_path):
    subset = CFG.model_copy(update={"cub_counts": False})  # validate.cub_counts: false
    summary = validate_raw(raw, subset, "cub", tmp_path / "report")
    assert summary["success"] is True and summary["n_classes"] == 8


def test_missing_images_txt_names_it(raw, tmp_path):
    (raw / cub.CUB_DIR / "images.txt").unlink()
    with pytest.raises(ValidationFailed, match=r"images.txt: file not found") as info:
        validate_raw(raw, CFG, "sample", tmp_path / "report")
    assert len(str(info.value).splitlines()) == 1
    assert json.loads((tmp_path / "report" / "result.json").read_text())["success"] is False


# --- prepared HDF5 -------------------------------------------------------------------------------


def write_h5(path, size=16, n_train=6, n_test=3, nan=False, constant=False):
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as h5:
        h5.attrs["load_size"] = size
        for split, n, first_class in (("train", n_train, 1), ("test", n_test, 3)):
            g = h5.create_group(split)
            images = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
            emb = rng.standard_normal((n, 10, 1024)).astype(np.float32)
            if split == "train" and nan:
                emb[1, 4, 7] = np.nan
            if split == "test" and constant:
                images[0] = 128
            g["images"], g["embeddings"] = images, emb
            g["class_ids"] = np.array([first_class + i % 2 for i in range(n)], np.int32)
            keys = [f"{split}_class/{split}_{i}" for i in range(n)]
            g.create_dataset("keys", data=keys, dtype=h5py.string_dtype())
            g.create_dataset(
                "captions", data=[[f"a bird {i} {j}" for j in range(10)] for i in range(n)], dtype=h5py.string_dtype()
            )
    return path


def test_prepared_good_file_passes(tmp_path):
    h5 = write_h5(tmp_path / "birds.h5")
    summary = validate_prepared(h5, CFG, tmp_path / "report")
    assert summary["success"] and (summary["n_train"], summary["n_test"]) == (6, 3)
    result = json.loads((tmp_path / "report" / "prepared.json").read_text())
    assert result["success"] is True and result["failures"] == []
    assert (tmp_path / "report" / "data_docs" / "index.html").is_file()


def test_prepared_nan_embedding_and_constant_image_fail(tmp_path):
    h5 = write_h5(tmp_path / "birds.h5", nan=True, constant=True)
    with pytest.raises(ValidationFailed) as info:
        validate_prepared(h5, CFG, tmp_path / "report")
    lines = str(info.value).splitlines()
    assert lines[0] == (
        f"{h5}: train[1] train_class/train_1: non-finite embedding "
        "[expect_column_values_to_be_in_set(emb_finite): 1 of 9 rows bad]"
    )
    assert lines[1].startswith(f"{h5}: test[0] test_class/test_0: image is constant")
    result = json.loads((tmp_path / "report" / "prepared.json").read_text())
    assert result["success"] is False and len(result["failures"]) == 2


def test_prepared_wrong_load_size_and_missing_dataset(tmp_path):
    h5 = write_h5(tmp_path / "birds.h5", size=8)
    with h5py.File(h5, "a") as f:
        f.attrs["load_size"] = 16
    with pytest.raises(ValidationFailed, match=r"image shape 8x8x3, not 16x16x3"):
        validate_prepared(h5, CFG, tmp_path / "report")
    with h5py.File(h5, "a") as f:
        del f["test/captions"]
    with pytest.raises(ValidationFailed, match=r"birds.h5: no dataset test/captions"):
        validate_prepared(h5, CFG, tmp_path / "report")


# --- real data that is valid: CMYK JPEGs, a subset of CUB's classes ----------------------------------


def _rewrite_class(root, old: int, new: int):
    """Give class ``old`` the id ``new`` everywhere it is written (a subset of CUB's 200 classes)."""
    cub_dir = root / cub.CUB_DIR
    for name in ("classes.txt", "image_class_labels.txt"):
        path = cub_dir / name
        col = 0 if name == "classes.txt" else 1
        lines = []
        for line in path.read_text().splitlines():
            parts = line.split()
            if parts and int(parts[col]) == old:
                parts[col] = str(new)
            lines.append(" ".join(parts))
        path.write_text("\n".join(lines) + "\n")
    for split in cub.SPLITS:
        info = root / split / layouts.CLASS_INFO_FILE
        ids = [new if c == old else c for c in layouts.safe_pickle_load(info)]
        info.write_bytes(pickle.dumps(ids, protocol=2))


def test_cmyk_jpeg_and_class_subset_pass_and_prepare_converts(raw, tmp_path):
    from PIL import Image

    from gancls.data.prepare import prepare

    from conftest import section as sec

    victim = sorted((raw / "CUB_200_2011/images").rglob("*.jpg"))[5]
    Image.open(victim).convert("CMYK").save(victim)
    assert Image.open(victim).mode == "CMYK"
    _rewrite_class(raw, 8, 117)  # ids 1..7 and 117: a subset of CUB's classes, not a range
    summary = validate_raw(raw, CFG, "sample", tmp_path / "report")
    assert summary["success"] is True
    counts = prepare(raw, tmp_path / "birds.h5", sec("prepare", workers=1), "sample")
    assert counts["train"] + counts["test"] == 32
    with h5py.File(tmp_path / "birds.h5") as h5:
        assert 117 in set(h5["test/class_ids"][()]) | set(h5["train/class_ids"][()])


@pytest.mark.parametrize("source, cub_counts", [("sample", True), ("cub", False)])  # cub: a subset of classes
def test_class_id_missing_from_classes_txt_fails(raw, tmp_path, source, cub_counts):
    path = raw / cub.CUB_DIR / "image_class_labels.txt"
    lines = path.read_text().splitlines()
    lines[0] = lines[0].split()[0] + " 150"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises((ValidationFailed, cub.LayoutError), match="classes.txt"):
        validate_raw(raw, CFG.model_copy(update={"cub_counts": cub_counts}), source, tmp_path / "report")


def test_key_in_both_splits_fails(raw, tmp_path):
    keys, classes = layouts.read_stackgan_split(raw, "train")
    test_keys, test_classes = layouts.read_stackgan_split(raw, "test")
    emb = load_embeddings(raw, "test")
    train_emb = load_embeddings(raw, "train")
    (raw / "test" / layouts.FILENAMES_FILE).write_bytes(pickle.dumps(test_keys + [keys[0]], protocol=2))
    (raw / "test" / layouts.CLASS_INFO_FILE).write_bytes(pickle.dumps(test_classes + [classes[0]], protocol=2))
    (raw / "test" / layouts.EMBEDDINGS_FILE).write_bytes(pickle.dumps(np.concatenate([emb, train_emb[:1]]), protocol=2))
    msg = failing(raw, tmp_path)
    assert f"image {keys[0]} is also listed in train/filenames.pickle" in msg


def test_class_info_disagreeing_with_cub_labels_fails(raw, tmp_path):
    keys, classes = layouts.read_stackgan_split(raw, "train")
    info = raw / "train" / layouts.CLASS_INFO_FILE
    wrong = [c % 6 + 1 if i == 2 else c for i, c in enumerate(classes)]
    info.write_bytes(pickle.dumps(wrong, protocol=2))
    msg = failing(raw, tmp_path)
    assert (
        f"train/class_info.pickle (class {wrong[2]} for {keys[2]}, but CUB_200_2011/image_class_labels.txt "
        f"says {classes[2]})"
    ) in msg
