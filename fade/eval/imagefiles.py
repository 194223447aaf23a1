"""Read a folder of image files as tensors: FID reference sets and face reference photos.

Images come back as float tensors (3, H, W) in [0, 1], RGB, the layout every detector and
feature network of :mod:`fade.eval` takes. Files are read in sorted path order (recursively),
so the same folder always gives the same set in the same order. A folder that does not exist
or holds no image is a user mistake: a one-line :class:`~fade.errors.FadeError`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from fade.errors import FadeError

#: File endings read as images (case-insensitive).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


def image_files(folder: str | Path, what: str = "image folder") -> list[Path]:
    """The image files under `folder` (recursively, sorted); `what` names it in errors."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise FadeError(f"{what} {folder} does not exist or is not a folder")
    files = sorted(
        p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
    )
    if not files:
        raise FadeError(
            f"{what} {folder} holds no image ({', '.join(e[1:] for e in IMAGE_EXTENSIONS)})"
        )
    return files


def load_image(path: str | Path) -> torch.Tensor:
    """One image file as (3, H, W) float in [0, 1], RGB."""
    try:
        with Image.open(path) as image:
            pixels = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    except (OSError, UnidentifiedImageError) as exc:
        raise FadeError(f"cannot read image {path}: {exc}") from exc
    return torch.from_numpy(pixels).permute(2, 0, 1).contiguous()


def load_folder(folder: str | Path, what: str = "image folder") -> list[torch.Tensor]:
    """Every image under `folder` (sizes may differ, so a list rather than one tensor)."""
    return [load_image(path) for path in image_files(folder, what)]
