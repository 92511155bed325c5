"""gancls experiment: settings files, the settings checked as DVC applies them, the raw-data check and
the restore (the end-to-end runs of `make run-cub` are in test_pipeline.py)."""

import pytest
import yaml

from gancls.config import ConfigError
from gancls.runs.experiment import missing_raw_data, params_with, restore, settings_file, settings_of

from conftest import ROOT


def test_settings_file_round_trips_through_dvcs_override_grammar(tmp_path):
    reed = settings_file(ROOT / "configs/reed_cub.yaml")
    assert 'data.source="cub"' in reed and "train.flip=true" in reed and "train.lr=0.0002" in reed
    params = params_with(reed + ["params.yaml:train.epochs=3"], ROOT / "params.yaml")
    assert (params.data.source, params.data.raw_dir, params.model.ngf, params.train.epochs) == ("cub", "data", 128, 3)
    assert params.train.flip is True and params.train.lr == 0.0002 and params.train.captions_per_sample == 4
    assert params.model.cond_aug is False and params.train.mode_seeking == 0.0  # the seed's loss, not the sample's
    assert params.model.d_projection is False  # the seed's D
    assert params.train.crop_jitter is None  # Reed's random crop, whatever params.yaml's default
    assert params.train.one_pass is False  # his separate batches
    assert settings_of({"a": {"b": "yes", "c": None}}) == ['a.b="yes"', "a.c=null"]
    (tmp_path / "list.yaml").write_text("- a\n")
    with pytest.raises(ConfigError, match="list.yaml: expected a mapping"):
        settings_file(tmp_path / "list.yaml")


@pytest.mark.parametrize(
    "bad, says",
    [
        ("train.epochz=3", "train.epochz"),
        ("train.epochs=ten", "train.epochs"),
        ("model.ngf", "model.ngf"),
        ("other.yaml:train.epochs=3", "another file"),
    ],
)
def test_bad_settings_are_one_line_naming_the_key(bad, says):
    with pytest.raises(ConfigError, match=says) as info:
        params_with([bad], ROOT / "params.yaml")
    assert "\n" not in str(info.value)


def test_missing_raw_data_names_the_folder_and_gancls_fetch(tmp_path):
    cub = params_with(settings_file(ROOT / "configs/reed_cub.yaml"), ROOT / "params.yaml")
    why = missing_raw_data(cub, tmp_path)
    assert why.startswith("data/ (data.raw_dir) does not exist") and "gancls fetch" in why
    assert "CUB_200_2011.tgz" in why and "build/downloads/" in why
    (tmp_path / "data").mkdir()
    assert "holds no CUB_200_2011/images.txt" in missing_raw_data(cub, tmp_path)
    (tmp_path / "data/CUB_200_2011").mkdir()
    (tmp_path / "data/CUB_200_2011/images.txt").write_text("1 001.A/a.jpg\n")
    why = missing_raw_data(cub, tmp_path)  # Reed's settings draw typed sentences with Reed's encoder
    assert why.startswith(f"data/{cub.text_encoder.reed_t7}: Reed's text encoder is not there"), why
    assert "build/downloads/" in why and "-S text_encoder.source=fit" in why
    (tmp_path / "data" / cub.text_encoder.reed_t7).parent.mkdir()
    (tmp_path / "data" / cub.text_encoder.reed_t7).write_bytes(b"t7")
    assert missing_raw_data(cub, tmp_path) is None
    sample = params_with([], ROOT / "params.yaml")  # the embedded sample is made by a stage
    assert missing_raw_data(sample, tmp_path) is None


def test_restore_puts_back_only_what_changed(tmp_path):
    a, b = tmp_path / "params.yaml", tmp_path / "data.dvc"
    a.write_text("x: 1\n")
    b.write_text("outs: []\n")
    saved = {a: a.read_bytes(), b: b.read_bytes()}
    a.write_text(yaml.safe_dump({"x": 2}))
    assert restore(saved) == ["params.yaml"] and a.read_text() == "x: 1\n" and b.read_text() == "outs: []\n"
    assert not list(tmp_path.glob(".*.restore"))
