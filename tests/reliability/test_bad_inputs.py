"""Bad inputs stop with one clear line naming the file or key, no traceback, and no earlier output lost.

Cheap on purpose: every case runs ``gancls.cli.main`` in-process on a private copy of a tiny sample with
its own params file.  That DVC runs nothing downstream of a failing stage is shown end to end, once, by
tests/test_pipeline.py::test_corrupt_jpeg_stops_pipeline.
"""

import math
import pickle
import shutil

import h5py
import pytest
import yaml

from gancls.cli import main
from gancls.data import cub, layouts
from gancls.data.raw import load_embeddings
from gancls.data.synthetic import make_sample
from gancls.runs.project import outputs_under

from conftest import BAD_INPUT_FIGURES as FIGURES
from conftest import ROOT, TINY, merge, section


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    return make_sample(section("sample", **TINY["sample"]), tmp_path_factory.mktemp("bad") / "raw")


@pytest.fixture
def case(pristine, tmp_path, monkeypatch):
    """A private raw copy, a params file pointing every output into tmp_path, and earlier outputs."""
    raw = shutil.copytree(pristine, tmp_path / "raw")
    params = merge(yaml.safe_load((ROOT / "params.yaml").read_text()), TINY)
    params["data"]["raw_dir"] = str(raw)
    params["validate"]["report_dir"] = str(tmp_path / "reports/validation")
    params["prepare"].update(
        out=str(tmp_path / "build/prepared/birds.h5"),
        workers=1,
        report_dir=str(tmp_path / "reports/validation-prepared"),
    )
    outputs_under(params, tmp_path / "build")["train"]["device"] = "cpu"
    # earlier outputs of the downstream stages: they must come out byte-identical
    earlier = {
        tmp_path / "build/prepared/birds.h5": b"earlier prepared file",
        tmp_path / "build/model/generator.pt": b"earlier model",
    }
    for path, data in earlier.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    monkeypatch.chdir(tmp_path)

    class Case:
        pass

    c = Case()
    c.raw, c.params, c.earlier, c.tmp = raw, params, earlier, tmp_path
    c.params_file = tmp_path / "params.yaml"
    c.write = lambda: c.params_file.write_text(yaml.safe_dump(c.params, sort_keys=False))
    c.write()
    return c


def run_cli(c, capsys, argv, names):
    """Run one stage expecting a clear failure; count it in FIGURES; return stderr."""
    FIGURES["tried"] += 1
    capsys.readouterr()
    rc = main(argv)
    out = capsys.readouterr()
    lines = out.err.strip().splitlines()
    lost = [str(p) for p, data in c.earlier.items() if not p.is_file() or p.read_bytes() != data]
    FIGURES["lost"] += bool(lost)
    clear = (
        rc != 0
        and lines
        and "Traceback" not in out.err + out.out
        and lines[0].startswith(f"gancls {argv[-1]}: error: ")
        and any(n in lines[0] for n in names)
    )
    FIGURES["clear"] += bool(clear)
    print(
        f"bad inputs so far: tried {FIGURES['tried']}, clear one-line errors {FIGURES['clear']}, "
        f"outputs lost {FIGURES['lost']} | {lines[0] if lines else '(no message)'}"
    )
    assert rc == 1, out
    assert "Traceback" not in out.err + out.out
    assert lines and lines[0].startswith(f"gancls {argv[-1]}: error: "), out.err
    assert any(n in lines[0] for n in names), (names, lines[0])
    assert not lost, lost
    return out.err


def _images(raw):
    return sorted((raw / cub.CUB_DIR / "images").rglob("*.jpg"))


def _pickle(path, obj):
    path.write_bytes(pickle.dumps(obj, protocol=2))


def _edit_lines(path, fn):
    lines = path.read_text().splitlines()
    path.write_text("\n".join(fn(lines)) + "\n")


def truncated_jpeg(raw):
    p = _images(raw)[3]
    p.write_bytes(p.read_bytes()[:200])
    return [p.name]


def zero_byte_jpeg(raw):
    p = _images(raw)[5]
    p.write_bytes(b"")
    return [p.name]


def nan_embeddings(raw, value=math.nan):
    emb = load_embeddings(raw, "train")
    emb[2, 3, 7] = value
    _pickle(raw / "train" / layouts.EMBEDDINGS_FILE, emb)
    return [layouts.EMBEDDINGS_FILE, "train/"]


def inf_embeddings(raw):
    return nan_embeddings(raw, math.inf)


def wrong_size_embeddings(raw):
    _pickle(raw / "test" / layouts.EMBEDDINGS_FILE, load_embeddings(raw, "test")[:, :, :512].copy())
    return [layouts.EMBEDDINGS_FILE]


def short_filenames(raw):
    keys, classes = layouts.read_stackgan_split(
        raw, "train"
    )  # class_info.pickle shortened too: only the embeddings disagree
    _pickle(raw / "train" / layouts.FILENAMES_FILE, keys[:-2])
    _pickle(raw / "train" / layouts.CLASS_INFO_FILE, classes[:-2])
    return [layouts.FILENAMES_FILE, layouts.EMBEDDINGS_FILE]


def missing_caption_file(raw):
    keys, _ = layouts.read_stackgan_split(raw, "test")
    cub.caption_path(raw, keys[1]).unlink()
    return [keys[1]]


def short_caption_file(raw):
    keys, _ = layouts.read_stackgan_split(raw, "train")
    p = cub.caption_path(raw, keys[4])
    _edit_lines(p, lambda lines: lines[:7])
    return [keys[4]]


def unknown_class_id(raw):
    _edit_lines(raw / cub.CUB_DIR / "image_class_labels.txt", lambda lines: [lines[0].split()[0] + " 150"] + lines[1:])
    return ["classes.txt", "image_class_labels.txt"]


def duplicated_image_id(raw):
    _edit_lines(raw / cub.CUB_DIR / "images.txt", lambda lines: lines + [lines[0]])
    return ["images.txt"]


def box_outside_image(raw):
    _edit_lines(
        raw / cub.CUB_DIR / "bounding_boxes.txt",
        lambda lines: [lines[0].split()[0] + " 5000.0 5000.0 40.0 40.0"] + lines[1:],
    )
    first = (raw / cub.CUB_DIR / "images.txt").read_text().split()[1]
    return [first.split("/")[-1], "bounding_boxes.txt"]


RAW_CASES = [
    truncated_jpeg,
    zero_byte_jpeg,
    nan_embeddings,
    inf_embeddings,
    wrong_size_embeddings,
    short_filenames,
    missing_caption_file,
    short_caption_file,
    unknown_class_id,
    duplicated_image_id,
    box_outside_image,
]


@pytest.mark.parametrize("corrupt", RAW_CASES, ids=[f.__name__ for f in RAW_CASES])
def test_bad_raw_data_stops_validate_with_a_clear_first_line(case, capsys, corrupt):
    names = corrupt(case.raw)
    err = run_cli(case, capsys, ["--params", str(case.params_file), "validate"], names)
    lines = err.strip().splitlines()
    if len(lines) > 1:  # several failed expectations: one line each, then where the report is
        assert lines[-1].startswith("(report: "), lines


def test_missing_raw_dir(case, capsys):
    case.params["data"]["raw_dir"] = str(case.tmp / "nowhere")
    case.write()
    run_cli(case, capsys, ["--params", str(case.params_file), "validate"], ["nowhere"])
    run_cli(case, capsys, ["--params", str(case.params_file), "prepare"], ["nowhere"])


PARAM_CASES = {
    "unknown key": (("train", "epoch", 3), "train.epoch: unknown key"),
    "epochs ten": (("train", "epochs", "ten"), "train.epochs"),
    "batch size 0": (("train", "batch_size", 0), "train.batch_size"),
    "image size 32": (("model", "image_size", 32), "model.image_size"),
    "source foo": (("data", "source", "foo"), "data.source"),
}


@pytest.mark.parametrize("name", PARAM_CASES)
def test_bad_params(case, capsys, name):
    (sec, key, value), named = PARAM_CASES[name]
    case.params[sec][key] = value
    case.write()
    err = run_cli(case, capsys, ["--params", str(case.params_file), "train"], [named])
    assert len(err.strip().splitlines()) == 1 and str(case.params_file) in err


def test_missing_params_file(case, capsys):
    err = run_cli(case, capsys, ["--params", "nowhere.yaml", "train"], ["nowhere.yaml"])
    assert len(err.strip().splitlines()) == 1


def test_prepared_file_of_an_older_layout(case, capsys, tiny_prepared):
    """An HDF5 without the captions dataset (as an older prepare wrote it): train names the file."""
    old = case.tmp / "build/prepared/birds.h5"
    shutil.copy(tiny_prepared, old)
    with h5py.File(old, "a") as h5:
        for split in ("train", "test"):
            del h5[f"{split}/captions"]
    case.earlier[old] = old.read_bytes()
    err = run_cli(case, capsys, ["--params", str(case.params_file), "train"], [str(old)])
    assert len(err.strip().splitlines()) == 1 and "captions" in err
    assert not (case.tmp / "build/checkpoints").exists() or not list((case.tmp / "build/checkpoints").iterdir())
