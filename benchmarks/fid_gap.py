"""Issue 31 diagnostic: what FID at 8x the floor is made of.

(a) Generalisation or rendering?  The shipped G drawn from 500 training captions, against the same
500 training images (centre crops) and against evaluate's reference (the test images).  If G scored
far better on its training classes, the gap would be the unseen test classes; if alike, it is how G
draws.  (b) What FID reads as a defect: 500 real training images, degraded (Gaussian pixel noise,
Gaussian blur, down- and up-sampling through 32 and 16 pixels), against evaluate's reference; the
clean images give the real-vs-real floor of other classes.  (c) At which scale G is wrong: G drawn
from the 500 test captions and the 500 test images, both through 16 and 32 pixels, against each
other (coarse shapes and colours right: near the floor at 16 pixels).  (d) What G's fine texture
(speckle, a faint grid) costs: G(test captions) against the reference as drawn, and smoothed (Gaussian
blur 0.5 / 0.75 / 1 px, a 3x3 median); the same smoothing of real images beside it says what the
smoothing itself costs.  One JSON line per measurement.

.venv/bin/python benchmarks/fid_gap.py [a b c d]   # after make run (build/model/generator.pt); all: about 5 min on 2 cores
"""

import json
import sys

import numpy as np
import torch
from PIL import Image, ImageFilter
from reference import reference

from gancls.data.prepared import center_crop, read_prepared
from gancls.drawing.generate import to_uint8
from gancls.evaluation.evaluate import extract, score_features
from gancls.models.generator_file import load_generator

CPU = torch.device("cpu")


def show(what: str, value: float) -> None:
    print(json.dumps({"measured": what, "fid": value}), flush=True)


def main(parts: set[str]) -> None:
    p, extractor, test_feats = reference()
    cfg, size = p.evaluate, p.model.image_size
    train = read_prepared(p.prepare.out, "train")
    rng = np.random.default_rng(0)
    idx = np.sort(rng.choice(len(train["images"]), 500, replace=False))
    clean = center_crop(train["images"][idx], size)
    train_feats = extract(clean, extractor, cfg.batch_size, CPU) if parts & {"a", "b"} else None  # (c), (d): unused

    def fid(images: np.ndarray, against: torch.Tensor = test_feats) -> float:
        return round(score_features(against, extract(images, extractor, cfg.batch_size, CPU), cfg, CPU)["fid"], 1)

    def each(images: np.ndarray, image_filter) -> np.ndarray:
        return np.stack([np.asarray(Image.fromarray(x).filter(image_filter)) for x in images])

    def through(images: np.ndarray, side: int) -> np.ndarray:
        return np.stack(
            [
                np.asarray(Image.fromarray(x).resize((side, side), Image.BILINEAR).resize((size, size), Image.BILINEAR))
                for x in images
            ]
        )

    def draw(text: torch.Tensor) -> np.ndarray:
        with torch.no_grad():
            return np.concatenate(
                [
                    to_uint8(g(z[s : s + 100][: len(text[s : s + 100])], text[s : s + 100]))
                    for s in range(0, len(text), 100)
                ]
            )

    loaded = load_generator(f"{p.train.out_dir}/generator.pt")
    g = (loaded[0] if isinstance(loaded, tuple) else loaded).eval()
    z = torch.randn(len(idx), p.model.z_dim, generator=torch.Generator().manual_seed(5))
    if "a" in parts:
        drawn = draw(torch.from_numpy(np.asarray(train["embeddings"][idx, 0], dtype=np.float32)))
        show("G(training captions) vs those training images", fid(drawn, train_feats))
        show("G(training captions) vs the test reference", fid(drawn))
    if "b" in parts:
        show(
            "real training images (other classes) vs the test reference",
            round(score_features(test_feats, train_feats, cfg, CPU)["fid"], 1),
        )
        for sigma in (5, 10, 20):
            noisy = np.clip(clean + rng.normal(0, sigma, clean.shape), 0, 255).astype(np.uint8)
            show(f"real + Gaussian pixel noise sd {sigma}/255", fid(noisy))
        for radius in (1.5, 2.5):
            show(f"real, Gaussian blur {radius} px", fid(each(clean, ImageFilter.GaussianBlur(radius))))
        for side in (32, 16):
            show(f"real through {side}x{side} pixels (bilinear)", fid(through(clean, side)))
    if parts & {"c", "d"}:
        test = read_prepared(p.prepare.out, "test")
        tidx = np.sort(
            np.random.default_rng(1).choice(len(test["images"]), min(500, len(test["images"])), replace=False)
        )
        drawn_test = draw(torch.from_numpy(np.asarray(test["embeddings"][tidx, 0], dtype=np.float32)))
    if "c" in parts:
        test_clean = center_crop(test["images"][tidx], size)
        for side in (32, 16):
            small_real = extract(through(test_clean, side), extractor, cfg.batch_size, CPU)
            show(
                f"G(test captions) vs the test images, both through {side}x{side} pixels",
                fid(through(drawn_test, side), small_real),
            )
    if "d" in parts:
        show("G(test captions) vs the test reference, as drawn", fid(drawn_test))
        smoothing = {f"Gaussian blur {r} px": ImageFilter.GaussianBlur(r) for r in (0.5, 0.75, 1.0)}
        smoothing["3x3 median"] = ImageFilter.MedianFilter(3)
        for name, image_filter in smoothing.items():
            show(f"G(test captions), {name}, vs the test reference", fid(each(drawn_test, image_filter)))
            show(f"real training images, {name}, vs the test reference", fid(each(clean, image_filter)))


if __name__ == "__main__":
    main(set(sys.argv[1:]) or {"a", "b", "c", "d"})
