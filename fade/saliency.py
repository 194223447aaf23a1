"""Knowledge location: rank the denoiser's projections by how much they carry a concept.

On batches of concept prompts, the concept loss ‖f(z_t, t, y_c) − f(z_t, t, y_¬c)‖² (how
differently the model treats the concept and its neutral replacement) is back-propagated, and
|grad| is averaged per candidate module (attention and feed-forward projections of the blocks,
or the projections that bring the prompt in: see CANDIDATE_GROUPS). The top
`sparsity` fraction receives LoRA adapters; every other weight stays untouched. z_t are the
model's own states: a few no-grad sampling steps from noise on the concept prompt down to a
random sigma, the same states the erasure later trains on.

Not the erasure loop and not the adapter code: it only ranks and selects module names.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from fade.backbones import Backbone

# Two groups of candidate projections per family (`erase.candidates` picks which are ranked):
# - "blocks": attention and feed-forward projections inside the denoiser's blocks, where the
#   image is formed; an adapter there removes what the concept draws.
# - "conditioning": the projections that bring the prompt into the denoiser (FLUX: the token
#   and pooled text embedders; SD: the cross-attention keys and values). They see only the
#   prompt, so an adapter there can redirect one concept's prompts (to a surrogate) while other
#   prompts reach the blocks unchanged.
BLOCKS = {
    "flux": re.compile(
        r"^(transformer_blocks|single_transformer_blocks)\.\d+\."
        r"(attn\.(to_q|to_k|to_v|to_out\.0|add_q_proj|add_k_proj|add_v_proj|to_add_out)"
        r"|ff\.net\.(0\.proj|2)|ff_context\.net\.(0\.proj|2)|proj_mlp|proj_out)$"
    ),
    "sd": re.compile(r"\.(attn1|attn2)\.(to_q|to_k|to_v|to_out\.0)$|\.ff\.net\.(0\.proj|2)$"),
}
CONDITIONING = {
    "flux": re.compile(r"^(context_embedder|time_text_embed\.text_embedder\.linear_[12])$"),
    "sd": re.compile(r"\.attn2\.(to_k|to_v)$"),
}
CANDIDATE_GROUPS = ("blocks", "conditioning", "all")


def candidate_modules(denoiser: nn.Module, family: str, group: str = "blocks") -> list[str]:
    """Names of the Linear projections saliency ranks (and LoRA may attach to), in model order."""
    if group not in CANDIDATE_GROUPS:
        raise ValueError(f"candidate group must be one of {', '.join(CANDIDATE_GROUPS)}: {group!r}")
    patterns = [
        table[family]
        for name, table in (("blocks", BLOCKS), ("conditioning", CONDITIONING))
        if group in (name, "all")
    ]
    return [
        name
        for name, module in denoiser.named_modules()
        if isinstance(module, nn.Linear) and any(p.search(name) for p in patterns)
    ]


@dataclass
class SaliencySelection:
    """The ranking and what was chosen; recorded in the run manifest."""

    scores: dict[str, float]
    sparsity: float
    selected: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        ranked = sorted(self.scores.items(), key=lambda item: -item[1])
        return {"sparsity": self.sparsity, "selected": self.selected, "ranking": ranked}

    @classmethod
    def from_dict(cls, data: dict) -> SaliencySelection:
        """Back from `to_dict` (a resumed run reuses its selection instead of ranking again)."""
        return cls(dict(data["ranking"]), data["sparsity"], list(data["selected"]))


def select_top(scores: dict[str, float], sparsity: float) -> list[str]:
    """The top ceil(sparsity * n) modules by score (at least one), in model order."""
    if not 0 < sparsity <= 1:
        raise ValueError(f"sparsity must be in (0, 1], got {sparsity}")
    keep = max(1, math.ceil(sparsity * len(scores)))
    chosen = set(sorted(scores, key=lambda name: -scores[name])[:keep])
    return [name for name in scores if name in chosen]


def concept_saliency(
    backbone: Backbone,
    target_prompts: list[str],
    neutral_prompts: list[str],
    batches: int = 4,
    batch_size: int = 8,
    sample_steps: int = 4,
    size: tuple[int, int] = (32, 32),
    seed: int = 0,
    group: str = "blocks",
    contrasts: list[list[str]] | None = None,
) -> dict[str, float]:
    """Mean |grad| of the concept loss per candidate module, accumulated over `batches`.

    With `contrasts` (lists aligned with the targets, one per neighbour concept: each row's
    sentence with that neighbour in the concept's place), the score is the concept's mean
    |grad| divided by the largest of the neighbours' at the same states: modules that carry the
    concept more than any neighbour rank first, so the adapter lands where changing the concept
    costs the neighbours least."""
    if len(target_prompts) != len(neutral_prompts) or not target_prompts:
        raise ValueError("target and neutral prompts must be non-empty and aligned")
    if contrasts is not None and any(len(c) != len(target_prompts) for c in contrasts):
        raise ValueError("contrast prompts must be aligned with the target prompts")
    denoiser = backbone.denoiser
    names = candidate_modules(denoiser, backbone.family, group)
    modules = dict(denoiser.named_modules())
    weights = {name: modules[name].weight for name in names}
    # Only candidate weights get gradients: a model from from_pretrained has requires_grad on
    # everything, and .grad for all of FLUX would cost gigabytes.
    previous = {p: p.requires_grad for p in denoiser.parameters()}
    totals = dict.fromkeys(names, 0.0)
    rivals = [dict.fromkeys(names, 0.0) for _ in contrasts or ()]
    generator = torch.Generator().manual_seed(seed)
    height, width = size
    try:
        denoiser.requires_grad_(False)
        for w in weights.values():
            w.requires_grad_(True)
            w.grad = None
        for _ in range(batches):
            index = torch.randint(len(target_prompts), (batch_size,), generator=generator)
            target = backbone.encode([target_prompts[i] for i in index])
            neutral = backbone.encode([neutral_prompts[i] for i in index])
            noise = backbone.initial_noise(batch_size, height, width, generator)
            state = backbone.trajectory_state(noise, target, sample_steps, generator, height, width)
            sigma = torch.full((batch_size,), state.sigma, device=state.latents.device)
            _accumulate_grad(backbone, state.latents, sigma, target, neutral, size, weights, totals)
            for prompts, rival in zip(contrasts or (), rivals, strict=True):
                contrast = backbone.encode([prompts[i] for i in index])
                _accumulate_grad(
                    backbone, state.latents, sigma, contrast, neutral, size, weights, rival
                )
    finally:
        for parameter, flag in previous.items():
            parameter.requires_grad_(flag)
            parameter.grad = None
    if rivals:
        return {name: totals[name] / max(*(r[name] for r in rivals), 1e-12) for name in names}
    return {name: total / batches for name, total in totals.items()}


def _accumulate_grad(backbone, latents, sigma, cond, neutral, size, weights, totals) -> None:
    """Add each weight's mean |grad| of ‖f(z, σ, cond) − f(z, σ, neutral)‖² to `totals`."""
    difference = backbone.predict(latents, sigma, cond, size=size) - backbone.predict(
        latents, sigma, neutral, size=size
    )
    difference.square().mean().backward()
    for name, w in weights.items():
        totals[name] += float(w.grad.abs().mean()) if w.grad is not None else 0.0
        w.grad = None


def locate_concept(
    backbone: Backbone,
    target_prompts: list[str],
    neutral_prompts: list[str],
    sparsity: float,
    reduce: Callable[[dict[str, float]], dict[str, float]] | None = None,
    group: str = "blocks",
    **kwargs,
) -> SaliencySelection:
    """Rank candidates by saliency and keep the top `sparsity` fraction (1.0 = all modules).

    `reduce` combines the scores of data-parallel workers (a mean) so all select the same.
    """
    if sparsity >= 1.0:  # the "w/o saliency" ablation: no gradient pass needed
        names = candidate_modules(backbone.denoiser, backbone.family, group)
        return SaliencySelection(dict.fromkeys(names, 1.0), 1.0, names)
    scores = concept_saliency(backbone, target_prompts, neutral_prompts, group=group, **kwargs)
    if reduce is not None:
        scores = reduce(scores)
    return SaliencySelection(scores, sparsity, select_top(scores, sparsity))
