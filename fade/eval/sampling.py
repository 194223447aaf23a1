"""Generate images for a list of prompts, reproducibly, in batches, through a backbone.

Why not `pipeline(prompts)`: evaluation compares a model before and after erasure, so image i
must start from the same noise in both runs whatever the batch size; here every image's noise
comes from its own seed (base seed + index).
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from fade.backbones import Backbone


def noise_for(backbone: Backbone, seeds: list[int], height: int, width: int) -> torch.Tensor:
    """One initial-noise tensor per seed, each drawn as the pipeline draws a batch of one."""
    return torch.cat(
        [
            backbone.initial_noise(1, height, width, torch.Generator().manual_seed(seed))
            for seed in seeds
        ]
    )


@torch.no_grad()
def generate(
    backbone: Backbone,
    prompts: list[str],
    seed: int = 0,
    num_steps: int = 20,
    guidance_scale: float = 3.5,
    height: int = 32,
    width: int = 32,
    batch_size: int = 64,
    progress: bool = False,
) -> torch.Tensor:
    """Images in [0, 1], (N, 3, H, W); image i uses noise seed `seed + i`."""
    images = []
    starts = range(0, len(prompts), batch_size)
    for start in tqdm(starts, desc="generate", disable=not progress):
        chunk = prompts[start : start + batch_size]
        noise = noise_for(
            backbone, list(range(seed + start, seed + start + len(chunk))), height, width
        )
        result = backbone.sample(
            noise, backbone.encode(chunk), num_steps, guidance_scale, height=height, width=width
        )
        images.append(backbone.decode(result.latents, height, width))
    return torch.cat(images)
