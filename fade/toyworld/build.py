"""Build the toy world from its recipe: autoencoder, then transformer and text encoders.

Stages run one after another (parallel training on 2 cores starves both) and each is resumable
from the work directory; a finished stage is skipped on a rerun. The result is a standard
diffusers folder (`FluxPipeline.from_pretrained(path)` loads it offline) plus the recipe it was
built from.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import NamedTuple

import torch
from diffusers import AutoencoderKL, FluxPipeline

from fade.backbones import Backbone, wrap_pipeline
from fade.backbones.builders import build_flux_pipeline
from fade.errors import FadeError
from fade.toyworld.check import knowledge_report
from fade.toyworld.data import make_scene_set
from fade.toyworld.detector import DETECTOR_DIR, ToyDetector, evaluate_detector, train_detector
from fade.toyworld.sheet import concept_sheet
from fade.toyworld.spec import MAX_TOKENS, TOY_ARCH, ModelSchedule, ToyBuildConfig
from fade.toyworld.training import encode_dataset, train_autoencoder, train_model
from fade.toyworld.vocabulary import vocabulary

logger = logging.getLogger(__name__)

MODEL_DIR = Path(__file__).resolve().parent / "model"
STAGES = (
    "autoencoder",
    "detector",
    "model",
    "refine",
    "polish",
    "check",
)


class Continuation(NamedTuple):
    """A later training phase's seeds, as offsets from the build seed: its renders, its batch and
    noise draws, and torch's global generator (T5's dropout draws from it)."""

    data: int
    train: int
    dropout: int


# The later training phases, each from the one before's saved (EMA) model. The seeds are the
# ones the committed weights were made with (but for refine's dropout: docs/toyworld.md).
CONTINUATIONS = {
    "refine": Continuation(1, 1, 1),
    "polish": Continuation(2, 2, 2),
}
# What each stage's figures were measured on: rerunning one of these makes them stale.
DEPENDS_ON = {
    "autoencoder": (),
    "detector": (),
    "model": ("autoencoder",),
    "refine": ("autoencoder", "model"),
    "polish": ("autoencoder", "model", "refine"),
    "check": ("autoencoder", "detector", "model", "refine", "polish"),
}


def _stage_autoencoder(pipeline: FluxPipeline, config: ToyBuildConfig, work: Path, data) -> dict:
    done = work / "autoencoder.json"
    vae_dir = work / "vae"
    if done.is_file():
        pipeline.vae = AutoencoderKL.from_pretrained(vae_dir).eval().requires_grad_(False)
        return json.loads(done.read_text())
    started = time.time()
    stats = train_autoencoder(pipeline.vae, data, config.autoencoder, work, config.seed)
    pipeline.vae.register_to_config(
        shift_factor=stats["shift_factor"], scaling_factor=stats["scaling_factor"]
    )
    pipeline.vae.save_pretrained(vae_dir)
    stats["seconds"] = round(time.time() - started, 1)
    done.write_text(json.dumps(stats, indent=2))
    logger.info("autoencoder: %s", stats)
    return stats


def _stage_model(
    pipeline: FluxPipeline,
    config: ToyBuildConfig,
    work: Path,
    data,
    out: Path,
    compile_transformer: bool,
):
    done = work / "model.json"
    if done.is_file() and _has_model(out):  # done, and into this --out
        return json.loads(done.read_text())
    started = time.time()
    latents = encode_dataset(pipeline, data)
    train_model(
        pipeline,
        latents,
        data,
        config.model,
        work,
        config.seed,
        MAX_TOKENS,
        compile_transformer=compile_transformer,
    )
    pipeline.save_pretrained(out)
    stats = {"seconds": round(time.time() - started, 1), "steps": config.model.steps}
    done.write_text(json.dumps(stats, indent=2))
    return stats


def _stage_continue(
    stage: str, config: ToyBuildConfig, work: Path, out: Path, compile_transformer: bool
) -> dict:
    """A later training phase: the whole pipeline (autoencoder included) comes from the phase
    before's saved model in `out`, so a phase can be rerun without the earlier stages' work."""
    done = work / f"{stage}.json"
    if done.is_file() and _has_model(out):
        return json.loads(done.read_text())
    require_model(out)
    started = time.time()
    seeds = CONTINUATIONS[stage]
    torch.manual_seed(config.seed + seeds.dropout)
    pipeline = FluxPipeline.from_pretrained(out, local_files_only=True)
    pipeline.set_progress_bar_config(disable=True)
    schedule: ModelSchedule = getattr(config, stage)
    data = make_scene_set(
        config.dataset_size, config.seed + seeds.data, figure_weights=schedule.figure_weights
    )
    latents = encode_dataset(pipeline, data)
    train_seed = config.seed + seeds.train
    train_model(
        pipeline,
        latents,
        data,
        schedule,
        work,
        train_seed,
        MAX_TOKENS,
        phase=stage,
        compile_transformer=compile_transformer,
    )
    pipeline.save_pretrained(out)
    stats = {"seconds": round(time.time() - started, 1), "steps": schedule.steps}
    done.write_text(json.dumps(stats, indent=2))
    logger.info("%s: %s", stage, stats)
    return stats


def _stage_detector(config: ToyBuildConfig, work: Path, out: Path) -> dict:
    done = work / "detector.json"
    if done.is_file() and _has_detector(out):  # done, and into this --detector-out
        return json.loads(done.read_text())
    started = time.time()
    detector = train_detector(config.detector, config.seed)
    report = evaluate_detector(detector)
    report["seconds"] = round(time.time() - started, 1)
    detector.save(out, extra={"report": report})
    done.write_text(json.dumps(report, indent=2))
    logger.info("detector: %s", report)
    return report


def _stage_check(model_dir: Path, detector_dir: Path, work: Path) -> dict:
    done = work / "check.json"
    if done.is_file():
        return json.loads(done.read_text())
    if not _has_detector(detector_dir):
        raise FadeError(f"no toy detector in {detector_dir}: build it first (the detector stage)")
    started = time.time()
    report = knowledge_report(_load_built(model_dir), ToyDetector.load(detector_dir))
    report["seconds"] = round(time.time() - started, 1)
    done.write_text(json.dumps(report, indent=2))
    return report


def _earlier_report(out: Path, config: ToyBuildConfig, stages: tuple[str, ...]) -> dict:
    """The figures already in `out` that still describe it: rerunning one stage (`--stages
    check` on the committed model) must not drop the others' figures, and a stage that reran
    makes the figures of every stage measured on it stale (a new model invalidates the check).
    Figures of another recipe are never carried over.
    """
    path = out / "build_config.json"
    if not path.is_file():
        return {}
    earlier = json.loads(path.read_text())
    if earlier.get("recipe") != json.loads(json.dumps(config.to_dict())):  # tuples as lists
        return {}
    return {
        stage: stats
        for stage, stats in earlier.get("report", {}).items()
        if stage not in stages and not set(DEPENDS_ON.get(stage, STAGES)) & set(stages)
    }


def _claim_work(work: Path, config: ToyBuildConfig) -> None:
    """Record the recipe in `work`, refusing a work directory left by another recipe.

    Why: a stage's checkpoint and figures carry no recipe of their own, so a rerun with other
    steps, seeds or scenes would resume that recipe's optimizer and schedule, or skip the stage
    and report figures it never measured.
    """
    path = work / "build_config.json"
    recipe = json.loads(json.dumps(config.to_dict()))  # tuples as lists
    if path.is_file() and json.loads(path.read_text()) != recipe:
        raise FadeError(
            f"{work} holds a build of another recipe ({path}): give this build its own --work"
        )
    path.write_text(json.dumps(recipe, indent=2))


def _has_model(model_dir: Path) -> bool:
    return (model_dir / "model_index.json").is_file()


def _has_detector(detector_dir: Path) -> bool:
    return (detector_dir / "config.json").is_file()


def require_model(model_dir: Path) -> None:
    if not _has_model(model_dir):
        raise FadeError(f"no toy model in {model_dir}: build it first (the model stage)")


def _load_built(model_dir: Path) -> Backbone:
    """A built toy model as a backbone, for the check and the concept sheet."""
    require_model(model_dir)
    pipeline = FluxPipeline.from_pretrained(model_dir, local_files_only=True)
    pipeline.set_progress_bar_config(disable=True)
    return wrap_pipeline(pipeline)


def detector_dir_for(out: Path) -> Path:
    """The committed detector goes with the committed model; any other build keeps its own
    detector beside its model (`OUT-detector`), so a scratch rebuild never overwrites the
    committed one."""
    out = Path(os.path.abspath(out))  # "." and ".." have no name; symlinks stay as given
    if out.resolve() == MODEL_DIR.resolve():
        return DETECTOR_DIR
    return out.parent / f"{out.name}-detector"


def time_summary(report: dict, seconds: float) -> str:
    """Where a build's time went, for the issue's time bound: each stage's minutes (measured in
    this run or the earlier one that did it) and this run's wall-clock minutes."""
    stages = [
        f"{stage} {report[stage]['seconds'] / 60:.1f}"
        for stage in STAGES
        if "seconds" in report.get(stage, {})
    ]
    return f"minutes by stage: {', '.join(stages) or 'none timed'}; this run: {seconds / 60:.1f}"


def draw_concept_sheet(model_dir: Path, path: Path) -> Path:
    """The picture of what a built model knows (docs/toyworld_concepts.png)."""
    return concept_sheet(_load_built(model_dir), path)


def build_toyworld(
    config: ToyBuildConfig,
    work: Path,
    out: Path = MODEL_DIR,
    stages: tuple[str, ...] = STAGES,
    detector_out: Path | None = None,
    compile_transformer: bool = True,
) -> dict:
    """Run the requested stages (each resumes or skips if done); returns per-stage statistics.

    `detector_out` defaults to `detector_dir_for(out)`. `compile_transformer` trains the
    transformer compiled (`compiled_for_training`): the same recipe, faster, up to
    floating-point order.
    """
    if detector_out is None:
        detector_out = detector_dir_for(out)
    torch.manual_seed(config.seed)
    work.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    _claim_work(work, config)
    pipeline = build_flux_pipeline(TOY_ARCH, vocabulary(), seed=config.seed)
    pipeline.set_progress_bar_config(disable=True)
    report = {}
    data = None  # 60,000 renders: drawn only for the stages that train on them
    if {"autoencoder", "model"} & set(stages):  # the model trains on the VAE's latents
        data = make_scene_set(
            config.dataset_size, config.seed, figure_weights=config.model.figure_weights
        )
        report["autoencoder"] = _stage_autoencoder(pipeline, config, work, data)
    if "detector" in stages:
        report["detector"] = _stage_detector(config, work, detector_out)
    if "model" in stages:
        report["model"] = _stage_model(pipeline, config, work, data, out, compile_transformer)
    for stage in CONTINUATIONS:
        if stage in stages:
            report[stage] = _stage_continue(stage, config, work, out, compile_transformer)
    if "check" in stages:
        report["check"] = _stage_check(out, detector_out, work)
    for stage in STAGES:  # stages finished in earlier runs belong in the report too
        done = work / f"{stage}.json"
        if stage not in report and done.is_file():
            report[stage] = json.loads(done.read_text())
    ran = (*stages, "autoencoder") if data is not None else stages  # the model stage needs it
    for stage, stats in _earlier_report(out, config, ran).items():
        report.setdefault(stage, stats)
    (out / "build_config.json").write_text(
        json.dumps({"recipe": config.to_dict(), "report": report}, indent=2)
    )
    return report
