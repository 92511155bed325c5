import numpy as np
import pytest
import torch
from torch import nn

from gancls.config import ConfigError
from gancls.evaluation.evaluate import FID_HELPER, InceptionFeatures, center_crop, extractor_path, score, sha1

from conftest import section

CFG = section("evaluate", kid_subset_size=50, kid_subsets=10, batch_size=16)


class ChannelMean(nn.Module):
    """Small exact extractor (REFERENCE §4): per-channel mean of the image, in units of 100."""

    num_features = 3

    def forward(self, x):
        return x.double().mean(dim=(2, 3)) / 100


def images(n, seed, high=200):
    return np.random.default_rng(seed).integers(0, high, (n, 8, 8, 3), dtype=np.uint8)


def test_fid_is_3c2_for_a_constant_shift():
    real = images(64, 0)
    fake = real + 10  # every channel mean moves by 10 (0.1 in feature units), covariances unchanged
    out = score(real, fake, ChannelMean(), CFG, "cpu")
    assert out["fid"] == pytest.approx(3 * 0.1**2, rel=1e-4)
    assert out["n_real"] == 64 and out["n_fake"] == 64
    assert out["kid_mean"] > 0


def test_identical_sets_score_zero():
    real = images(64, 1)
    out = score(real, real.copy(), ChannelMean(), CFG, "cpu")
    assert abs(out["fid"]) < 1e-8
    shifted = score(real, real + 30, ChannelMean(), CFG, "cpu")
    assert abs(out["kid_mean"]) < shifted["kid_mean"] / 10


def test_kid_subset_is_capped_by_sample_count():
    out = score(images(12, 2), images(20, 3), ChannelMean(), CFG, "cpu")
    assert out["kid_subset_size"] == 12


def test_offline_inception_is_the_documented_file():
    path = extractor_path(FID_HELPER)
    assert sha1(path) == "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"  # REFERENCE.md §4
    net = InceptionFeatures(path)
    x = torch.from_numpy(images(2, 4, 256)).permute(0, 3, 1, 2).contiguous()
    feats = net(x)
    assert feats.shape == (2, 2048) and torch.isfinite(feats).all()
    assert not torch.allclose(feats[0], feats[1])


def test_missing_extractor_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        extractor_path(str(tmp_path / "nope.pt"))


def test_center_crop():
    x = np.arange(2 * 76 * 76 * 3).reshape(2, 76, 76, 3)
    assert center_crop(x, 64).shape == (2, 64, 64, 3)
    assert center_crop(x, 64)[0, 0, 0, 0] == x[0, 6, 6, 0]


class TinyClassifier(nn.Module):
    """uint8 NCHW -> logits over 3 classes by which channel is brightest (a stand-in IS classifier)."""

    def forward(self, x):
        return x.float().mean(dim=(2, 3)) * 0.05  # 12.75 for a full channel: confident, finite


def test_inception_score_with_a_classifier_and_can_fail():
    from gancls.evaluation.evaluate import inception_score

    clf = torch.jit.script(TinyClassifier())
    cfg = section("evaluate", is_splits=2, batch_size=8)
    torch.manual_seed(0)  # torchmetrics shuffles the images into splits
    diverse = np.zeros((300, 8, 8, 3), np.uint8)
    for i in range(300):
        diverse[i, :, :, i % 3] = 255  # three confident, equally used classes: IS = 3
    same = np.zeros((300, 8, 8, 3), np.uint8)
    same[..., 0] = 255  # one class only: IS = 1
    assert inception_score(diverse, clf, cfg, "cpu")["is"] == pytest.approx(3.0, rel=0.02)
    assert inception_score(same, clf, cfg, "cpu")["is"] == pytest.approx(1.0, rel=1e-3)


def test_real_features_from_another_extractor_are_refused(tmp_path):
    from gancls.evaluation.evaluate import load_real_features

    path = tmp_path / "f.npz"
    np.savez(path, features=np.zeros((4, 3)), extractor_sha1=np.array("abc"), image_size=np.array(64))
    assert load_real_features(path, "abc", 64).shape == (4, 3)
    with pytest.raises(ConfigError, match="another feature extractor"):
        load_real_features(path, "def", 64)
    with pytest.raises(FileNotFoundError, match="real-features"):
        load_real_features(tmp_path / "missing.npz", "abc", 64)
