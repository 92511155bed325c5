"""real-floor stage: FID and KID of real images against the real reference, at the evaluation's counts.

FID is biased at small counts (REFERENCE.md §8): 500 real images against 500 other real ones do not
score 0.  The floor is what a perfect generator would score with the same extractor and counts, and
``evaluate`` reports FID and KID next to it (``fid_floor``, ``kid_floor``, and the ratio).

* On the sample (``data.source: sample``): ``generate.num_samples`` new images of the test classes,
  drawn by the sample's own generator (the same class definitions, other random draws: ``seed``),
  prepared as the real ones are (box crop, ``prepare.load_size``, centre crop), against the cached
  features of the real test images (``real-features``): the very counts ``evaluate`` compares.
* On CUB there are no other real images of the test classes: the two halves of the test images
  (a seeded permutation), each against the other, at half the counts (said so in the output).

Computed once per reference (a DVC stage of its own), not at every ``evaluate``.
"""

from __future__ import annotations

import tempfile

import numpy as np
import torch

from ..config import Params, resolve_device, seed_everything
from ..data.prepare import load_image
from ..data.prepared import center_crop
from ..data.synthetic import more_test_images
from ..files import write_json
from .evaluate import InceptionFeatures, extract, extractor_path, load_real_features, score_features, sha1


def real_floor(params: Params) -> dict:
    """The floor's FID and KID (and how it was measured), written to ``evaluate.floor``."""
    cfg = params.evaluate
    seed_everything(int(params.reference_seed))  # KID draws random subsets
    device = resolve_device(cfg.device)
    path = extractor_path(cfg.feature_extractor)
    size = int(params.model.image_size)
    digest = sha1(path)  # the extractor file (about 100 MB) is hashed once
    real = load_real_features(cfg.real_features, digest, size)
    if params.data.source == "sample":
        n = int(params.generate.num_samples)
        with tempfile.TemporaryDirectory() as tmp:
            drawn = more_test_images(params.sample, n, int(params.reference_seed), tmp)
            load = int(params.prepare.load_size)
            images = np.stack([load_image(p, box, load, params.prepare.bbox_crop) for p, box in drawn])
        other = extract(center_crop(images, size), InceptionFeatures(path).to(device), int(cfg.batch_size), device)
        scores = score_features(real, other, cfg, device)
        how = (
            f"{len(other)} new images of the sample's test classes (other random draws of its generator) "
            f"against the {len(real)} real test images: the counts evaluate compares"
        )
    else:
        order = torch.from_numpy(np.random.default_rng(int(params.reference_seed)).permutation(len(real)))
        half = len(real) // 2
        scores = score_features(real[order[:half]], real[order[half:]], cfg, device)
        how = (
            f"the two halves of the {len(real)} real test images ({half} against {len(real) - half}), "
            "half the counts evaluate compares: a floor a little above the one at full counts"
        )
    result = {
        "fid_floor": round(scores["fid"], 4),
        "kid_floor": round(scores["kid_mean"], 6),
        "kid_floor_std": round(scores["kid_std"], 6),
        "n_real": scores["n_real"],
        "n_other": scores["n_fake"],
        "how": how,
        "extractor_sha1": digest,
    }
    write_json(cfg.floor, result)
    return result
