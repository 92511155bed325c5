"""generate stage: images from the test split's captions, and a captioned sample grid.

Sample i uses test image ``i mod N`` and its caption ``(i div N) mod 10`` (one caption embedding, as
in the StackGAN evaluation protocol), with fresh noise.  The images go to one HDF5 file
(thousands of small PNGs are slow for DVC to hash)::

    images    uint8 (num_samples, 64, 64, 3)
    keys      str   (num_samples,)   the test image whose caption was used
    caption_index int (num_samples,)
    captions  str   (num_samples,)
"""
from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torchvision.utils import make_grid

from .config import atomic_path, resolve_device, seed_everything
from .prepare import read_split
from .train import load_generator


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """G's tanh output (N, 3, H, W) in [-1, 1] -> uint8 (N, H, W, 3)."""
    x = ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


def captioned_grid(images: torch.Tensor, captions: list[str], ncol: int, path: Path) -> None:
    """Rows of ``ncol`` images (in [-1, 1]), each row's caption written on a panel to its left."""
    grid = make_grid(images.float().cpu(), nrow=ncol, padding=2, normalize=True, value_range=(-1, 1))
    grid_img = Image.fromarray(grid.mul(255).round().byte().permute(1, 2, 0).numpy())
    panel_w, row_h = 360, images.shape[2] + 2
    canvas = Image.new("RGB", (panel_w + grid_img.width, grid_img.height), "white")
    canvas.paste(grid_img, (panel_w, 0))
    draw, font = ImageDraw.Draw(canvas), ImageFont.load_default()
    for r, caption in enumerate(captions):
        words, lines, line = caption.split(), [], ""
        for w in words:  # wrap to the panel width
            if draw.textlength(f"{line} {w}".strip(), font=font) > panel_w - 8 and line:
                lines.append(line)
                line = w
            else:
                line = f"{line} {w}".strip()
        lines.append(line)
        for j, text in enumerate(lines[: max(row_h // 12, 1)]):
            draw.text((4, r * row_h + 4 + 12 * j), text, fill="black", font=font)
    with atomic_path(path) as tmp:
        canvas.save(tmp, format="PNG")


@torch.no_grad()
def generate(generator_path: str | Path, prepared: str | Path, params: dict) -> dict:
    cfg = params["generate"]
    seed_everything(int(params["seed"]) + 1)
    device = resolve_device(params["train"]["device"])
    g, mcfg = load_generator(generator_path, device)
    test = read_split(prepared, "test")
    n_img, n_cap = test["embeddings"].shape[:2]
    n = int(cfg["num_samples"])
    img_idx = np.arange(n) % n_img
    cap_idx = (np.arange(n) // n_img) % n_cap
    emb = torch.from_numpy(test["embeddings"][img_idx, cap_idx])

    out = Path(cfg["out_dir"]) / "images.h5"
    with atomic_path(out) as tmp, h5py.File(tmp, "w") as h5:
        images = h5.create_dataset("images", (n, mcfg["image_size"], mcfg["image_size"], 3), np.uint8)
        for s in range(0, n, cfg["batch_size"]):
            e = emb[s:s + cfg["batch_size"]].to(device)
            images[s:s + len(e)] = to_uint8(g(torch.randn(len(e), mcfg["z_dim"], device=device), e))
        h5.create_dataset("keys", data=list(test["keys"][img_idx]), dtype=h5py.string_dtype())
        h5.create_dataset("caption_index", data=cap_idx.astype(np.int32))
        h5.create_dataset("captions", data=[test["captions"][i, j] for i, j in zip(img_idx, cap_idx)],
                          dtype=h5py.string_dtype())

    # Grid: distinct test images' first captions (rows) x fixed noise vectors (columns).
    rows = np.linspace(0, n_img - 1, min(cfg["grid_captions"], n_img)).astype(int)
    z = torch.randn(cfg["grid_noise"], mcfg["z_dim"], device=device)
    e = torch.from_numpy(test["embeddings"][rows, 0]).to(device)
    grid = g(z.repeat(len(rows), 1), e.repeat_interleave(len(z), dim=0))
    captioned_grid(grid, [str(test["captions"][r, 0]) for r in rows], len(z), Path(cfg["grid"]))
    return {"num_samples": n, "test_images": n_img, "images": str(out), "grid": cfg["grid"]}
