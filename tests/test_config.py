"""Checked params: every bad value stops with one line naming the key, before any work."""

import pytest
import yaml
from pydantic import ValidationError

from gancls.cli import main
from gancls.config import ConfigError, TrainParams, load_params

from conftest import ROOT


def write(tmp_path, edit):
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    edit(raw)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_defaults_load_as_typed_sections():
    p = load_params(ROOT / "params.yaml")
    assert isinstance(p.train.epochs, int) and p.model.image_size == 64 and p.validation.min_side > 0
    with pytest.raises(ValidationError, match="frozen"):
        p.train.epochs = 3  # frozen: nothing changes settings behind the file's back


@pytest.mark.parametrize(
    "edit, key, words",
    [
        (lambda r: r["train"].update(epoch=3), "train.epoch", "unknown key"),
        (lambda r: r["train"].update(epochs="ten"), "train.epochs", "valid integer"),
        (lambda r: r["train"].update(epochs=-1), "train.epochs", "greater than 0"),
        (lambda r: r["train"].update(batch_size=0), "train.batch_size", "greater than or equal to 2"),
        (lambda r: r["model"].update(image_size=128), "model.image_size", "64"),
        (lambda r: r["data"].update(source="flickr"), "data.source", "'sample' or 'cub'"),
        (lambda r: r["train"].pop("lr"), "train.lr", "Field required"),
        (lambda r: r.update(extra_section={}), "extra_section", "unknown key"),
        (lambda r: r["validate"].update(min_side="big"), "validate.min_side", "valid integer"),
        (lambda r: r["train"].update(processes=3), "train.batch_size", "not divisible by train.processes 3"),
        (lambda r: r["train"].update(compile=True, cuda_graph=True), "train.compile", "choose one"),
        (lambda r: r["demo"].update(port=70000), "demo.port", "less than or equal to 65535"),
        (
            lambda r: r["train"].update(augment_realism=["cutout"]) or r["model"].update(d_uncond_features="shared"),
            "train.augment_realism",
            "a realism tower of its own",
        ),
    ],
)
def test_bad_value_is_one_line_naming_the_key(tmp_path, capsys, edit, key, words):
    path = write(tmp_path, edit)
    with pytest.raises(ConfigError, match=key):
        load_params(path)
    rc = main(["--params", str(path), "train"])
    err = capsys.readouterr().err
    assert rc == 1 and len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"gancls train: error: {path}: {key}") and words in err and "Traceback" not in err
    assert not (tmp_path / "build").exists()


def test_missing_params_file(tmp_path, capsys):
    rc = main(["--params", str(tmp_path / "nope.yaml"), "train"])
    assert rc == 1 and "nope.yaml: params file not found" in capsys.readouterr().err


def test_the_train_stage_depends_on_what_changes_the_model_only():
    """dvc.yaml lists the train keys that change the model (TrainParams.model_keys), so that changing how a
    run is watched or placed (TrainParams.RUN_KEYS: log_every, checkpoint_every, device, ...) retrains nothing
    (the end-to-end check: test_pipeline.py::test_dvc_repro_end_to_end); no stage after it reads train.*."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    assert stages["train"]["params"] == ["seed", "model", *(f"train.{k}" for k in TrainParams.model_keys())]
    assert set(TrainParams.model_keys()) | TrainParams.RUN_KEYS == set(TrainParams.model_fields)
    assert {"log_every", "checkpoint_every", "checkpoint_dir", "device", "processes"} <= TrainParams.RUN_KEYS
    assert not [p for p in stages["generate"]["params"] if str(p).startswith("train")]


def test_a_seed_sweep_varies_the_gan_alone():
    """The instruments (the scorer, the text encoder, the real floor) read reference_seed, not seed: every
    seed of a sweep is measured with the same ones, and DVC's run cache gives their stages back."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for name in ("train-scorer", "train-text-encoder", "real-floor"):
        assert "reference_seed" in stages[name]["params"] and "seed" not in stages[name]["params"], name
    for name in ("train", "generate", "evaluate"):
        assert "seed" in stages[name]["params"], name
    for path in ("evaluation/scorer.py", "training/train_text_encoder.py", "evaluation/floor.py"):
        code = (ROOT / "src/gancls" / path).read_text()
        assert "params.reference_seed" in code and "params.seed" not in code, path
