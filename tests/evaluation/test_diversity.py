"""The diversity score (gancls.evaluation.diversity) on the session's tiny trained model: it must tell a generator
that uses its noise from one that ignores it, and read the real reference the same way for both."""

import h5py
import numpy as np
import torch
from torch import nn

from gancls.data.prepared import center_crop, read_prepared
from gancls.drawing.generate import write_noise_sets
from gancls.evaluation.diversity import agreeing_images, feature_spread, read_noise_sets, unnamed_distinct
from gancls.evaluation.scorer import load_scorer
from gancls.models.generator_file import load_generator


class IgnoresZ(nn.Module):
    """The same generator with its noise input zeroed: one picture per caption."""

    def __init__(self, g):
        super().__init__()
        self.g = g

    def forward(self, z, embedding):
        return self.g(torch.zeros_like(z), embedding)


def pixels(images: np.ndarray) -> torch.Tensor:
    """A stand-in feature extractor: the raw pixels (the Inception one is tested in test_evaluate)."""
    return torch.from_numpy(images.reshape(len(images), -1).astype(np.float64))


def test_agreeing_images_have_every_named_value():
    targets = np.array([[0, 1], [0, 2], [1, 1], [-1, 1]])
    assert agreeing_images({"body": 0}, targets, ["body", "pose"]).tolist() == [0, 1]
    assert agreeing_images({"body": 0, "pose": 1}, targets, ["body", "pose"]).tolist() == [0]
    assert agreeing_images({}, targets, ["body", "pose"]).tolist() == [0, 1, 2, 3]


def test_a_generator_that_ignores_z_scores_at_the_floor(learned, tmp_path):
    params = learned["params"]
    g, mcfg = load_generator(learned["model"] / "generator.pt", torch.device("cpu"))
    test = read_prepared(learned["prepared"], "test")
    scorer = load_scorer(learned["scorer"])
    seed = int(params.seed)
    scores = {}
    for name, model in (("trained", g), ("ignores_z", IgnoresZ(g).eval())):
        path = write_noise_sets(model, test, mcfg, params.generate, tmp_path / f"{name}.h5", seed, "cpu")
        with h5py.File(path) as h5:
            k = min(params.generate.noise_set_captions, len(test["keys"]))
            assert h5["images"].shape == (k, params.generate.noise_set_size, 64, 64, 3)
            assert len(h5["captions"]) == len(h5["keys"]) == k
        sets = read_noise_sets(path)
        scores[name] = {
            **unnamed_distinct(sets, test, *scorer, 64, seed, "cpu"),
            **feature_spread(sets, test, pixels(center_crop(test["images"], 64)), pixels, 10, seed),
        }
    trained, ignored = scores["trained"], scores["ignores_z"]
    assert ignored["captions"] == trained["captions"] > 5  # captions with enough agreeing real images
    # z ignored: one value per attribute, no pixel or feature spread -- the floor
    assert ignored["unnamed_distinct"]["generated"] == 1.0 and ignored["pixel_std"]["generated"] == 0.0
    assert ignored["feature_spread"]["generated"] == 0.0
    # the same real reference for both, well above the floor
    assert ignored["unnamed_distinct"]["real"] == trained["unnamed_distinct"]["real"] > 1.5
    assert ignored["pixel_std"]["real"] == trained["pixel_std"]["real"] > 10
    # the trained generator uses its noise, however little
    assert trained["unnamed_distinct"]["generated"] >= 1.0
    assert trained["pixel_std"]["generated"] > 0.5 and trained["feature_spread"]["generated"] > 0
    assert set(trained["per_kind"]) <= {"pose", "background", "size"} and "background" in trained["per_kind"]
