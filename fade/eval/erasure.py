"""Before/after numbers for an erasure run: Acc on target, synonym and retained prompts, FD_toy.

Acc (DESIGN.md section 3) is the share of images in which the detector confidently finds the
concept the prompt asked for. Before = the base model (adapter off), after = with the adapter;
image i uses the same noise seed in both, so differences are the adapter's doing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from scipy import linalg

from fade.backbones import Backbone
from fade.eval.sampling import generate
from fade.plan import RunPlan


@dataclass
class PromptGroup:
    prompts: list[str]
    concepts: list[str]  # the concept each prompt asks for


@dataclass
class EvalSets:
    target: PromptGroup
    synonyms: PromptGroup
    retained: PromptGroup
    neutral: list[str]
    retained_names: list[str] = field(default_factory=list)


def build_eval_sets(plan: RunPlan, per_set: int = 32, retained_concepts: int = 4) -> EvalSets:
    """Target, synonym and neutral prompts from the plan; retained = same-category neighbours."""
    p, names = plan.prompts, plan.prompts.names
    target = PromptGroup(p.target[:per_set], [names[i] for i in p.concept_of[:per_set]])
    synonyms = PromptGroup(
        p.synonyms[:per_set], [names[i] for i in p.synonyms_concept_of[:per_set]]
    )
    erased = {spec.name for spec in plan.concepts}
    categories = {spec.category for spec in plan.concepts}
    neighbours = [
        spec for spec in plan.catalog if spec.category in categories and spec.name not in erased
    ][:retained_concepts]
    retained = PromptGroup([], [])
    for spec in neighbours:
        for i in range(max(1, per_set // max(1, len(neighbours)))):
            template = spec.templates[i % len(spec.templates)]
            retained.prompts.append(template.replace("{}", spec.phrase))
            retained.concepts.append(spec.name)
    return EvalSets(
        target, synonyms, retained, p.neutral[:per_set], [spec.name for spec in neighbours]
    )


def frechet_distance(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (the FID formula)."""
    mu_a, mu_b = features_a.mean(0), features_b.mean(0)
    cov_a, cov_b = np.cov(features_a, rowvar=False), np.cov(features_b, rowvar=False)
    root, _ = linalg.sqrtm(cov_a @ cov_b, disp=False)
    root = root.real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * root))


def detection_rate(detector, images: torch.Tensor, concepts: list[str], confidence: float) -> float:
    """% of images in which the detector confidently finds the concept asked for."""
    if not concepts:
        return float("nan")
    found = detector.found_concepts(images, confidence)
    return 100.0 * sum(c in f for c, f in zip(concepts, found, strict=True)) / len(concepts)


def _images(backbone: Backbone, prompts: list[str], eval_cfg, seed: int) -> torch.Tensor:
    return generate(
        backbone,
        prompts,
        seed=seed,
        num_steps=eval_cfg.num_inference_steps,
        guidance_scale=eval_cfg.guidance_scale,
        height=eval_cfg.height,
        width=eval_cfg.width,
    )


def measure(
    backbone: Backbone, detector, sets: EvalSets, eval_cfg, reference: np.ndarray, seed: int = 0
) -> dict:
    """Acc per prompt group, per-concept Acc and FD_toy of neutral images, for one model state."""
    out: dict = {"acc": {}, "per_concept": {}}
    for name in ("target", "synonyms", "retained"):
        group: PromptGroup = getattr(sets, name)
        if not group.prompts:
            continue
        images = _images(backbone, group.prompts, eval_cfg, seed)
        out["acc"][name] = detection_rate(detector, images, group.concepts, eval_cfg.confidence)
        for concept in dict.fromkeys(group.concepts):
            rows = [i for i, c in enumerate(group.concepts) if c == concept]
            out["per_concept"].setdefault(concept, {})[name] = detection_rate(
                detector, images[rows], [concept] * len(rows), eval_cfg.confidence
            )
    neutral = _images(backbone, sets.neutral, eval_cfg, seed)
    features = detector.embeddings(neutral).numpy()
    out["fd"] = frechet_distance(features, reference)
    return out
