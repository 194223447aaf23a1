"""Rendered toy-world data sets: scenes, images as tensors in [-1, 1], captions on demand.

The model's training set is rendered once per build (deterministic per seed) and captioned
afresh at every step, so one image is seen with many true captions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from fade.toyworld.captions import FIGURE_WEIGHTS, sample_negative, sample_scene
from fade.toyworld.render import Scene, render
from fade.toyworld.spec import IMAGE_SIZE


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, 3, H, W) float in [-1, 1] (the pipelines' pixel range)."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(N, 3, H, W) float in [0, 1] (a pipeline's "pt" output) -> (N, H, W, 3) uint8."""
    array = images.clamp(0, 1).mul(255).round().to(torch.uint8)
    return array.permute(0, 2, 3, 1).cpu().numpy()


@dataclass
class SceneSet:
    scenes: list[Scene]
    images: np.ndarray  # (N, H, W, 3) uint8

    def __len__(self) -> int:
        return len(self.scenes)


def render_scenes(scenes: list[Scene], size: int = IMAGE_SIZE) -> np.ndarray:
    return np.stack([render(scene, size) for scene in scenes])


def make_scene_set(
    count: int,
    seed: int,
    negative_rate: float = 0.0,
    figure_weights: tuple[float, float, float] = FIGURE_WEIGHTS,
) -> SceneSet:
    """`count` random scenes (a share of them detector negatives) and their renders.

    `figure_weights` (shape, glyph, artist scenes) lets a training phase dwell on what the
    model has not learned yet.
    """
    rng = np.random.default_rng(seed)
    scenes = [
        sample_negative(rng)
        if rng.random() < negative_rate
        else sample_scene(rng, weights=figure_weights)
        for _ in range(count)
    ]
    return SceneSet(scenes, render_scenes(scenes))
