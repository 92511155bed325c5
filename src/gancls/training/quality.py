"""Quality over training: KID and FID of the averaged G's images against the real test images, every
``train.eval_every`` epochs (and at the last), logged to DVCLive beside the losses, so that
``dvc plots show`` shows the pictures getting better (or not), not only the losses moving.

The probe draws ``train.eval_images`` test captions (spread over the split, first caption each) with
fixed noise, and scores them with evaluate's extractor against the cached real test features
(``gancls real-features``; evaluate's KID subset settings).  It watches the run and changes nothing in
it: ``eval_every`` and ``eval_images`` are run keys (no retraining).  FID at a few hundred images is
biased upwards (REFERENCE §4): compare the curve with itself, and with evaluate's FID only at equal
counts.  Without the real features the probe is off, and says why once.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..config import Params
from ..data.prepared import read_prepared
from ..drawing.generate import to_uint8
from ..evaluation.evaluate import InceptionFeatures, extract, extractor_path, load_real_features, score_features, sha1


class QualityProbe:
    def __init__(self, params: Params, prepared: str | Path, device: torch.device):
        cfg = params.evaluate
        path = extractor_path(cfg.feature_extractor)
        self.real = load_real_features(cfg.real_features, sha1(path), int(params.model.image_size))
        test = read_prepared(prepared, "test")
        n = min(int(params.train.eval_images), len(test["embeddings"]))
        idx = np.linspace(0, len(test["embeddings"]) - 1, n).astype(int)
        self.text = torch.from_numpy(np.asarray(test["embeddings"][idx, 0], dtype=np.float32)).to(device)
        gen = torch.Generator(device="cpu").manual_seed(int(params.seed) + 11)
        self.z = torch.randn(n, params.model.z_dim, generator=gen).to(device)
        self.inception = InceptionFeatures(path).to(device)
        self.cfg, self.device = cfg, device

    @torch.no_grad()
    def __call__(self, g: torch.nn.Module) -> dict[str, float]:
        """``kid`` (x1000, mean over subsets), ``kid_std`` (x1000) and ``fid`` of ``g``'s images."""
        bs = int(self.cfg.batch_size)
        images = np.concatenate(
            [to_uint8(g(self.z[s : s + bs], self.text[s : s + bs])) for s in range(0, len(self.z), bs)]
        )
        scores = score_features(self.real, extract(images, self.inception, bs, self.device), self.cfg, self.device)
        return {
            "kid": round(scores["kid_mean"] * 1000, 3),
            "kid_std": round(scores["kid_std"] * 1000, 3),
            "fid": round(scores["fid"], 2),
        }


def quality_probe(params: Params, prepared: str | Path, device: torch.device, say) -> QualityProbe | None:
    """The probe, or None when ``train.eval_every`` is 0 or the real features are missing (said once)."""
    if not params.train.eval_every:
        return None
    if not Path(params.evaluate.real_features).is_file():
        say(f"quality probe off: {params.evaluate.real_features} not found (gancls real-features writes it)")
        return None
    return QualityProbe(params, prepared, device)
