"""Image grids a person wants to look at: rows of generations, each row labelled.

Used for the toy world's concept sheet (docs/) and for before/after grids in reports.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

LABEL_WIDTH = 110


def _to_uint8(images: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(images, torch.Tensor):
        images = images.clamp(0, 1).mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return images


def labelled_grid(
    rows: list[tuple[str, torch.Tensor | np.ndarray]], scale: int = 2, gap: int = 2
) -> Image.Image:
    """One row per (label, images); images are (N, 3, H, W) in [0, 1] or (N, H, W, 3) uint8."""
    arrays = [(label, _to_uint8(images)) for label, images in rows]
    height, width = arrays[0][1].shape[1:3]
    columns = max(len(a) for _, a in arrays)
    cell_w, cell_h = width * scale + gap, height * scale + gap
    sheet = Image.new("RGB", (LABEL_WIDTH + columns * cell_w, len(arrays) * cell_h), "white")
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    for row, (label, images) in enumerate(arrays):
        y = row * cell_h
        draw.text((4, y + cell_h // 2 - 6), label, fill="black", font=font)
        for column, image in enumerate(images):
            tile = Image.fromarray(image).resize((width * scale, height * scale), Image.NEAREST)
            sheet.paste(tile, (LABEL_WIDTH + column * cell_w, y))
    return sheet


def save_grid(rows: list[tuple[str, torch.Tensor | np.ndarray]], path: Path, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    labelled_grid(rows, **kwargs).save(path)
    return path
