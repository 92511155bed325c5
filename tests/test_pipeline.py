"""End to end: `dvc repro` of the real stages on the tiny configuration, and the bad-input stop."""
import csv
import json
import pickle
import shutil

import h5py
from PIL import Image

from gancls.cub import load_embeddings

from conftest import dvc, sh


def test_dvc_repro_end_to_end(pipeline_copy):
    repo = pipeline_copy()
    dvc("repro", cwd=repo)

    # validate: GX result + Data Docs
    result = json.loads((repo / "reports/validation/result.json").read_text())
    assert result["success"] is True
    assert (repo / "reports/validation/data_docs/index.html").is_file()
    # prepare: one HDF5 with both class-disjoint splits
    with h5py.File(repo / "build/prepared/birds.h5") as h5:
        assert h5["train/images"].shape[1:] == (76, 76, 3)
        assert h5["train/embeddings"].shape[1:] == (10, 1024)
        assert h5["test/captions"].shape[1] == 10
        assert not set(h5["train/class_ids"][()]) & set(h5["test/class_ids"][()])
        assert len(h5["train/keys"]) + len(h5["test/keys"]) == 32 and len(h5["test/keys"]) == 8
    # train: the model, DVCLive history (per-epoch TSVs, a DVC plot), fixed sample grids, summary
    assert (repo / "build/model/checkpoint.pt").is_file() and (repo / "build/model/generator.pt").is_file()
    assert not list((repo / "build/checkpoints").glob("*.pt"))  # resume checkpoints go once the run is done
    rows = list(csv.DictReader((repo / "dvclive/plots/metrics/d_loss.tsv").open(), delimiter="\t"))
    assert [int(r["step"]) for r in rows] == [1, 2]
    assert all(float(r["d_loss"]) > 0 for r in rows)
    assert sorted(p.name for p in (repo / "dvclive/plots/images/samples").iterdir()) == ["00001.png", "00002.png"]
    grid = Image.open(repo / "reports/train_samples.png")
    assert grid.height > 3 * 66 and grid.width > 3 * 66 + 300  # captions panel beside 3 x 3 images
    gif = Image.open(repo / "reports/train_progress.gif")
    assert gif.n_frames == 2  # one frame per sample_every epochs
    train_metrics = json.loads((repo / "dvclive/metrics.json").read_text())
    assert "moving average" in train_metrics["shipped"] and train_metrics["steps"] == 2 * 3  # 24 images / 8
    assert train_metrics["epochs"] == 2 and train_metrics["resumed_from_epoch"] == 0
    shown = json.loads(dvc("metrics", "show", "--json", cwd=repo).stdout)
    assert any("dvclive/metrics.json" in str(v) for v in shown.values())
    # train-scorer: the classifier and its held-out accuracy
    scorer = json.loads((repo / "metrics/scorer.json").read_text())
    assert scorer["labels"] == ["body", "wing", "head", "beak"] and scorer["n_heldout"] == 8
    # generate: 12 images from test captions + the captioned grids
    with h5py.File(repo / "build/generated/images.h5") as h5:
        assert h5["images"].shape == (12, 64, 64, 3)
        assert len(h5["captions"]) == 12 and h5["image_index"][()].max() < 8
    for name in ("generated_grid", "interp_text", "interp_noise"):
        assert Image.open(repo / f"reports/{name}.png").width > 3 * 66, name
    # evaluate: real FID/KID with the recorded extractor; IS reported missing with a reason
    scores = json.loads((repo / "metrics/scores.json").read_text())
    assert scores["fid"] > 0 and scores["n_fake"] == 12 and scores["n_real"] == 8
    assert scores["feature_extractor"]["sha1"] == "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"
    assert scores["is"] is None and scores["is_missing_reason"]
    tm = scores["text_match"]
    assert set(tm) >= {"accuracy", "chance", "real_ceiling", "mismatched_accuracy"}
    assert all(0 <= tm[k] <= 1 for k in ("accuracy", "chance", "real_ceiling", "mismatched_accuracy"))
    report = (repo / "reports/report.md").read_text()
    assert "real held-out images (ceiling)" in report and "generated_grid.png" in report

    # a second repro reruns nothing
    assert "up to date" in dvc("status", cwd=repo).stdout
    again = dvc("repro", cwd=repo).stdout
    assert "Running stage" not in again

    # an experiment with another training length changes the metrics that `dvc metrics diff` shows
    sh(["git", "add", "-A"], repo)
    sh(["git", "commit", "-qm", "baseline"], repo)
    dvc("exp", "run", "-S", "train.epochs=3", cwd=repo)
    diff = json.loads(dvc("metrics", "diff", "--json", cwd=repo).stdout)
    assert diff["metrics/scores.json"]["fid"]["diff"] != 0
    shown = dvc("metrics", "show", "--json", cwd=repo).stdout
    assert '"text_match"' in shown and '"mismatched_accuracy"' in shown
    assert diff["dvclive/metrics.json"]["epochs"]["new"] == 3


def corrupt_copy(repo):
    """make-sample, then a copy of the sample as the raw folder (data.raw_dir = bad_raw)."""
    dvc("repro", "make-sample", cwd=repo)
    bad = repo / "bad_raw"
    shutil.copytree(repo / "build/sample", bad)
    return bad


def test_corrupt_jpeg_stops_pipeline(pipeline_copy):
    repo = pipeline_copy({"data": {"raw_dir": "bad_raw"}})
    bad = corrupt_copy(repo)
    victim = sorted((bad / "CUB_200_2011/images").rglob("*.jpg"))[3]
    victim.write_bytes(victim.read_bytes()[:200])
    proc = dvc("repro", cwd=repo, check=False)
    assert proc.returncode != 0
    assert victim.name in proc.stderr + proc.stdout
    assert not (repo / "build/prepared/birds.h5").exists()
    assert not (repo / "build/model").exists()


def test_wrong_embedding_shape_stops_pipeline(pipeline_copy):
    repo = pipeline_copy({"data": {"raw_dir": "bad_raw"}})
    bad = corrupt_copy(repo)
    emb = load_embeddings(bad, "test")
    pick = bad / "test/char-CNN-RNN-embeddings.pickle"
    pick.write_bytes(pickle.dumps(emb[:, :, :512].copy(), protocol=2))
    proc = dvc("repro", cwd=repo, check=False)
    assert proc.returncode != 0
    out = proc.stderr + proc.stdout
    assert "char-CNN-RNN-embeddings.pickle" in out or "10x512" in out
    assert not (repo / "build/prepared/birds.h5").exists()
