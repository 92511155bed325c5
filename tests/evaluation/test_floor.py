"""The real-against-real floor of FID and KID (gancls real-floor), and scores read against it.

On the sample the floor draws new real images (tests/test_pipeline.py runs it on the tiny pipeline);
here the CUB way, the two halves of the real test images, on features made for the test."""

import json

import numpy as np
import pytest
import yaml

from gancls.config import parse_params
from gancls.evaluation.evaluate import FID_HELPER, against_floor, extractor_path, read_floor, sha1
from gancls.evaluation.floor import real_floor
from gancls.runs.project import merge

from conftest import ROOT


def cub_params(tmp_path, seed=0):
    raw = merge(
        yaml.safe_load((ROOT / "params.yaml").read_text()),
        {
            "reference_seed": seed,
            "data": {"source": "cub"},
            "evaluate": {
                "real_features": str(tmp_path / "features.npz"),
                "floor": str(tmp_path / "floor.json"),
                "kid_subset_size": 20,
                "kid_subsets": 5,
            },
        },
    )
    return parse_params(raw)


def write_features(path, features):
    np.savez(
        path,
        features=features,
        extractor_sha1=np.array(sha1(extractor_path(FID_HELPER))),
        keys=np.array([str(i) for i in range(len(features))]),
        image_size=np.array(64),
    )


def test_cub_floor_is_the_two_halves_of_the_test_images(tmp_path):
    params = cub_params(tmp_path)
    write_features(tmp_path / "features.npz", np.random.default_rng(0).normal(size=(101, 16)))
    floor = real_floor(params)
    assert floor["n_real"] == 50 and floor["n_other"] == 51 and "two halves" in floor["how"]
    assert floor["fid_floor"] > 0 and json.loads((tmp_path / "floor.json").read_text()) == floor
    assert real_floor(params) == floor  # the KID subsets are drawn with the seed: the same floor again
    # the same features, another order of the halves (reference_seed): another floor, of the same size
    other = real_floor(cub_params(tmp_path, seed=1))
    assert other["fid_floor"] != floor["fid_floor"] and other["fid_floor"] == pytest.approx(floor["fid_floor"], rel=0.5)


def test_scores_are_read_as_multiples_of_the_floor_or_missing(tmp_path):
    digest = sha1(extractor_path(FID_HELPER))
    missing = against_floor({"fid": 100.0, "kid_mean": 0.1}, tmp_path / "floor.json", digest)
    assert missing["fid_floor"] is None and "gancls real-floor" in missing["floor_missing_reason"]
    floor = {"fid_floor": 25.0, "kid_floor": 0.002, "kid_floor_std": 0.001, "n_real": 500, "n_other": 500}
    floor.update(how="x", extractor_sha1=digest)
    (tmp_path / "floor.json").write_text(json.dumps(floor))
    out = against_floor({"fid": 100.0, "kid_mean": 0.1}, tmp_path / "floor.json", digest)
    assert out["fid_of_floor"] == 4.0 and out["kid_of_floor"] == 50.0 and out["floor"]["n_other"] == 500
    # a KID floor within its own spread (KID is unbiased: real against real is 0 within noise): no ratio
    (tmp_path / "floor.json").write_text(json.dumps({**floor, "kid_floor": 0.0002, "kid_floor_std": 0.001}))
    out = against_floor({"fid": 100.0, "kid_mean": 0.1}, tmp_path / "floor.json", digest)
    assert out["kid_of_floor"] is None and "compare it with 0" in out["kid_of_floor_missing_reason"]
    assert read_floor(tmp_path / "floor.json", "another extractor") is None  # a floor of another extractor
