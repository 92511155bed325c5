"""generate stage: images from the test split's captions, and the grids people look at.

Sample i uses test image ``a = i mod N`` and its caption ``(a + i div N) mod 10`` (one caption
embedding per image, as in the StackGAN evaluation protocol; every caption of an image is used
once every 10 rounds), with fresh noise.  The images go to one HDF5 file (thousands of small PNGs
are slow for DVC to hash)::

    images        uint8 (num_samples, 64, 64, 3)
    image_index   int   (num_samples,)   row of the test image in the prepared test split
    keys          str   (num_samples,)   that image's key
    class_ids     int   (num_samples,)   that image's class
    caption_index int   (num_samples,)
    captions      str   (num_samples,)
    encoded_images uint8 (num_samples, 64, 64, 3)  the same captions and noise, the caption's text
                                                   encoded by the text encoder (text_encoder.weights)
                                                   instead of its stored embedding

Grids (each row's caption written beside it):

* ``generate.grid``: test captions (rows) x fixed noise vectors (columns);
* ``generate.interp_grid`` (GAN-INT): at fixed noise, the text embedding moves from the caption of
  one test image to that of an image of another class;
* ``generate.noise_grid``: at a fixed caption, the noise moves between two vectors (the same two
  in every row), so what changes along a row is what the text leaves free (pose, background);
* ``generate.sentences_grid``: the sentences of ``generate.sentences`` (typed, not from the data),
  encoded by the text encoder, as ``gancls sample --text`` draws them;
* ``generate.side_by_side``: real test images beside images generated from one of their captions,
  at 2x (nearest) zoom: what FID compares, for people to see.  Read back from ``images.h5``: it
  draws no random numbers, so the other outputs do not depend on it.

Noise sets, for the diversity score (``gancls.evaluation.diversity``): ``generate.noise_set_captions`` test
captions (one per test image, drawn with the seed) with ``generate.noise_set_size`` noise vectors
each, in ``noise_sets.h5`` beside ``images.h5``::

    images        uint8 (K, M, 64, 64, 3)   caption k with noise vector m
    captions      str   (K,)
    keys          str   (K,)     the key of the test image the caption belongs to
    image_index   int   (K,)     its row in the prepared test split
    caption_index int   (K,)
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import torch
import torch.nn.functional as F

from ..config import ConfigError, Params, resolve_device, seed_everything
from ..data.prepared import center_crop, read_prepared
from ..files import atomic_path
from ..models.generator_file import load_generator
from ..models.text_encoder import encode, load_encoder
from .grids import captioned_grid, lerp, slerp


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """G's tanh output (N, 3, H, W) in [-1, 1] -> uint8 (N, H, W, 3)."""
    x = ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


def sample_plan(n: int, n_img: int, n_cap: int) -> tuple[np.ndarray, np.ndarray]:
    """(image index, caption index) of each of the ``n`` samples."""
    i = np.arange(n)
    img = i % n_img
    return img, (img + i // n_img) % n_cap


def interpolation_pairs(class_ids: np.ndarray, n_pairs: int, seed: int) -> list[tuple[int, int]]:
    """``n_pairs`` (a, b) test-image pairs of different classes, spread over the split."""
    rng = np.random.default_rng(seed)
    starts = np.linspace(0, len(class_ids) - 1, n_pairs).astype(int)
    pairs = []
    for a in starts:
        others = np.flatnonzero(class_ids != class_ids[a])
        if len(others):
            pairs.append((int(a), int(rng.choice(others))))
    return pairs


@torch.no_grad()
def write_noise_sets(g, test: dict, mcfg, cfg, out: Path, seed: int, device) -> Path:
    """K test captions, M noise vectors each: what changes along a row is what the noise decides."""
    n_img, n_cap = test["embeddings"].shape[:2]
    rng = np.random.default_rng(seed)
    k = min(int(cfg.noise_set_captions), n_img)
    img = np.sort(rng.choice(n_img, k, replace=False))
    cap = rng.integers(0, n_cap, k)
    m = int(cfg.noise_set_size)
    gen = torch.Generator().manual_seed(seed)
    with atomic_path(out) as tmp, h5py.File(tmp, "w") as h5:
        images = h5.create_dataset("images", (k, m, mcfg.image_size, mcfg.image_size, 3), np.uint8)
        for s in range(0, k, max(1, cfg.batch_size // m)):
            rows = slice(s, min(s + max(1, cfg.batch_size // m), k))
            e = torch.from_numpy(test["embeddings"][img[rows], cap[rows]]).to(device)
            z = torch.randn(len(e) * m, mcfg.z_dim, generator=gen).to(device)
            images[rows] = to_uint8(g(z, e.repeat_interleave(m, dim=0))).reshape(len(e), m, *images.shape[2:])
        h5.create_dataset(
            "captions", data=[str(test["captions"][i, j]) for i, j in zip(img, cap)], dtype=h5py.string_dtype()
        )
        h5.create_dataset("keys", data=[str(x) for x in test["keys"][img]], dtype=h5py.string_dtype())
        h5.create_dataset("image_index", data=img.astype(np.int32))
        h5.create_dataset("caption_index", data=cap.astype(np.int32))
    return out


@torch.no_grad()
def side_by_side(images_h5: Path, test: dict, size: int, rows: int, path: str | Path) -> Path:
    """``rows`` generated images of ``images_h5``, each beside the real test image whose caption drew it
    (its centre crop, as FID sees it), enlarged 2x with nearest-neighbour, the caption beside the pair."""
    with h5py.File(images_h5, "r") as h5:
        picks = np.unique(np.linspace(0, min(len(h5["images"]), len(test["images"])) - 1, rows).astype(int))
        fake, index, captions = h5["images"][picks], h5["image_index"][picks], h5["captions"][picks]
    real = center_crop(test["images"][index], size)
    pairs = torch.from_numpy(np.stack([real, fake], axis=1).reshape(-1, size, size, 3)).permute(0, 3, 1, 2)
    pairs = F.interpolate(pairs.float() / 127.5 - 1, scale_factor=2, mode="nearest")
    labels = [c.decode() if isinstance(c, bytes) else str(c) for c in captions]
    return captioned_grid(
        pairs, labels, 2, path, title="real test image (left), generated from its caption (right), 2x"
    )


def generate(generator_path: str | Path, prepared: str | Path, params: Params) -> dict:
    cfg = params.generate
    seed = int(params.seed) + 1
    seed_everything(seed)
    device = resolve_device(params.train.device)
    g, mcfg = load_generator(generator_path, device)
    test = read_prepared(prepared, "test")
    n_img, n_cap = test["embeddings"].shape[:2]
    n = int(cfg.num_samples)
    img_idx, cap_idx = sample_plan(n, n_img, n_cap)
    emb = torch.from_numpy(test["embeddings"][img_idx, cap_idx])
    captions = [str(test["captions"][i, j]) for i, j in zip(img_idx, cap_idx)]
    encoder = load_encoder(params.text_encoder.weights, device)
    if encoder.sizes["out"] != mcfg.embedding_dim:
        raise ConfigError(
            f"{params.text_encoder.weights}: the text encoder gives {encoder.sizes['out']}-d "
            f"embeddings, the generator reads {mcfg.embedding_dim}-d ones"
        )
    encoded = torch.from_numpy(encode(encoder, captions))

    out = Path(cfg.out_dir) / "images.h5"
    shape = (n, mcfg.image_size, mcfg.image_size, 3)
    with atomic_path(out) as tmp, h5py.File(tmp, "w") as h5:
        images = h5.create_dataset("images", shape, np.uint8)
        encoded_images = h5.create_dataset("encoded_images", shape, np.uint8)
        for s in range(0, n, cfg.batch_size):
            e = emb[s : s + cfg.batch_size].to(device)
            z = torch.randn(len(e), mcfg.z_dim, device=device)
            images[s : s + len(e)] = to_uint8(g(z, e))
            encoded_images[s : s + len(e)] = to_uint8(g(z, encoded[s : s + len(e)].to(device)))
        h5.create_dataset("image_index", data=img_idx.astype(np.int32))
        h5.create_dataset("keys", data=list(test["keys"][img_idx]), dtype=h5py.string_dtype())
        h5.create_dataset("class_ids", data=test["class_ids"][img_idx].astype(np.int32))
        h5.create_dataset("caption_index", data=cap_idx.astype(np.int32))
        h5.create_dataset("captions", data=captions, dtype=h5py.string_dtype())

    noise_sets = write_noise_sets(g, test, mcfg, cfg, Path(cfg.out_dir) / "noise_sets.h5", seed, device)

    def emb_of(i: int) -> torch.Tensor:
        return torch.from_numpy(test["embeddings"][i, 0]).to(device)

    # Captions (rows) x fixed noise (columns).
    rows = np.linspace(0, n_img - 1, min(cfg.grid_captions, n_img)).astype(int)
    z = torch.randn(cfg.grid_noise, mcfg.z_dim, device=device)
    e = torch.stack([emb_of(r) for r in rows])
    grid = g(z.repeat(len(rows), 1), e.repeat_interleave(len(z), dim=0))
    captioned_grid(
        grid,
        [str(test["captions"][r, 0]) for r in rows],
        len(z),
        cfg.grid,
        title="test captions (rows) x noise vectors (columns)",
    )

    # GAN-INT: text interpolated between two captions of different classes, noise fixed per row.
    steps = int(cfg.interp_steps)
    pairs = interpolation_pairs(test["class_ids"], int(cfg.interp_pairs), seed)
    z_row = torch.randn(len(pairs), mcfg.z_dim, device=device)
    texts = torch.cat([lerp(emb_of(a), emb_of(b), steps) for a, b in pairs])
    grid = g(z_row.repeat_interleave(steps, dim=0), texts)
    labels = [f"from: {test['captions'][a, 0]}\nto: {test['captions'][b, 0]}" for a, b in pairs]
    captioned_grid(
        grid, labels, steps, cfg.interp_grid, title="text interpolation at fixed noise (left: 'from', right: 'to')"
    )

    # Noise interpolation at fixed captions (the same two noise vectors in every row).
    z_path = slerp(*torch.randn(2, mcfg.z_dim, device=device), steps)
    e = torch.stack([emb_of(a) for a, _ in pairs])
    grid = g(z_path.repeat(len(pairs), 1), e.repeat_interleave(steps, dim=0))
    captioned_grid(
        grid,
        [str(test["captions"][a, 0]) for a, _ in pairs],
        steps,
        cfg.noise_grid,
        title="noise interpolation at fixed caption",
    )

    # Typed sentences, as `gancls sample --text` draws them (fixed noise per column).
    sentences = list(cfg.sentences)
    e = torch.from_numpy(encode(encoder, sentences)).to(device)
    grid = g(z.repeat(len(sentences), 1), e.repeat_interleave(len(z), dim=0))
    captioned_grid(
        grid,
        sentences,
        len(z),
        cfg.sentences_grid,
        title="typed sentences, encoded by the text encoder (rows) x noise vectors (columns)",
    )
    side_by_side(out, test, int(params.model.image_size), int(cfg.grid_captions), cfg.side_by_side)
    return {
        "num_samples": n,
        "test_images": n_img,
        "images": str(out),
        "noise_sets": str(noise_sets),
        "grid": cfg.grid,
        "interp_grid": cfg.interp_grid,
        "noise_grid": cfg.noise_grid,
        "sentences_grid": cfg.sentences_grid,
    }
