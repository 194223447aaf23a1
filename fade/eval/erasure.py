"""What an erasure run is measured on, and the measuring of one model state.

`build_eval_sets` turns a plan into prompt groups (target, synonyms, retained neighbours,
neutral prompts); `measure` generates each group's images for one model state, runs the
detector once per group and, where a feature network is given, computes the Fréchet distance of
the neutral images (clean-fid's code, :mod:`fade.eval.frechet`). The numbers (Acc, adherence,
H, ...) are derived from these measurements in :mod:`fade.eval.summary`.

Acc (DESIGN.md section 3) is the share of images in which the detector confidently finds the
concept the prompt asked for. Before = the base model (adapter off), after = with the adapter;
image i uses the same noise seed in both, so differences are the adapter's doing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from fade.backbones import Backbone
from fade.concepts import ConceptError, ConceptSpec, render_prompt, templates_apart
from fade.eval.frechet import frechet_distance
from fade.eval.sampling import generate
from fade.plan import RunPlan

#: The prompt groups of an evaluation, in the order they are generated.
GROUPS = ("target", "synonyms", "retained", "neutral")


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
    """`count` prompts of each concept, in concept order; a concept with fewer prompts cycles
    through them (each image has its own seed), so asking for more images than the plan has
    prompts measures more images instead of silently measuring fewer."""
    group = PromptGroup([], [])
    for index, name in enumerate(names):
        own = [prompt for prompt, of in zip(prompts, concept_of, strict=True) if of == index]
        for i in range(count if own else 0):
            group.prompts.append(own[i % len(own)])
            group.concepts.append(name)
    return group


def build_eval_sets(
    plan: RunPlan,
    per_set: int = 32,
    retained_concepts: int = 4,
    neutral_count: int = 128,
    per_concept: int | None = None,
    per_neighbour: int = 32,
    retained_names: Sequence[str] | None = None,
) -> EvalSets:
    """Target, synonym and neutral prompts from the plan; retained = same-category neighbours.

    One concept gets `per_set` target and synonym prompts; K concepts get per_set / K each
    (at least 16), so a mass erasure measures every concept; `per_concept` fixes that number
    instead (`eval.images_per_concept`). Retained concepts are up to
    `retained_concepts` non-erased neighbours from each category that is erased from,
    `per_neighbour` images each: a neighbour's Acc must resolve a 5-point change, and with 8
    images one image moved it 12.5 points (a 31-point loss on the toy world showed as 0). The
    neutral prompts are cycled up to `neutral_count` images (each with its own seed), the sample
    the Fréchet distance needs. `retained_names` measures those concepts instead (any the run
    keeps, of any category): the neighbours a run is known to brush, on more images.
    """
    p, names = plan.prompts, plan.prompts.names
    each = per_concept or (max(16, per_set // len(names)) if len(names) > 1 else per_set)
    target = _per_concept(p.target, p.concept_of, names, each)
    synonyms = _per_concept(p.synonyms, p.synonyms_concept_of, names, each)
    surrogate_of = {spec.name: spec.surrogate for spec in plan.concepts}
    surrogates = [surrogate_of.get(concept) for concept in target.concepts]
    erased = {spec.name for spec in plan.concepts}
    if retained_names is not None:
        neighbours = _named_retained(plan, retained_names, erased)
    else:
        categories = list(dict.fromkeys(spec.category for spec in plan.concepts))
        neighbours = [
            spec
            for category in categories
            for spec in [
                s for s in plan.catalog if s.category == category and s.name not in erased
            ][:retained_concepts]
        ]
    retained = PromptGroup([], [])
    for spec in neighbours:
        prompts = _neighbour_prompts(spec, plan.concepts)
        for i in range(per_neighbour):
            retained.prompts.append(prompts[i % len(prompts)])
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


def _named_retained(plan: RunPlan, names: Sequence[str], erased: set[str]) -> list[ConceptSpec]:
    """`eval.retained`'s concepts from the run's catalog; naming an erased one is a mistake."""
    specs = plan.catalog.select(names)
    for spec in specs:
        if spec.name in erased:
            raise ConceptError(
                f"eval.retained names {spec.name!r}, which this run erases: "
                "name concepts it keeps (or leave eval.retained null for the neighbours)"
            )
    return specs


def _neighbour_prompts(spec: ConceptSpec, erased: Sequence[ConceptSpec]) -> list[str]:
    """`spec`'s prompts, one per template that names no erased concept (the rule the training
    uses, :func:`fade.concepts.templates_apart`).

    Why: "a crescent by velmora" is one of velmora's own prompts, which the erasure is meant to
    change; counted as the crescent's, it charged the artist's removal to the shape (after a
    ten-concept erasure the crescent was gone from all 8 such images that had shown it, and from
    4 of 47 others).
    """
    return [render_prompt(template, spec.phrase) for template in templates_apart(spec, erased)]


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
    return adherence_with_count(found, prompts)[0]


def adherence_with_count(found: list[set[str]], prompts: list[str]) -> tuple[float, int]:
    """Prompt adherence in % and how many images it is based on (prompts that ask for a toy
    concept; the others are left out)."""
    from fade.toyworld.vocabulary import prompt_attributes

    shares = [
        len(wanted & seen) / len(wanted)
        for prompt, seen in zip(prompts, found, strict=True)
        if (wanted := prompt_attributes(prompt))
    ]
    return (100.0 * sum(shares) / len(shares) if shares else float("nan")), len(shares)


@dataclass
class GroupResult:
    """One prompt group's images under one model state, and what the detector found in each."""

    prompts: list[str]
    concepts: list[str]  # the concept each prompt asks for (empty for neutral prompts)
    images: torch.Tensor
    found: list[set[str]]
    #: Per-image alignment with its prompt (CLIP score), when an alignment scorer is given.
    alignment: list[float] | None = None


@dataclass
class StateMeasurement:
    """Everything measured on one model state (base model, or with the adapter)."""

    groups: dict[str, GroupResult]
    #: Fréchet distance of the neutral images' features to the reference (None: not measured).
    fd: float | None = None


def images_for(backbone: Backbone, prompts: list[str], eval_cfg, seed: int) -> torch.Tensor:
    """Images of `prompts` with the evaluation's sampling settings; image i uses seed + i."""
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
    features: Callable[[torch.Tensor], np.ndarray] | None = None,
    reference: np.ndarray | None = None,
    seed: int = 0,
    label: str = "",
    alignment: Callable[[torch.Tensor, list[str]], list[float]] | None = None,
    position: int = 0,
) -> StateMeasurement:
    """Generate every group's images for one model state and run the detector once per group;
    with `features` and `reference`, also the Fréchet distance of the neutral images' features
    to the reference's (clean-fid's code); with `alignment` (images, prompts) -> per-image
    scores, each image's alignment with its prompt (CLIP score). Image i of a group uses noise
    seed `seed + i` in every state. `label` names the model state on the progress bar
    ("before", "after"), and `position` its line when two states are measured at once."""
    confidence = eval_cfg.confidence
    named = [(name, getattr(sets, name)) for name in GROUPS if name != "neutral"]
    named.append(("neutral", PromptGroup(list(sets.neutral), [])))
    bar = tqdm(
        total=sum(len(group.prompts) for _, group in named),
        desc=f"evaluate {label}".strip(),
        unit="img",
        disable=not label,
        position=position,
    )
    out = StateMeasurement({})
    for name, group in named:
        if not group.prompts:
            continue
        images = images_for(backbone, group.prompts, eval_cfg, seed)
        bar.update(len(images))
        found = detector.found_concepts(images, confidence)  # once; every rate reads it
        scores = alignment(images, group.prompts) if alignment is not None else None
        out.groups[name] = GroupResult(group.prompts, group.concepts, images, found, scores)
    bar.close()
    if features is not None and reference is not None and "neutral" in out.groups:
        out.fd = frechet_distance(features(out.groups["neutral"].images), reference)
    return out
