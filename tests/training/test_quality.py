"""The quality probe (training/quality.py): KID and FID of G's images against the real test features,
with a small exact extractor (REFERENCE §4); it tells a G that draws the real images from a blank one."""

import numpy as np
import pytest
import torch
from torch import nn

from gancls.data.prepared import center_crop, read_prepared
from gancls.evaluation.evaluate import sha1
from gancls.training.quality import QualityProbe, quality_probe

from conftest import tiny_run_params


class ChannelStats(nn.Module):
    """Per-channel mean and spread of the image, of the (x - 128) / 128 scaled input, times 10 (six features)."""

    def forward(self, x):
        return torch.cat([x.mean(dim=(2, 3)), x.std(dim=(2, 3))], dim=1) * 10


class Replay(nn.Module):
    """A "generator" that draws the given images (in [-1, 1]) in order, or a blank grey one."""

    def __init__(self, images: np.ndarray | None):
        super().__init__()
        self.images = None if images is None else torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
        self.at = 0

    def forward(self, z, text):
        n = len(z)
        if self.images is None:
            return torch.zeros(n, 3, 64, 64)
        out = self.images[self.at : self.at + n]
        self.at += n
        return out


def test_the_probe_tells_real_images_from_blank_ones(tiny_prepared, tmp_path):
    extractor = tmp_path / "stats.pt"
    torch.jit.script(ChannelStats()).save(str(extractor))
    params, raw = tiny_run_params(tiny_prepared, tmp_path / "run", eval_every=1, eval_images=8)
    real = center_crop(read_prepared(tiny_prepared, "test")["images"], 64)
    from gancls.config import parse_params

    raw["evaluate"].update(
        feature_extractor=str(extractor), real_features=str(tmp_path / "real.npz"), kid_subset_size=4, kid_subsets=20
    )
    params = parse_params(raw)
    said = []
    assert quality_probe(params, tiny_prepared, torch.device("cpu"), said.append) is None  # no real features yet
    assert "not found" in said[0] and "real-features" in said[0]

    from gancls.evaluation.evaluate import InceptionFeatures, extract

    feats = extract(real, InceptionFeatures(extractor), 8, "cpu")
    np.savez(tmp_path / "real.npz", features=feats.numpy(), extractor_sha1=np.array(sha1(extractor)), image_size=64)
    probe = quality_probe(params, tiny_prepared, torch.device("cpu"), said.append)
    assert isinstance(probe, QualityProbe) and len(probe.z) == 8
    same, blank = probe(Replay(real)), probe(Replay(None))
    assert same["fid"] == pytest.approx(0, abs=1e-3)  # resized to 299 and back: the statistics survive
    assert blank["fid"] > 1 and blank["kid"] > same["kid"] + 1
