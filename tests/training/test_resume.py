"""Training runs that stop and go on: checkpoints, automatic resume, refusals, the non-finite guard."""

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml

import gancls.training.train as train_mod
from gancls.cli import main
from gancls.models.generator_file import CheckpointError
from gancls.training.checkpoint import latest_checkpoint
from gancls.training.stats import TrainingDiverged
from gancls.training.train import train

from conftest import env, tiny_run_params


class Stop(Exception):
    """Stands for the process dying right after a checkpoint was written."""


def interrupt_after_checkpoint(monkeypatch, epoch):
    real = train_mod.save_checkpoint

    def save_then_stop(directory, e, state):
        path = real(directory, e, state)
        if e == epoch:
            raise Stop(path)
        return path

    monkeypatch.setattr(train_mod, "save_checkpoint", save_then_stop)


def tensors(path):
    state = torch.load(path, weights_only=True)
    flat = {}

    def walk(prefix, x):
        if isinstance(x, torch.Tensor):
            flat[prefix] = x
        elif isinstance(x, dict):
            for k, v in x.items():
                walk(f"{prefix}.{k}", v)
        elif isinstance(x, (list, tuple)):
            for i, v in enumerate(x):
                walk(f"{prefix}.{i}", v)

    walk("", state)
    return flat


def tsv_steps(live, name="d_loss"):
    with (live / "plots/metrics" / f"{name}.tsv").open() as f:
        return [int(r["step"]) for r in csv.DictReader(f, delimiter="\t")]


def test_resume_is_bit_identical_to_one_run(tiny_prepared, tmp_path, monkeypatch, capsys):
    whole, _ = tiny_run_params(tiny_prepared, tmp_path / "whole", epochs=2, checkpoint_every=1)
    train(tiny_prepared, whole)

    split, _ = tiny_run_params(tiny_prepared, tmp_path / "split", epochs=2, checkpoint_every=1)
    with monkeypatch.context() as m:
        interrupt_after_checkpoint(m, 1)
        with pytest.raises(Stop):
            train(tiny_prepared, split)
    assert latest_checkpoint(tmp_path / "split/checkpoints").name == "epoch_00001.pt"
    assert not (tmp_path / "split/model").exists()
    capsys.readouterr()
    summary = train(tiny_prepared, split)
    assert "resuming from" in capsys.readouterr().out and summary["resumed_from_epoch"] == 1

    a, b = tensors(tmp_path / "whole/model/checkpoint.pt"), tensors(tmp_path / "split/model/checkpoint.pt")
    assert a.keys() == b.keys() and len(a) > 50
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])][:5]
    g1, g2 = tensors(tmp_path / "whole/model/generator.pt"), tensors(tmp_path / "split/model/generator.pt")
    assert all(torch.equal(g1[k], g2[k]) for k in g1)
    # the resumed run continued the history instead of starting a new one
    assert tsv_steps(tmp_path / "split/live") == [1, 2] == tsv_steps(tmp_path / "whole/live")
    live = json.loads((tmp_path / "split/live/metrics.json").read_text())
    assert live["epochs"] == 2 and live["steps"] == 6
    assert not list((tmp_path / "split/checkpoints").glob("*.pt"))  # done: nothing left to resume


def test_resume_refuses_another_configuration(tiny_prepared, tmp_path, monkeypatch):
    from gancls.config import parse_params

    params, raw = tiny_run_params(tiny_prepared, tmp_path, epochs=3, checkpoint_every=1)
    with monkeypatch.context() as m:
        interrupt_after_checkpoint(m, 2)
        with pytest.raises(Stop):
            train(tiny_prepared, params)
    ckpt = tmp_path / "checkpoints/epoch_00002.pt"
    assert [p.name for p in ckpt.parent.iterdir()] == [ckpt.name]  # the newest one only

    def changed(section, **kv):
        return parse_params({**raw, section: {**raw[section], **kv}})

    with pytest.raises(
        CheckpointError,
        match=r"epoch_00002\.pt: checkpoint of another architecture "
        r"\(model\.ngf 8 -> 16\); set train\.resume: false",
    ):
        train(tiny_prepared, changed("model", ngf=16))
    with pytest.raises(
        CheckpointError,
        match=r"epoch_00002\.pt: checkpoint trained with other settings "
        rf"\(train\.lr {re.escape(str(params.train.lr))} -> 0\.001\)",
    ):
        train(tiny_prepared, changed("train", lr=0.001))
    with pytest.raises(CheckpointError, match=r"epoch_00002\.pt: checkpoint is at epoch 2, beyond train\.epochs 1"):
        train(tiny_prepared, changed("train", epochs=1))
    assert ckpt.is_file()  # a refusal keeps the checkpoint

    # a damaged checkpoint is named, never silently replaced
    ckpt.write_bytes(ckpt.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match=r"epoch_00002\.pt: not a loadable gancls training checkpoint"):
        train(tiny_prepared, params)
    assert ckpt.is_file()
    # train.resume: false starts afresh
    summary = train(tiny_prepared, changed("train", resume=False))
    assert summary["resumed_from_epoch"] == 0 and summary["steps"] == 3 * 3


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tiny_prepared, tmp_path, monkeypatch, capsys):
    params, raw = tiny_run_params(tiny_prepared, tmp_path, epochs=4, checkpoint_every=1, log_every=1)
    real_step = train_mod.train_step
    calls = {"n": 0}

    def poisoned(g, *args, **kw):
        calls["n"] += 1
        if calls["n"] == 5:  # epoch 2, its second step: G's weights become NaN
            with torch.no_grad():
                next(g.parameters()).fill_(float("nan"))
        return real_step(g, *args, **kw)

    monkeypatch.setattr(train_mod, "train_step", poisoned)
    with pytest.raises(TrainingDiverged, match=r"non-finite loss at epoch 2, step 5 \(d_loss nan"):
        train(tiny_prepared, params)
    assert [p.name for p in (tmp_path / "checkpoints").glob("*.pt")] == ["epoch_00001.pt"]
    assert not (tmp_path / "model").exists()

    # through the command line: one line on stderr, exit status 1
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    calls["n"] = 3  # the resumed run starts at step 4: poison its second step
    monkeypatch.chdir(tmp_path)
    assert main(["train"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    losses = "d_loss nan, g_loss nan, g_int_loss nan, g_ms_loss nan, kl_loss nan"  # MSGAN and CA on by default
    assert err == [f"gancls train: error: non-finite loss at epoch 2, step 5 ({losses})"]


def test_sigkill_after_first_checkpoint_resumes(tiny_prepared, tmp_path):
    """A real `gancls train` process killed with SIGKILL goes on from its checkpoint on the next run."""
    epochs = 50
    _, raw = tiny_run_params(tiny_prepared, tmp_path, epochs=epochs, checkpoint_every=5, sample_every=50)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    cmd = [sys.executable, "-m", "gancls.cli", "train"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while latest_checkpoint(tmp_path / "checkpoints") is None and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "train finished before it could be killed"
    done = int(latest_checkpoint(tmp_path / "checkpoints").stem.split("_")[1])
    assert 5 <= done < epochs

    again = subprocess.run(cmd, cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    resumed = int(again.stdout.split("resuming from")[1].split("epoch ")[1].split(" ")[0])
    assert resumed >= done and resumed % 5 == 0
    summary = json.loads((tmp_path / "checkpoints/../live/metrics.json").read_text())
    assert summary["epochs"] == epochs and summary["steps"] == epochs * 3
    assert summary["resumed_from_epoch"] == resumed
    assert tsv_steps(tmp_path / "live") == list(range(1, epochs + 1))  # each epoch once, in order


def test_training_split_of_one_class_is_one_line(tmp_path, monkeypatch, capsys):
    """A prepared file whose training split holds a single class cannot give wrong-text pairs."""
    import h5py
    import numpy as np

    from conftest import ROOT, TINY, merge

    path = tmp_path / "birds.h5"
    with h5py.File(path, "w") as h5:
        g = h5.create_group("train")
        g["images"] = np.zeros((4, 76, 76, 3), np.uint8)
        g["embeddings"] = np.ones((4, 10, 1024), np.float32)
        g["class_ids"] = np.ones(4, np.int32)
        g["keys"] = [f"001.A/a_{i}" for i in range(4)]
        g.create_dataset("captions", data=[["a bird"] * 10] * 4, dtype=h5py.string_dtype())
    raw = merge(yaml.safe_load((ROOT / "params.yaml").read_text()), TINY)
    raw["prepare"]["out"] = str(path)
    raw["train"].update(
        out_dir=str(tmp_path / "model"),
        live_dir=str(tmp_path / "live"),
        checkpoint_dir=str(tmp_path / "ck"),
        device="cpu",
    )
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    monkeypatch.chdir(tmp_path)
    assert main(["train"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"gancls train: error: {path}: training needs images of at least two classes (wrong-text pairs)"]
    assert not (tmp_path / "model").exists()
