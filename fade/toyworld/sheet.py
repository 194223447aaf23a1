"""The toy world's concept sheet: a row of generations per concept (docs/toyworld_concepts.png).

So a person can see what the model knows before trusting any number about erasing it.
"""

from __future__ import annotations

from pathlib import Path

from fade.backbones import Backbone
from fade.eval.grids import save_grid
from fade.eval.sampling import generate
from fade.toyworld.check import prompts_for
from fade.toyworld.vocabulary import CATEGORIES


def concept_sheet(
    backbone: Backbone,
    path: Path,
    per_concept: int = 8,
    seed: int = 0,
    guidance_scale: float = 3.5,
    num_steps: int = 20,
) -> Path:
    """One labelled row per concept, prompts from the toy catalog's templates."""
    rows = []
    for category, names in CATEGORIES.items():
        for name in names:
            prompts = prompts_for(name, category, per_concept)
            images = generate(
                backbone, prompts, seed=seed, num_steps=num_steps, guidance_scale=guidance_scale
            )
            rows.append((f"{category}: {name}", images))
    return save_grid(rows, path)
