"""Evaluate an erasure adapter: the base model and the model with the adapter on the same seeds.

`evaluate_adapter` is what `jobs/erase.py` runs after training and what `jobs/evaluate.py` runs
on an existing run directory or on a bare adapter: it checks that the detector can measure the
run's concepts, samples every prompt group before and after loading the adapter, and returns
the metrics (:mod:`fade.eval.summary`) and the before/after image grids for the report.
Writing them into a run directory is :mod:`fade.eval.results`' job.

Which detector measures what (`eval.detector`):

- ``toy`` on the toy model: Acc, FD_toy (toy detector features vs toy-world renders), prompt
  adherence, H, H_o, H_c, H_a.
- ``imagenet`` / ``nudenet`` on a real model (hub id or local folder): Acc, H_o, H_c. FID needs
  Inception weights and CLIP score CLIP weights, neither available here, so fidelity, alignment,
  H and H_a are reported as not measured rather than replaced by a stand-in.
- Any other pairing cannot give a meaningful number and is refused in one line before any
  model loads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import zip_longest
from pathlib import Path

import numpy as np

from fade.config import FadeConfig
from fade.errors import FadeError
from fade.eval.erasure import EvalSets, PromptGroup, StateMeasurement, build_eval_sets, measure
from fade.eval.report import ConceptGrid
from fade.eval.summary import Measures, summarise
from fade.plan import RunPlan

#: Real detectors' vocabularies: the concept names their found_concepts can report.
REAL_DETECTORS = ("imagenet", "nudenet")


@dataclass
class Evaluation:
    """The numbers for metrics.json and the image rows for report.html."""

    metrics: dict
    grids: list[ConceptGrid] = field(default_factory=list)
    sets: EvalSets | None = None


def detector_vocabulary(name: str) -> set[str] | None:
    """Concept names detector `name` can report (None: the toy world's, checked by the plan)."""
    from fade.eval.detectors import (
        EXPLICIT_CONCEPTS,
        EXPLICIT_LABELS,
        IMAGENET_ALIASES,
        IMAGENET_CONCEPTS,
    )

    if name == "imagenet":
        return set(IMAGENET_CONCEPTS) | set(IMAGENET_ALIASES)
    if name == "nudenet":
        return set(EXPLICIT_CONCEPTS) | set(EXPLICIT_LABELS)
    return None


def check_detector(cfg: FadeConfig, plan: RunPlan, retained: list[str] = ()) -> None:
    """Refuse, in one line, a detector that cannot measure this model's or these concepts."""
    name, toy_model = cfg.eval.detector, cfg.model.path == "toy"
    if toy_model and name != "toy":
        raise FadeError(
            f"eval.detector={name} cannot see the toy world's concepts (shapes, letters, "
            "colours, textures, artists): use eval.detector=toy on the toy model"
        )
    if not toy_model and name == "toy":
        raise FadeError(
            f"eval.detector=toy only knows the toy world, not {cfg.model.path}: use "
            "eval.detector=imagenet (objects) or eval.detector=nudenet (explicit content)"
        )
    known = detector_vocabulary(name)
    if known is None:
        return
    for concept in [spec.name for spec in plan.concepts] + list(retained):
        if concept not in known:
            raise FadeError(
                f"eval.detector={name} has no class for concept {concept!r}: it reports "
                f"{', '.join(sorted(known)[:12])}{', ...' if len(known) > 12 else ''}"
            )


def toy_reference(count: int = 512, seed: int = 999) -> np.ndarray:
    """FD_toy reference: the toy detector's features of renders of the toy world."""
    from fade.toyworld.data import make_scene_set
    from fade.toyworld.detector import ToyDetector, images_to_unit

    detector = ToyDetector.load()
    return detector.embeddings(images_to_unit(make_scene_set(count, seed).images)).numpy()


def eval_sets(cfg: FadeConfig, plan: RunPlan) -> EvalSets:
    """The prompt groups `eval.*` asks for (see build_eval_sets)."""
    return build_eval_sets(
        plan,
        per_set=8 * cfg.eval.samples_per_prompt,
        neutral_count=cfg.eval.fd_samples,
        per_concept=cfg.eval.images_per_concept,
    )


def grids(
    sets: EvalSets, before: StateMeasurement, after: StateMeasurement, per_row: int = 6
) -> list[ConceptGrid]:
    """Per erased concept: the same seeds before and after, for each kind of prompt (6 seeds
    a row, so that a row's before and after strips fit side by side on the page)."""
    out = []
    for concept in dict.fromkeys(sets.target.concepts):
        rows = []
        for name in ("target", "synonyms", "retained"):
            group: PromptGroup = getattr(sets, name)
            if name == "retained":  # round robin over the neighbours, so each one shows
                rows_of = {
                    c: [i for i, x in enumerate(group.concepts) if x == c] for c in group.concepts
                }
                picks = [
                    i for column in zip_longest(*rows_of.values()) for i in column if i is not None
                ]
                picks = picks[:per_row]
                label = f"retained: {', '.join(dict.fromkeys(group.concepts[i] for i in picks))}"
            else:
                picks = [i for i, c in enumerate(group.concepts) if c == concept][:per_row]
                label = f"{name}: {group.prompts[picks[0]]}" if picks else ""
                label += " ..." if len(picks) > 1 else ""
            if picks and name in before.groups:
                rows.append(
                    (label, before.groups[name].images[picks], after.groups[name].images[picks])
                )
        if "neutral" in before.groups:
            label = f"neutral: {sets.neutral[0]} ..."
            rows.append(
                (
                    label,
                    before.groups["neutral"].images[:per_row],
                    after.groups["neutral"].images[:per_row],
                )
            )
        out.append(ConceptGrid(concept, rows))
    return out


def evaluate_adapter(
    cfg: FadeConfig, plan: RunPlan, adapter_dir: Path, progress: bool = True
) -> Evaluation:
    """Measure the base model and the model with the adapter in `adapter_dir` on the same
    prompts and seeds; returns metrics.json's content and the report's grids."""
    from fade.adapters import ADAPTER_NAME, load_adapter
    from fade.backbones import load_backbone
    from fade.eval.detectors import load_detector

    sets = eval_sets(cfg, plan)
    check_detector(cfg, plan, sets.retained_names)
    m = cfg.model
    backbone = load_backbone(m.path, m.family, m.revision, m.dtype, m.device, m.local_files_only)
    detector = load_detector(cfg.eval.detector)
    toy = cfg.eval.detector == "toy"
    features = (lambda images: detector.embeddings(images).numpy()) if toy else None
    reference = toy_reference() if toy else None
    states = {}
    for state in ("before", "after"):
        if state == "after":
            load_adapter(backbone, Path(adapter_dir), ADAPTER_NAME)
        label = state if progress else ""
        states[state] = measure(
            backbone, detector, sets, cfg.eval, features, reference, cfg.seed, label
        )
    measures = Measures(cfg.eval.detector, cfg.eval.confidence)
    if not toy:
        measures.alignment, measures.fidelity = None, None
    metrics = summarise(states["before"], states["after"], sets, measures)
    return Evaluation(metrics, grids(sets, states["before"], states["after"]), sets)
