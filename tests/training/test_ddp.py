"""Several processes: `gancls train` with train.processes 2 starts `torchrun --nproc_per_node=2 -m gancls.cli
train`, DDP over gloo on the CPU."""

import json
import subprocess
import sys

import torch
import yaml

from conftest import env, tiny_run_params


def test_two_process_ddp_run(tiny_prepared, tmp_path):
    # batch 8 over 2 processes: 4 images each per step; 24 training images -> 3 steps per epoch
    _, raw = tiny_run_params(tiny_prepared, tmp_path, epochs=2, checkpoint_every=1, processes=2)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    e = env()
    e["CUDA_VISIBLE_DEVICES"] = ""
    cmd = [sys.executable, "-m", "gancls.cli", "train"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=e, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # rank 0 alone logs: each epoch line once
    assert proc.stdout.count("epoch 1/2:") == 1 and proc.stdout.count("epoch 2/2:") == 1
    summary = json.loads((tmp_path / "live/metrics.json").read_text())
    assert summary["processes"] == 2 and summary["steps"] == 2 * 3 and summary["epochs"] == 2
    # one model, in the same layout as one process writes; the resume checkpoints are gone
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == ["checkpoint.pt", "generator.pt"]
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.pt")) == [
        "model/checkpoint.pt",
        "model/generator.pt",
    ]
    state = torch.load(tmp_path / "model/checkpoint.pt", weights_only=True)
    assert state["epoch"] == 2 and all(
        torch.isfinite(v).all() for v in state["generator"].values() if v.is_floating_point()
    )


def test_processes_must_divide_the_batch(tiny_prepared, tmp_path):
    _, raw = tiny_run_params(tiny_prepared, tmp_path, epochs=1)
    raw["train"]["processes"] = 3  # a rule of the schema: the params file is refused before any work
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    proc = subprocess.run(
        [sys.executable, "-m", "gancls.cli", "train"],
        cwd=tmp_path,
        env=env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "gancls train: error: params.yaml: train.batch_size 8 is not divisible by train.processes 3"
    ]
    assert not (tmp_path / "model").exists()
