"""Render toy-world scenes to small RGB images with numpy.

A scene is a foreground figure (a shape or a glyph) with a colour and a fill texture on a plain
dark background, or on an artist's patterned background in the artist's colours. Negatives for
the detector (blobs, partial shapes, noise) are scenes too. Rendering is deterministic for a
scene (its placement is part of it) and fast enough to make a training batch on the fly.

Not a caption sampler (see `captions.py`) and not a dataset: it draws one scene.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from fade.toyworld.vocabulary import ARTISTS_BY_NAME, COLOURS, GLYPH_BITMAPS

BACKGROUND = np.array((12, 12, 16), dtype=np.float32)
DARK_SHADE = 0.3  # the darker half of a two-tone texture, as a fraction of the colour


@dataclass(frozen=True)
class Scene:
    """Everything one image shows. `figure` is "shape", "glyph" or a negative kind."""

    figure: str
    shape: str | None = None
    glyph: str | None = None
    colour: str | None = None
    texture: str | None = None
    artist: str | None = None
    cx: float = 0.0  # centre offset in [-1, 1] image units
    cy: float = 0.0
    scale: float = 0.7  # figure radius in image units
    seed: int = 0  # for negatives' random parts


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    coords = (np.arange(size, dtype=np.float32) + 0.5) / size * 2 - 1
    yy, xx = np.meshgrid(coords, coords, indexing="ij")
    return xx, yy


def _polygon(x: np.ndarray, y: np.ndarray, points: list[tuple[float, float]]) -> np.ndarray:
    """Even-odd point-in-polygon test, vectorised over pixels."""
    inside = np.zeros(x.shape, dtype=bool)
    count = len(points)
    for i in range(count):
        x1, y1 = points[i]
        x2, y2 = points[(i + 1) % count]
        crosses = (y1 > y) != (y2 > y)
        with np.errstate(divide="ignore", invalid="ignore"):
            x_at = (x2 - x1) * (y - y1) / (y2 - y1 + 1e-12) + x1
        inside ^= crosses & (x < x_at)
    return inside


def shape_mask(shape: str, x: np.ndarray, y: np.ndarray, s: float) -> np.ndarray:
    """Mask of a named shape of radius `s`, centred at the origin (y grows downwards)."""
    r = np.sqrt(x**2 + y**2)
    masks = {
        "circle": lambda: r < s,
        "square": lambda: np.maximum(abs(x), abs(y)) < s * 0.82,
        "triangle": lambda: _polygon(x, y, [(0, -s), (-s, s * 0.8), (s, s * 0.8)]),
        "diamond": lambda: abs(x) + abs(y) * 0.8 < s,
        "cross": lambda: (
            ((abs(x) < s * 0.33) & (abs(y) < s)) | ((abs(y) < s * 0.33) & (abs(x) < s))
        ),
        "heart": lambda: (
            ((x / s * 1.15) ** 2 + (-(y / s) * 1.15 + 0.15) ** 2 - 1) ** 3
            - (x / s * 1.15) ** 2 * (-(y / s) * 1.15 + 0.15) ** 3
            < 0
        ),
        "crescent": lambda: (r < s) & (np.sqrt((x - s * 0.45) ** 2 + (y + s * 0.1) ** 2) > s * 0.8),
        "arrow": lambda: _polygon(
            x,
            y,
            [
                (-s, -s * 0.4),
                (-s * 0.05, -s * 0.4),
                (-s * 0.05, -s * 0.95),
                (s, 0),
                (-s * 0.05, s * 0.95),
                (-s * 0.05, s * 0.4),
                (-s, s * 0.4),
            ],
        ),
        "ring": lambda: (r < s) & (r > s * 0.55),
        "oval": lambda: (x / s) ** 2 + (y / (s * 0.55)) ** 2 < 1,
    }
    return masks[shape]()


def glyph_mask(glyph: str, x: np.ndarray, y: np.ndarray, s: float) -> np.ndarray:
    """Mask of a bitmap letter whose height is 2*s, centred at the origin."""
    rows = GLYPH_BITMAPS[glyph]
    cell = 2 * s / len(rows)
    col = np.floor((x + cell * 2.5) / cell).astype(int)
    row = np.floor((y + s) / cell).astype(int)
    bitmap = np.array([[ch == "#" for ch in line] for line in rows])
    valid = (row >= 0) & (row < bitmap.shape[0]) & (col >= 0) & (col < bitmap.shape[1])
    out = np.zeros(x.shape, dtype=bool)
    out[valid] = bitmap[row[valid], col[valid]]
    return out


def texture_shade(texture: str, x: np.ndarray, y: np.ndarray, size: int) -> np.ndarray:
    """Per-pixel brightness of a fill texture: 1 for the colour, DARK_SHADE for its dark part."""
    px = ((x + 1) / 2 * size).astype(int)
    py = ((y + 1) / 2 * size).astype(int)
    bright = {
        "solid": lambda: np.ones(x.shape, dtype=bool),
        "striped": lambda: (py // 2) % 2 == 0,
        "checkered": lambda: ((px // 3) + (py // 3)) % 2 == 0,
        "dotted": lambda: ~(((px % 4) < 2) & ((py % 4) < 2)),
        "hatched": lambda: ((px + py) // 2) % 2 == 0,
        "banded": lambda: (px // 2) % 2 == 0,
    }[texture]()
    return np.where(bright, 1.0, DARK_SHADE).astype(np.float32)


def artist_background(name: str, x: np.ndarray, y: np.ndarray, size: int) -> np.ndarray:
    """An artist's patterned background, (H, W, 3) float in 0..255."""
    artist = ARTISTS_BY_NAME[name]
    px = ((x + 1) / 2 * size).astype(int)
    py = ((y + 1) / 2 * size).astype(int)
    r = np.sqrt(x**2 + y**2)
    pattern = {
        "diagonal": lambda: ((px + py) // 3) % 2 == 0,
        "rings": lambda: (r * size / 3).astype(int) % 2 == 0,
        "grid": lambda: (px % 6 == 0) | (py % 6 == 0),
        "checker": lambda: ((px // 8) + (py // 8)) % 2 == 0,
        "dots": lambda: ((px % 6) < 2) & ((py % 6) < 2),
        "vertical": lambda: (px // 4) % 2 == 0,
        "gradient": lambda: None,
        "waves": lambda: (py + 2 * np.sin(px / 2.0)).astype(int) // 3 % 2 == 0,
        "rays": lambda: ((np.arctan2(y, x) + np.pi) / (2 * np.pi) * 12).astype(int) % 2 == 0,
        "frame": lambda: np.maximum(abs(x), abs(y)) > 0.82,
        "zigzag": lambda: (py + abs((px % 8) - 4)) // 3 % 2 == 0,
        "bricks": lambda: (py % 5 == 0) | (((px + (py // 5) % 2 * 4) % 8) == 0),
        "horizontal": lambda: (py // 4) % 2 == 0,
        "split": lambda: x > 0,
        "speckle": lambda: np.random.default_rng(zlib.crc32(name.encode())).random(x.shape) < 0.3,
    }[artist.pattern]()
    first, second = (np.array(c, dtype=np.float32) for c in artist.background)
    if pattern is None:  # gradient: top colour to bottom colour
        t = ((y + 1) / 2)[..., None]
        return first * (1 - t) + second * t
    return np.where(pattern[..., None], second, first)


def _negative_mask(
    scene: Scene, x: np.ndarray, y: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    if scene.figure == "blob":
        mask = np.zeros(x.shape, dtype=bool)
        for _ in range(rng.integers(2, 5)):
            cx, cy = rng.uniform(-0.4, 0.4, size=2)
            rx, ry = rng.uniform(0.15, 0.4, size=2)
            mask |= ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 < 1
        return mask
    if scene.figure == "partial":
        base = shape_mask(scene.shape or "square", x, y, scene.scale)
        angle = rng.uniform(0, 2 * np.pi)
        keep = np.cos(angle) * x + np.sin(angle) * y < rng.uniform(-0.3, 0.1)
        return base & keep
    if scene.figure == "noise":
        return np.zeros(x.shape, dtype=bool)
    raise ValueError(f"unknown figure {scene.figure!r}")


def render(scene: Scene, size: int = 32) -> np.ndarray:
    """The scene as an (size, size, 3) uint8 RGB image."""
    x, y = _grid(size)
    fx, fy = x - scene.cx, y - scene.cy
    rng = np.random.default_rng(scene.seed)
    if scene.artist:
        image = artist_background(scene.artist, x, y, size)
    else:
        image = np.broadcast_to(BACKGROUND, (size, size, 3)).copy()
    if scene.figure == "shape":
        mask = shape_mask(scene.shape, fx, fy, scene.scale)
    elif scene.figure == "glyph":
        mask = glyph_mask(scene.glyph, fx, fy, scene.scale)
    else:
        mask = _negative_mask(scene, fx, fy, rng)
    colour = np.array(COLOURS[scene.colour] if scene.colour else (128, 128, 128), np.float32)
    shade = texture_shade(scene.texture or "solid", x, y, size)
    image = np.where(mask[..., None], colour * shade[..., None], image)
    if scene.figure == "noise":
        image = rng.uniform(0, 255, size=(size, size, 3)).astype(np.float32)
    return np.clip(image, 0, 255).astype(np.uint8)
