"""Issue 31 diagnostic: what Reed's random training crop costs a perfect generator in FID.

The real test images, cropped as training crops them (``train.crop_jitter``: null is anywhere in the
load_size image, N is within N pixels of the centre), scored against evaluate's reference (the same
images' centre crops, ``evaluate.real_features``) at evaluate's counts.  A generator that learnt the
training crops exactly would score this, not 0.

.venv/bin/python benchmarks/crop_cost.py [JITTER ...]   # default: null 4 2 0; after make run
"""

if __name__ == "__main__":
    import json
    import sys

    import numpy as np
    import torch
    from reference import reference

    from gancls.data.prepared import read_prepared
    from gancls.drawing.generate import to_uint8
    from gancls.evaluation.evaluate import extract, score_features
    from gancls.training.batches import Batches

    cpu = torch.device("cpu")
    p, extractor, real = reference()
    cfg, size = p.evaluate, p.model.image_size
    test = read_prepared(p.prepare.out, "test")
    idx = torch.arange(len(test["images"]))
    for arg in sys.argv[1:] or ["null", "4", "2", "0"]:
        jitter = None if arg == "null" else int(arg)
        crops = Batches(test, size, 1, False, "cpu", crop_jitter=jitter).augment(idx, torch.Generator().manual_seed(0))
        images = np.ascontiguousarray(to_uint8(crops))
        scores = score_features(real, extract(images, extractor, 16, cpu), cfg, cpu)
        print(
            json.dumps(
                {
                    "crop_jitter": jitter,
                    "fid": round(scores["fid"], 2),
                    "kid": round(scores["kid_mean"], 5),
                    "n": scores["n_fake"],
                }
            ),
            flush=True,
        )
