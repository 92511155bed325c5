"""The train-text-encoder stage (gancls.training.train_text_encoder): fitted on the training captions, or Reed's
.t7 from the raw data; scored on the test captions; its weights are what generate and `sample --text` use."""

import json

import numpy as np
import pytest
import torch
import yaml

from gancls.cli import main
from gancls.config import ConfigError, parse_params
from gancls.data.prepared import read_prepared
from gancls.models.text_encoder import encode, load_encoder
from gancls.training.train_text_encoder import caption_pairs, train_text_encoder

from conftest import ROOT, TINY, merge


def stage_params(prepared, tmp_path, **text_encoder):
    raw = merge(yaml.safe_load((ROOT / "params.yaml").read_text()), TINY)
    raw["prepare"]["out"] = str(prepared)
    raw["data"]["raw_dir"] = str(tmp_path / "raw")
    raw["stage_times"] = str(tmp_path / "stages")  # not the checkout's metrics/stages/
    raw["text_encoder"].update(
        weights=str(tmp_path / "encoder.pt"),
        metrics=str(tmp_path / "text_encoder.json"),
        epochs=2,
        device="cpu",
        **text_encoder,
    )
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return parse_params(raw), tmp_path / "params.yaml"


def test_caption_pairs_flatten_a_split_and_skip_empty_captions():
    split = {
        "captions": np.array([["a red bird", ""], ["a blue bird", "green wings"]], dtype=object),
        "embeddings": np.arange(12, dtype=np.float32).reshape(2, 2, 3),
    }
    texts, targets, groups = caption_pairs(split)
    assert texts == ["a red bird", "a blue bird", "green wings"]
    assert targets.tolist() == [[0, 1, 2], [6, 7, 8], [9, 10, 11]] and groups.tolist() == [0, 1, 1]


def test_fitted_encoder_is_scored_on_test_captions_and_saved(tiny_prepared, tmp_path, capsys):
    params, params_file = stage_params(tiny_prepared, tmp_path, sizes={"c1": 16, "c2": 16, "c3": 16, "hidden": 16})
    assert main(["--params", str(params_file), "train-text-encoder"]) == 0
    assert "test captions cosine" in capsys.readouterr().out
    metrics = json.loads((tmp_path / "text_encoder.json").read_text())
    test = read_prepared(tiny_prepared, "test", ("captions", "embeddings"))
    train = read_prepared(tiny_prepared, "train", ("captions",))
    assert metrics["source"] == "fit" and metrics["test_captions"] == len(caption_pairs(test)[0])
    assert metrics["train_captions"] == int((train["captions"] != "").sum())  # the training split only
    assert -1 <= metrics["test_cosine"] <= 1 and 0 <= metrics["test_top1"] <= 1
    model = load_encoder(params.text_encoder.weights)
    assert model.sizes["c1"] == 16 and model.sizes["out"] == test["embeddings"].shape[-1]
    # the saved weights give the scores written beside them
    texts, targets, _ = caption_pairs(test)
    pred = torch.nn.functional.normalize(torch.from_numpy(encode(model, texts)), dim=1)
    cos = (pred * torch.nn.functional.normalize(torch.from_numpy(targets), dim=1)).sum(1).mean()
    assert abs(float(cos) - metrics["test_cosine"]) < 1e-4


def test_reed_source_imports_the_t7_in_the_raw_data(tiny_prepared, tmp_path):
    from reed_t7_files import bare_encoder, random_weights, write_t7

    params, _ = stage_params(tiny_prepared, tmp_path, source="reed", reed_t7="text_encoder/reed.t7")
    with pytest.raises(ConfigError, match=r"raw/text_encoder/reed.t7: Reed's encoder not found .*gancls fetch"):
        train_text_encoder(tiny_prepared, params)
    assert not (tmp_path / "encoder.pt").exists() and not (tmp_path / "text_encoder.json").exists()

    weights = random_weights(out=1024)
    (tmp_path / "raw/text_encoder").mkdir(parents=True)
    write_t7(tmp_path / "raw/text_encoder/reed.t7", bare_encoder(weights))
    metrics = train_text_encoder(tiny_prepared, params)
    assert metrics["source"] == "reed" and metrics["final_loss"] is None
    loaded = load_encoder(params.text_encoder.weights).state_dict()
    assert np.allclose(loaded["out.weight"].numpy(), weights["linear"][0])
