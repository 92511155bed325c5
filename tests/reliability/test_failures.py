"""Failed writes (a full disk), damaged model files and bad params through the command line: one line
naming the file or key, exit 1, no traceback, and the earlier output unchanged."""

import csv
import errno
import json
import resource
import shutil
import subprocess
import sys

import h5py
import pytest
import torch
import yaml

from gancls.cli import main
from gancls.config import ModelParams
from gancls.models.gan import build_generator

from conftest import env, section, tiny_run_params


def one_line_error(capsys, argv, stage, *names):
    capsys.readouterr()
    assert main(argv) == 1
    out = capsys.readouterr()
    lines = out.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"gancls {stage}: error: "), out.err
    assert "Traceback" not in out.err + out.out
    for name in names:
        assert name in lines[0], (name, lines[0])
    return lines[0]


@pytest.fixture
def run(tiny_prepared, tmp_path, monkeypatch):
    """params.yaml in tmp_path: tiny prepared data, every training output under tmp_path."""
    params, raw = tiny_run_params(tiny_prepared, tmp_path, epochs=2, checkpoint_every=1)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    monkeypatch.chdir(tmp_path)
    return params


def earlier_model(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    files = {model / "generator.pt": b"earlier generator", model / "checkpoint.pt": b"earlier checkpoint"}
    for p, data in files.items():
        p.write_bytes(data)
    return files


def test_disk_full_during_train_keeps_the_earlier_model(run, tmp_path, capsys):
    """A real failed write: the file-size limit (RLIMIT_FSIZE) makes the OS refuse the checkpoint (EFBIG)."""
    files = earlier_model(tmp_path)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, hard))  # the checkpoints are about 2 MB
    try:
        line = one_line_error(capsys, ["train"], "train", "epoch_00001.pt", "File too large", "not written")
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert all(p.read_bytes() == data for p, data in files.items())
    assert not list((tmp_path / "checkpoints").glob("epoch_*.pt"))
    print(line)


def test_disk_full_during_prepare_keeps_the_earlier_file(tiny_prepared, tmp_path, monkeypatch, capsys):
    """A simulated full disk: every HDF5 block write fails with ENOSPC."""
    from gancls.data.synthetic import make_sample

    from conftest import ROOT, TINY, merge

    raw = merge(yaml.safe_load((ROOT / "params.yaml").read_text()), TINY)
    make_sample(section("sample", **TINY["sample"]), tmp_path / "raw")
    out = tmp_path / "birds.h5"
    shutil.copy(tiny_prepared, out)
    before = out.read_bytes()
    raw["data"]["raw_dir"] = str(tmp_path / "raw")
    raw["prepare"].update(out=str(out), workers=1, report_dir=str(tmp_path / "report"))
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    monkeypatch.chdir(tmp_path)

    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(h5py.Dataset, "__setitem__", full)
    line = one_line_error(capsys, ["prepare"], "prepare", str(out), "No space left on device")
    assert out.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".birds.h5.")] == []  # temporary removed
    print(line)


def generator_file(path):
    model = section("model", ngf=8, ndf=8)
    torch.save({"generator": build_generator(model).state_dict(), "model": model.model_dump()}, path)
    return path


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_damaged_generator_is_named(run, tmp_path, capsys, damage):
    (tmp_path / "model").mkdir()
    g = generator_file(tmp_path / "model/generator.pt")
    g.write_bytes(g.read_bytes()[:4000] if damage == "truncated" else b"not a model at all" * 100)
    one_line_error(capsys, ["generate"], "generate", "generator.pt", "not a loadable gancls generator")
    assert not (tmp_path / "build/generated").exists()


def test_truncated_training_checkpoint_is_named(run, tmp_path, capsys):
    ckpt = tmp_path / "checkpoints/epoch_00001.pt"
    ckpt.parent.mkdir()
    torch.save(
        {
            "format": 1,
            "epoch": 1,
            "generator": build_generator(ModelParams(**section("model", ngf=8, ndf=8).model_dump())).state_dict(),
        },
        ckpt,
    )
    ckpt.write_bytes(ckpt.read_bytes()[:5000])
    one_line_error(capsys, ["train"], "train", "epoch_00001.pt", "not a loadable gancls training checkpoint")
    assert ckpt.is_file() and not (tmp_path / "model").exists()


@pytest.mark.parametrize(
    "key, value, named",
    [("epoch", 3, "train.epoch: unknown key"), ("epochs", "ten", "train.epochs: Input should be a valid integer")],
)
def test_bad_params_through_the_installed_command(run, tmp_path, key, value, named):
    raw = yaml.safe_load((tmp_path / "params.yaml").read_text())
    raw["train"][key] = value
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(raw))
    proc = subprocess.run(
        [sys.executable, "-m", "gancls.cli", "--params", str(bad), "train"],
        cwd=tmp_path,
        env=env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        f"gancls train: error: {bad}: {named}" + proc.stderr.split(named, 1)[1].rstrip("\n")
    ]
    assert "Traceback" not in proc.stderr + proc.stdout
    assert not (tmp_path / "checkpoints").exists() and not (tmp_path / "model").exists()


def test_resume_after_a_kill_in_the_middle_of_a_dvclive_write(tiny_prepared, tmp_path, capsys):
    """DVCLive writes its summary, TSV rows and frames in place: a run killed mid-write leaves them cut
    short.  The next run resumes anyway, dropping what is incomplete."""
    import gancls.training.train as train_mod

    params, _ = tiny_run_params(tiny_prepared, tmp_path, epochs=2, checkpoint_every=1)
    real = train_mod.save_checkpoint

    def save_then_die(directory, epoch, state):
        real(directory, epoch, state)
        raise KeyboardInterrupt  # stands for SIGKILL right after the epoch-1 checkpoint

    train_mod.save_checkpoint = save_then_die
    try:
        with pytest.raises(KeyboardInterrupt):
            train_mod.train(tiny_prepared, params)
    finally:
        train_mod.save_checkpoint = real
    live = tmp_path / "live"
    (live / "metrics.json").write_text('{"step": 1, "d_lo')  # summary cut short
    with (live / "plots/metrics/d_loss.tsv").open("a") as f:
        f.write("17000000")  # a row cut short after its timestamp
    frame = live / "plots/images/samples/00001.png"
    frame.write_bytes(frame.read_bytes()[:100])  # a frame cut short
    capsys.readouterr()
    summary = train_mod.train(tiny_prepared, params)
    assert summary["resumed_from_epoch"] == 1 and "resuming from" in capsys.readouterr().out
    with (live / "plots/metrics/d_loss.tsv").open() as f:
        assert [r["step"] for r in csv.DictReader(f, delimiter="\t")] == ["1", "2"]
    assert json.loads((live / "metrics.json").read_text())["epochs"] == 2
