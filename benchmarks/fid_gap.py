"""Issue 31 diagnostic: what FID at 8x the floor is made of.

(a) Generalisation or rendering?  The shipped G drawn from 500 training captions, against the same
500 training images (centre crops) and against evaluate's reference (the test images).  If G scored
far better on its training classes, the gap would be the unseen test classes; if alike, it is how G
draws.  (b) What FID reads as a defect: 500 real training images, degraded (Gaussian pixel noise,
Gaussian blur, down- and up-sampling through 32 and 16 pixels), against evaluate's reference; the
clean images give the real-vs-real floor of other classes.  (c) At which scale G is wrong: G drawn
from the 500 test captions and the 500 test images, both through 16 and 32 pixels, against each
other (coarse shapes and colours right: near the floor at 16 pixels).  One JSON line per measurement.

.venv/bin/python benchmarks/fid_gap.py   # after make run (build/model/generator.pt); about 4 min on 2 cores
"""

if __name__ == "__main__":
    import json

    import numpy as np
    import torch
    from PIL import Image, ImageFilter
    from reference import reference

    from gancls.data.prepared import center_crop, read_prepared
    from gancls.drawing.generate import to_uint8
    from gancls.evaluation.evaluate import extract, score_features
    from gancls.models.generator_file import load_generator

    cpu = torch.device("cpu")
    p, extractor, test_feats = reference()
    cfg, size = p.evaluate, p.model.image_size
    train = read_prepared(p.prepare.out, "train")
    rng = np.random.default_rng(0)
    idx = np.sort(rng.choice(len(train["images"]), 500, replace=False))
    clean = center_crop(train["images"][idx], size)
    train_feats = extract(clean, extractor, cfg.batch_size, cpu)

    def fid(images: np.ndarray, against: torch.Tensor = test_feats) -> float:
        return round(score_features(against, extract(images, extractor, cfg.batch_size, cpu), cfg, cpu)["fid"], 1)

    def show(what: str, value: float) -> None:
        print(json.dumps({"measured": what, "fid": value}), flush=True)

    loaded = load_generator(f"{p.train.out_dir}/generator.pt")
    g = (loaded[0] if isinstance(loaded, tuple) else loaded).eval()
    text = torch.from_numpy(np.asarray(train["embeddings"][idx, 0], dtype=np.float32))
    z = torch.randn(len(idx), p.model.z_dim, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        drawn = np.concatenate([to_uint8(g(z[s : s + 100], text[s : s + 100])) for s in range(0, len(z), 100)])
    show("G(training captions) vs those training images", fid(drawn, train_feats))
    show("G(training captions) vs the test reference", fid(drawn))
    show(
        "real training images (other classes) vs the test reference",
        round(score_features(test_feats, train_feats, cfg, cpu)["fid"], 1),
    )
    for sigma in (5, 10, 20):
        noisy = np.clip(clean + rng.normal(0, sigma, clean.shape), 0, 255).astype(np.uint8)
        show(f"real + Gaussian pixel noise sd {sigma}/255", fid(noisy))
    for radius in (1.5, 2.5):
        show(
            f"real, Gaussian blur {radius} px",
            fid(np.stack([np.asarray(Image.fromarray(x).filter(ImageFilter.GaussianBlur(radius))) for x in clean])),
        )

    def through(images: np.ndarray, side: int) -> np.ndarray:
        return np.stack(
            [
                np.asarray(Image.fromarray(x).resize((side, side), Image.BILINEAR).resize((size, size), Image.BILINEAR))
                for x in images
            ]
        )

    for side in (32, 16):
        show(f"real through {side}x{side} pixels (bilinear)", fid(through(clean, side)))
    test = read_prepared(p.prepare.out, "test")
    tidx = np.sort(rng.choice(len(test["images"]), min(500, len(test["images"])), replace=False))
    test_text = torch.from_numpy(np.asarray(test["embeddings"][tidx, 0], dtype=np.float32))
    with torch.no_grad():
        drawn_test = np.concatenate(
            [
                to_uint8(g(z[s : s + 100][: len(test_text[s : s + 100])], test_text[s : s + 100]))
                for s in range(0, len(tidx), 100)
            ]
        )
    test_clean = center_crop(test["images"][tidx], size)
    for side in (32, 16):
        small_real = extract(through(test_clean, side), extractor, cfg.batch_size, cpu)
        show(
            f"G(test captions) vs the test images, both through {side}x{side} pixels",
            fid(through(drawn_test, side), small_real),
        )
