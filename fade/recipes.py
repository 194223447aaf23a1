"""Recipes: the settings a run leaves unset (null) are filled from the recipe its task needs.

Why several recipes: removing a concept, redirecting it to a surrogate and removing many at once
are different edits, and one setting serves them badly (measured on the toy world, docs/erasure.md):

- **remove** (one concept, no surrogate): an adapter on the denoiser's blocks, pushed away from
  the concept by negative guidance (η = 10; η 8 before saliency over the neighbours) with a
  light adversary, erases a shape in 140 steps at lr 6e-3. World v3 draws its shapes more firmly
  than world v1, where η 6, lr 3e-3 and 60 steps erased diamond; on v3 those left 12.5% of it,
  and 100 steps at η 8 and lr 6e-3 still left "a diamond by velmora" at 19%; 140 steps left
  none. Retain prompts are also held at the concept's own states (paired preservation), as the
  concept's own sentences with a neighbour in its place ("a red diamond" -> "a red circle"): on
  world v1, without paired preservation one neighbour fell 81 → 50% (16 images); with random
  retain prompts there, triangle lost 10.4 points (144 images), with neighbour sentences 5.6.
  Saliency ranks the modules by the concept's gradient over the largest of its neighbours'
  (`erase.saliency_contrast`): on world v3, ranked by the concept's gradient alone, seeds 1 and
  2 cost a neighbour 10.4 and 12.5 points (144 images); over the neighbours' no neighbour lost
  more than 4.2 on any of seeds 0-2, but 3-9% of the target was left at η 8, so η is 10 (seed 0:
  0%, every neighbour within 1.4 points). On world v5 the circle shares more with the diamond:
  at λ 20 it lost 11.1-13.9 points on seeds 0-2 (144 images), at λ 40 4.2-7.6, at λ 60 4.9-5.6
  with the diamond still at 0%, so λ is 60. The same settings with a surrogate gave 0% surrogate
  images: the blocks adapter learns "draw less of this", not "draw that instead".
- **redirect** (a surrogate is given): an adapter on the projections where the prompt enters
  the denoiser (`erase.candidates = conditioning`) maps the concept's prompts onto the
  surrogate's, and leaves every other prompt's path untouched; retain prompts are also held at
  the concept's own training states (`erase.paired_preservation`) and are mostly same-category
  neighbours (`concepts.neighbour_share`), the concepts a redirect spills onto first. On world
  v3 (16 images a neighbour), random retain prompts at those states let the neighbours' mean
  fall 17 points (circle 75 → 44, square 94 → 69); the concept's own sentences with a
  neighbour in its place (as in remove) 12.5; λ 40 held them better but turned only 59% of the
  images into the surrogate in 400 steps (λ 80: 3%; both at 32 images); λ 40 and 600 steps:
  72% surrogate, mean −4.7. No adversary: D's held-out accuracy, from a few prompts per
  check, hit "chance" after 60-160 steps while the surrogate was still forming, and stopped
  those runs.

- **mass** (several concepts, no surrogate): one adapter for all K concepts needs room: LoRA
  on every candidate projection, blocks and conditioning (`erase.candidates = all`,
  `erase.sparsity = 1`, so saliency selects nothing here: K concepts live in different
  modules; on ten toy concepts, blocks at sparsity 0.5 left three shapes at 69-88%), 75 steps
  per concept and at least 600 (each concept then gets as many updates as in the ten-concept
  run: on world v1 thirty concepts at 400 steps ended at a mean of 30%, at 1200 at 14%; on
  world v3's ten, 60 a concept left seed 2's shapes at 15%, 90 a concept cost seed 0 10.9
  points of crescent and of f, and 75 met both of issue 4's bounds on seeds 0-2), and no
  adversary: a K+1-way D learnt nothing in the steps it had (held-out accuracy 0.5 at every
  check), so its "chance" means nothing. Each concept's own sentences are held
  with its neighbours dealt in turn (paired preservation, as in remove): on world v3's ten
  concepts, without it crescent fell 72 → 34% and ivanova 100 → 72 (mean 9.4%); with one
  fixed neighbour a row cross and d stayed at 50 and 38%; dealt, the mean fell to 0.6%.
  Each concept's L_dist is weighted by what is left of it (`erase.balance` 3): with equal
  weights, thirty concepts ended at a mean of 12.3% with orange untouched (100%; red and
  yellow, held at its states, outpulled it), square at 69% and diamond at 75%; balanced, the
  same run ended at 1.9% (orange 0, square 19, diamond 12), but balance drives the shapes left
  longest hardest, and triangle and crescent, the kept shapes beside them, lost 11.7 points
  each (128 images a neighbour). So L_pres weighs more here than remove's 20 did then (λ 30): the
  same thirty ended at 3.1% (diamond 50) with every other concept within 7.0 points, a second
  run at 4.2% with triangle −9.6 on 512 images (−12.5 on 128), a third (seed 1) at 4.4%
  within 7.0, and the ten at 0.0% within 6.2 on seed 0 (λ 20: 8.6), 0.0% within 4.7 on seed 1
  and 1.2% within 7.0 on seed 2. Not more:
  λ 35 left orange whole (mean 8.1%); λ 40 left the shapes and letters far from erased.

`erase.recipe = auto` (the default) picks redirect when any concept has a surrogate, mass for
several concepts, else remove. A setting given explicitly (YAML or key=value) always wins.
"""

from __future__ import annotations

import copy
from typing import Any

from fade.config import EraseConfig, FadeConfig

#: The mass recipe's steps per erased concept (with its 600 steps as the floor).
MASS_STEPS_PER_CONCEPT = 75

RECIPES: dict[str, dict[str, dict[str, Any]]] = {
    "remove": {
        "erase": {
            "candidates": "blocks",
            "sparsity": 0.5,
            "saliency_contrast": True,
            "steps": 140,
            "lr": 6e-3,
            "lam": 60.0,
            "negative_guidance": 10.0,
            "balance": 0.0,
            "w_rem": 0.1,
            "paired_preservation": True,
            "paired_prompts": "neighbours",
        },
        "concepts": {"neighbour_share": 1 / 3},
    },
    "mass": {
        "erase": {
            "candidates": "all",
            "sparsity": 1.0,
            "saliency_contrast": False,
            "steps": 600,
            "lr": 3e-3,
            "lam": 30.0,
            "negative_guidance": 4.0,
            "balance": 3.0,
            "w_rem": 0.0,
            "paired_preservation": True,
            "paired_prompts": "neighbours",
        },
        "concepts": {"neighbour_share": 1 / 3},
    },
    "redirect": {
        "erase": {
            "candidates": "conditioning",
            "sparsity": 0.5,
            "saliency_contrast": False,
            "steps": 600,
            "lr": 3e-3,
            "lam": 40.0,
            "negative_guidance": 2.0,
            "balance": 0.0,
            "w_rem": 0.0,
            "paired_preservation": True,
            "paired_prompts": "neighbours",
        },
        "concepts": {"neighbour_share": 0.6},
    },
}


def recipe_for(requested: str, has_surrogate: bool, concepts: int = 1) -> str:
    """The recipe a run uses: the one asked for, or (auto) redirect when a concept has a
    surrogate, else mass for several concepts, else remove."""
    if requested != "auto":
        return requested
    if has_surrogate:
        return "redirect"
    return "mass" if concepts > 1 else "remove"


def _fill(section: Any, defaults: dict[str, Any]) -> Any:
    for key, value in defaults.items():
        if getattr(section, key) is None:
            setattr(section, key, value)
    return section


def resolve_erase(erase: EraseConfig, has_surrogate: bool, concepts: int = 1) -> EraseConfig:
    """A copy of `erase` with its recipe named and every unset recipe setting filled."""
    resolved = copy.deepcopy(erase)
    resolved.recipe = recipe_for(erase.recipe, has_surrogate, concepts)
    if resolved.recipe == "mass" and resolved.steps is None:
        floor = RECIPES["mass"]["erase"]["steps"]
        resolved.steps = max(floor, MASS_STEPS_PER_CONCEPT * concepts)
    return _fill(resolved, RECIPES[resolved.recipe]["erase"])


def resolve_config(cfg: FadeConfig, has_surrogate: bool, concepts: int = 1) -> FadeConfig:
    """A copy of `cfg` whose erase and concepts settings are resolved (see resolve_erase)."""
    resolved = copy.deepcopy(cfg)
    resolved.erase = resolve_erase(cfg.erase, has_surrogate, concepts)
    _fill(resolved.concepts, RECIPES[resolved.erase.recipe]["concepts"])
    return resolved
