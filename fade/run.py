"""One erasure run end to end: plan, Ray Train, evaluation, run directory. Entry points call this.

Order matters for the user: everything that can be wrong with the input (config, concepts,
output directory) is checked before Ray starts; the run directory appears only when complete.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fade.adapters import ADAPTER_NAME, adapter_modules, adapter_size_bytes, load_adapter
from fade.backbones import load_backbone
from fade.config import FadeConfig, config_hash, config_to_dict
from fade.distributed.trainer import run_erasure
from fade.distributed.worker import SELECTION_FILE, TRAINING_LOG
from fade.errors import FadeError
from fade.eval.erasure import EvalSets, PromptGroup, build_eval_sets, measure
from fade.eval.metrics import harmonic_h
from fade.eval.report import ConceptGrid, write_report
from fade.plan import RunPlan, make_plan
from fade.rundir import ADAPTER, MANIFEST, METRICS, RunWriter, package_versions


@dataclass
class RunResult:
    path: Path
    metrics: dict
    manifest: dict


def _toy_reference(count: int = 512, seed: int = 999) -> np.ndarray:
    """FD_toy reference: detector features of renders of the toy world."""
    from fade.toyworld.data import make_scene_set
    from fade.toyworld.detector import ToyDetector, images_to_unit

    detector = ToyDetector.load()
    return detector.embeddings(images_to_unit(make_scene_set(count, seed).images)).numpy()


def _grids(sets: EvalSets, before: dict, after: dict, per_row: int = 8) -> list[ConceptGrid]:
    """Per erased concept: the same seeds before and after, for each kind of prompt."""
    grids = []
    for concept in dict.fromkeys(sets.target.concepts):
        rows = []
        for name in ("target", "synonyms", "retained"):
            group: PromptGroup = getattr(sets, name)
            picks = [i for i, c in enumerate(group.concepts) if name == "retained" or c == concept][
                :per_row
            ]
            if picks:
                label = f"{name}: {group.prompts[picks[0]]}" + (" ..." if len(picks) > 1 else "")
                rows.append((label, before["images"][name][picks], after["images"][name][picks]))
        neutral = f"neutral: {sets.neutral[0]} ..."
        rows.append(
            (neutral, before["images"]["neutral"][:per_row], after["images"]["neutral"][:per_row])
        )
        grids.append(ConceptGrid(concept, rows))
    return grids


def evaluate_run(cfg: FadeConfig, plan: RunPlan, adapter_dir: Path) -> tuple[dict, list]:
    """Before/after metrics on the toy world, and the before/after image grids for the report."""
    from fade.toyworld.detector import ToyDetector

    if cfg.eval.detector != "toy":
        raise FadeError(f"eval.detector={cfg.eval.detector!r} is not available yet: use 'toy'")
    backbone = load_backbone(
        cfg.model.path,
        cfg.model.family,
        cfg.model.revision,
        cfg.model.dtype,
        cfg.model.device,
        cfg.model.local_files_only,
    )
    detector = ToyDetector.load()
    sets = build_eval_sets(
        plan, per_set=8 * cfg.eval.samples_per_prompt, neutral_count=cfg.eval.fd_samples
    )
    reference = _toy_reference()
    before = measure(backbone, detector, sets, cfg.eval, reference, cfg.seed, "before")
    load_adapter(backbone, adapter_dir, ADAPTER_NAME)
    after = measure(backbone, detector, sets, cfg.eval, reference, cfg.seed, "after")
    metrics: dict = {"acc": {}, "per_concept": {}, "retained_concepts": sets.retained_names}
    for group in before["acc"]:
        metrics["acc"][group] = {"before": before["acc"][group], "after": after["acc"][group]}
    for concept, rates in before["per_concept"].items():
        metrics["per_concept"][concept] = {
            group: {"before": rate, "after": after["per_concept"][concept][group]}
            for group, rate in rates.items()
        }
    metrics["fidelity"] = {"metric": "FD_toy", "before": before["fd"], "after": after["fd"]}
    metrics["alignment"] = {
        "metric": "adherence",
        "before": before["adherence"],
        "after": after["adherence"],
    }
    if "surrogate" in before:
        metrics["surrogate"] = {
            "concept": next(s for s in sets.surrogates if s),
            "before": before["surrogate"],
            "after": after["surrogate"],
        }
    metrics["H"] = harmonic_h(
        metrics["acc"]["target"]["after"],
        before["adherence"],
        after["adherence"],
        before["fd"],
        after["fd"],
    )
    metrics["samples"] = {
        name: len(getattr(sets, name).prompts) for name in ("target", "synonyms", "retained")
    }
    metrics["samples"]["neutral"] = len(sets.neutral)
    metrics["detector"] = "toy"
    return metrics, _grids(sets, before, after)


def erase(cfg: FadeConfig) -> RunResult:
    started = time.time()
    plan = make_plan(cfg)
    writer = RunWriter(Path(cfg.output.dir), cfg.output.overwrite)
    try:
        outcome = run_erasure(cfg, storage=writer.staging.parent / f"{writer.staging.name}-ray")
        adapter_dir = writer.add_tree(ADAPTER, outcome.checkpoint_dir / "adapter")
        metrics, grids = evaluate_run(cfg, plan, adapter_dir)
        training = json.loads((outcome.checkpoint_dir / TRAINING_LOG).read_text())
        manifest = {
            "model": {
                "path": cfg.model.path,
                "revision": cfg.model.revision,
                "family": cfg.model.family,
            },
            "concepts": [spec.to_dict() for spec in plan.concepts],
            "catalog": plan.catalog.name,
            "config": config_to_dict(cfg),
            "config_hash": config_hash(cfg),
            "seed": cfg.seed,
            "saliency": json.loads((outcome.checkpoint_dir / SELECTION_FILE).read_text()),
            "adapter": {
                "modules": adapter_modules(adapter_dir),
                "bytes": adapter_size_bytes(adapter_dir),
            },
            "training": training["summary"],
            "packages": package_versions(),
            "wall_seconds": round(time.time() - started, 1),
        }
        writer.write_json(MANIFEST, manifest)
        writer.write_json(METRICS, metrics)
        writer.write_json(TRAINING_LOG, training)
        write_report(writer.staging, metrics, grids, manifest)
        path = writer.commit()
    except BaseException:
        writer.abort()
        raise
    finally:
        shutil.rmtree(writer.staging.parent / f"{writer.staging.name}-ray", ignore_errors=True)
        if "outcome" in locals():
            shutil.rmtree(outcome.checkpoint_dir, ignore_errors=True)
    return RunResult(path, metrics, manifest)


def summary_table(result: RunResult) -> str:
    """The short before/after table `jobs/erase.py` prints."""
    lines = [f"{'':12} {'before':>8} {'after':>8}"]
    for group, values in result.metrics["acc"].items():
        lines.append(f"Acc {group:8} {values['before']:8.1f} {values['after']:8.1f}")
    if "surrogate" in result.metrics:
        sur = result.metrics["surrogate"]
        name = f"shows {sur['concept']}"
        lines.append(f"{name:12} {sur['before']:8.1f} {sur['after']:8.1f}")
    for key in ("fidelity", "alignment"):
        values = result.metrics[key]
        lines.append(f"{values['metric']:12} {values['before']:8.2f} {values['after']:8.2f}")
    lines.append(f"{'H':12} {'':8} {result.metrics['H']:8.1f}")
    adapter = result.manifest["adapter"]
    lines.append(
        f"adapter: {len(adapter['modules'])} modules, {adapter['bytes'] / 1024:.1f} KiB; "
        f"{result.manifest['wall_seconds']:.0f} s; written to {result.path}"
    )
    return "\n".join(lines)
