"""Pictures people read: image grids with the caption of each row beside it, and animated GIFs.

The grid itself is torchvision's ``make_grid``; this module adds the text panel and the GIF, and
writes through ``files.atomic_path`` so a reader never sees a half-written picture.
"""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image, ImageDraw, ImageFont
from torchvision.utils import make_grid

from ..files import atomic_path

PANEL_WIDTH = 360
LINE_HEIGHT = 12


def _wrap(draw: ImageDraw.ImageDraw, text: str, width: int, font) -> list[str]:
    lines: list[str] = []
    for paragraph in text.split("\n"):
        line = ""
        for word in paragraph.split():
            if draw.textlength(f"{line} {word}".strip(), font=font) > width - 8 and line:
                lines.append(line)
                line = word
            else:
                line = f"{line} {word}".strip()
        lines.append(line)
    return lines


def captioned_image(
    images: torch.Tensor, labels: list[str], ncol: int, title: str | None = None, panel_width: int = PANEL_WIDTH
) -> Image.Image:
    """Rows of ``ncol`` images (float in [-1, 1], NCHW), each row's label on a panel to its left.

    A ``title`` line goes above the grid when given.
    """
    grid = make_grid(images.float().cpu(), nrow=ncol, padding=2, normalize=True, value_range=(-1, 1))
    grid_img = Image.fromarray(grid.mul(255).round().byte().permute(1, 2, 0).numpy())
    top = LINE_HEIGHT + 6 if title else 0
    row_h = images.shape[2] + 2
    canvas = Image.new("RGB", (panel_width + grid_img.width, grid_img.height + top), "white")
    canvas.paste(grid_img, (panel_width, top))
    draw, font = ImageDraw.Draw(canvas), ImageFont.load_default()
    if title:
        draw.text((4, 3), title, fill="black", font=font)
    for r, label in enumerate(labels):
        lines = _wrap(draw, label, panel_width, font)
        for j, text in enumerate(lines[: max(row_h // LINE_HEIGHT, 1)]):
            draw.text((4, top + r * row_h + 4 + LINE_HEIGHT * j), text, fill="black", font=font)
    return canvas


def save_png(image: Image.Image, path: str | Path) -> Path:
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")
    return Path(path)


def captioned_grid(
    images: torch.Tensor, labels: list[str], ncol: int, path: str | Path, title: str | None = None
) -> Path:
    """``captioned_image`` written to ``path`` as PNG."""
    return save_png(captioned_image(images, labels, ncol, title), path)


def save_gif(frames: list[Image.Image], path: str | Path, ms_per_frame: int = 400) -> Path:
    """Animated GIF of the frames (the last one held three times as long), looping forever."""
    if not frames:
        raise ValueError(f"{path}: no frames to write")
    durations = [ms_per_frame] * (len(frames) - 1) + [ms_per_frame * 3]
    with atomic_path(path) as tmp:
        frames[0].save(
            tmp, format="GIF", save_all=True, append_images=frames[1:], duration=durations, loop=0, optimize=False
        )
    return Path(path)


def lerp(a: torch.Tensor, b: torch.Tensor, steps: int) -> torch.Tensor:
    """``steps`` points from a to b (inclusive) along the straight line: (steps, *a.shape)."""
    t = torch.linspace(0, 1, steps, device=a.device).view(-1, *([1] * a.dim()))
    return (1 - t) * a + t * b


def slerp(a: torch.Tensor, b: torch.Tensor, steps: int) -> torch.Tensor:
    """``steps`` points from a to b on the great circle (for Gaussian noise vectors)."""
    t = torch.linspace(0, 1, steps, device=a.device).view(-1, 1)
    an, bn = a / a.norm(), b / b.norm()
    omega = torch.arccos((an * bn).sum().clamp(-1 + 1e-7, 1 - 1e-7))
    so = torch.sin(omega)
    return (torch.sin((1 - t) * omega) / so) * a + (torch.sin(t * omega) / so) * b
