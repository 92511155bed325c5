"""What the diagnostic benchmarks (crop_cost.py, fid_gap.py) score against: params.yaml, evaluate's
Inception extractor and the cached real test features (``gancls real-features``), on 2 CPU threads."""

import torch

from gancls.config import load_params
from gancls.evaluation.evaluate import InceptionFeatures, extractor_path, load_real_features, sha1


def reference():
    """(params, extractor, real test features), as evaluate reads them."""
    torch.set_num_threads(2)
    p = load_params("params.yaml")
    path = extractor_path(p.evaluate.feature_extractor)
    real = load_real_features(p.evaluate.real_features, sha1(path), p.model.image_size)
    return p, InceptionFeatures(path), real
