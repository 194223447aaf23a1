"""Before/after numbers for an erasure run: Acc on target, synonym and retained prompts, FD_toy,
prompt adherence and, for a surrogate, how often the erased prompts show it.

Acc (DESIGN.md section 3) is the share of images in which the detector confidently finds the
concept the prompt asked for. Before = the base model (adapter off), after = with the adapter;
image i uses the same noise seed in both, so differences are the adapter's doing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from scipy import linalg
from tqdm.auto import tqdm

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
    #: What each target prompt should show after erasure with a surrogate (None: no surrogate).
    surrogates: list[str | None] = field(default_factory=list)


def _per_concept(prompts: list[str], concept_of: list[int], names: list[str], count: int):
    """Up to `count` prompts of each concept, in concept order."""
    group = PromptGroup([], [])
    taken: dict[int, int] = {}
    for prompt, index in zip(prompts, concept_of, strict=True):
        if taken.get(index, 0) < count:
            taken[index] = taken.get(index, 0) + 1
            group.prompts.append(prompt)
            group.concepts.append(names[index])
    return group


def build_eval_sets(
    plan: RunPlan, per_set: int = 32, retained_concepts: int = 4, neutral_count: int = 128
) -> EvalSets:
    """Target, synonym and neutral prompts from the plan; retained = same-category neighbours.

    One concept gets `per_set` target and synonym prompts; K concepts get per_set / K each
    (at least 16), so a mass erasure measures every concept. Retained concepts are up to
    `retained_concepts` non-erased neighbours from each category that is erased from. The
    neutral prompts are cycled up to `neutral_count` images (each with its own seed), the sample
    the Fréchet distance needs.
    """
    p, names = plan.prompts, plan.prompts.names
    each = max(16, per_set // len(names)) if len(names) > 1 else per_set
    target = _per_concept(p.target, p.concept_of, names, each)
    synonyms = _per_concept(p.synonyms, p.synonyms_concept_of, names, each)
    surrogate_of = {spec.name: spec.surrogate for spec in plan.concepts}
    surrogates = [surrogate_of.get(concept) for concept in target.concepts]
    erased = {spec.name for spec in plan.concepts}
    categories = list(dict.fromkeys(spec.category for spec in plan.concepts))
    neighbours = [
        spec
        for category in categories
        for spec in [s for s in plan.catalog if s.category == category and s.name not in erased][
            :retained_concepts
        ]
    ]
    retained = PromptGroup([], [])
    for spec in neighbours:
        for i in range(max(4, per_set // max(1, len(neighbours)))):
            template = spec.templates[i % len(spec.templates)]
            retained.prompts.append(template.replace("{}", spec.phrase))
            retained.concepts.append(spec.name)
    neutral = [p.neutral[i % len(p.neutral)] for i in range(neutral_count)] if p.neutral else []
    return EvalSets(
        target,
        synonyms,
        retained,
        neutral,
        [spec.name for spec in neighbours],
        surrogates if any(surrogates) else [],
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
    return _rate(detector.found_concepts(images, confidence), concepts)


def _rate(found: list[set[str]], concepts: list[str]) -> float:
    """% of rows whose detections include the row's concept (one detector pass serves many)."""
    if not concepts:
        return float("nan")
    return 100.0 * sum(c in f for c, f in zip(concepts, found, strict=True)) / len(concepts)


def prompt_adherence(
    detector, images: torch.Tensor, prompts: list[str], confidence: float
) -> float:
    """% of the concepts the prompts ask for that the detector confidently finds (the toy world's
    stand-in for CLIP score); prompts asking for nothing in particular are left out."""
    return _adherence(detector.found_concepts(images, confidence), prompts)


def _adherence(found: list[set[str]], prompts: list[str]) -> float:
    from fade.toyworld.vocabulary import prompt_attributes

    shares = [
        len(wanted & seen) / len(wanted)
        for prompt, seen in zip(prompts, found, strict=True)
        if (wanted := prompt_attributes(prompt))
    ]
    return 100.0 * sum(shares) / len(shares) if shares else float("nan")


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
    backbone: Backbone,
    detector,
    sets: EvalSets,
    eval_cfg,
    reference: np.ndarray,
    seed: int = 0,
    label: str = "",
) -> dict:
    """For one model state: Acc per prompt group and per concept, the surrogate's share of the
    target images, prompt adherence on retained and neutral prompts, FD_toy of neutral images.
    `label` names the model state on the progress bar ("before", "after")."""
    confidence = eval_cfg.confidence
    out: dict = {"acc": {}, "per_concept": {}, "images": {}}
    groups = [getattr(sets, name).prompts for name in ("target", "synonyms", "retained")]
    bar = tqdm(
        total=sum(map(len, groups)) + len(sets.neutral),
        desc=f"evaluate {label}".strip(),
        unit="img",
        disable=not label,
    )
    adherence_prompts: list[str] = []
    adherence_found: list[set[str]] = []
    for name in ("target", "synonyms", "retained"):
        group: PromptGroup = getattr(sets, name)
        if not group.prompts:
            continue
        images = _images(backbone, group.prompts, eval_cfg, seed)
        bar.update(len(images))
        out["images"][name] = images  # kept for the report's before/after grids
        found = detector.found_concepts(images, confidence)  # once; every rate below reads it
        out["acc"][name] = _rate(found, group.concepts)
        for concept in dict.fromkeys(group.concepts):
            rows = [i for i, c in enumerate(group.concepts) if c == concept]
            out["per_concept"].setdefault(concept, {})[name] = _rate(
                [found[i] for i in rows], [concept] * len(rows)
            )
        if name == "target" and sets.surrogates:
            rows = [i for i, s in enumerate(sets.surrogates) if s]
            out["surrogate"] = _rate([found[i] for i in rows], [sets.surrogates[i] for i in rows])
        if name == "retained":
            adherence_prompts += group.prompts
            adherence_found += found
    neutral = _images(backbone, sets.neutral, eval_cfg, seed)
    bar.update(len(neutral))
    bar.close()
    out["images"]["neutral"] = neutral
    adherence_prompts += sets.neutral
    adherence_found += detector.found_concepts(neutral, confidence)
    out["adherence"] = _adherence(adherence_found, adherence_prompts)
    features = detector.embeddings(neutral).numpy()
    out["fd"] = frechet_distance(features, reference)
    return out
