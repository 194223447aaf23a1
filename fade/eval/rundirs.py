"""Evaluate adapters that are already on disk (what `jobs/evaluate.py` runs).

Two cases: an existing run directory (its manifest.json gives the model, the concepts and the
full config; `key=value` overrides change how it is evaluated, e.g. more images), whose
metrics.json, metrics.parquet and report.html are rewritten; or a bare adapter folder with no
run directory, evaluated against a named base model into a fresh run-style directory (adapter
copy, manifest, metrics, report), written all or nothing like `jobs/erase.py`'s.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from fade.config import FadeConfig, apply_overrides, config_from_dict, config_hash
from fade.errors import ConfigError, FadeError
from fade.plan import make_plan
from fade.rundir import ADAPTER, MANIFEST, RunWriter, package_versions

# The adapters' file name (fade.adapters.WEIGHT_NAME), here so that checking the input does not
# import torch and diffusers: a mistake is reported in a second, the model loads only after.
WEIGHT_NAME = "pytorch_lora_weights.safetensors"


@dataclass
class EvalOutcome:
    path: Path
    metrics: dict
    manifest: dict
    seconds: float


def check_adapter_dir(path: Path) -> Path:
    """An adapter folder holding the diffusers LoRA file, or a one-line error."""
    path = Path(path)
    if not path.exists():
        raise FadeError(f"adapter directory {path} does not exist")
    if not path.is_dir():
        raise FadeError(
            f"adapter path {path} is not a directory (give the folder that holds {WEIGHT_NAME})"
        )
    if not (path / WEIGHT_NAME).is_file():
        raise FadeError(f"adapter directory {path} has no {WEIGHT_NAME}")
    return path


def load_run(run_dir: Path) -> tuple[dict, FadeConfig]:
    """manifest.json of a run directory and the config it was run with."""
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise FadeError(f"run directory {run_dir} does not exist")
    if not run_dir.is_dir():
        raise FadeError(f"{run_dir} is not a directory")
    manifest_path = run_dir / MANIFEST
    if not manifest_path.is_file():
        raise FadeError(
            f"{run_dir} is not a run directory (no {MANIFEST}); to evaluate a bare adapter use "
            "--base MODEL --adapter DIR --out DIR"
        )
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FadeError(f"cannot read {manifest_path}: {exc}") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("config"), dict):
        raise FadeError(f"{manifest_path} has no config: is {run_dir} a FADE run directory?")
    cfg = config_from_dict(manifest["config"], source=str(manifest_path))
    names = [c["name"] for c in manifest.get("concepts", []) if isinstance(c, dict)]
    if cfg.concepts.names is None and cfg.concepts.concept_set is None and names:
        cfg.concepts.names = names  # the run's concepts, not today's default concept
    return manifest, cfg


def reevaluate(run_dir: Path, overrides: list[str], progress: bool = True) -> EvalOutcome:
    """Evaluate a run directory's adapter again and rewrite its metrics and report."""
    started = time.time()
    run_dir = Path(run_dir)
    manifest, cfg = load_run(run_dir)
    cfg = apply_overrides(cfg, [*overrides, "eval.enabled=true"])
    adapter = check_adapter_dir(run_dir / ADAPTER)
    plan = make_plan(cfg)
    names = [spec.name for spec in plan.concepts]
    recorded = [c["name"] for c in manifest.get("concepts", []) if isinstance(c, dict)]
    changed = any(o.strip().startswith("concepts.") for o in overrides)
    if recorded and names != recorded and not changed:
        raise FadeError(f"{run_dir}: the manifest lists {recorded} but its config gives {names}")
    from fade.eval.evaluate import check_detector, eval_sets, evaluate_adapter
    from fade.eval.results import facts_from_manifest, write_results

    check_detector(cfg, plan, eval_sets(cfg, plan).retained_names)
    evaluation = evaluate_adapter(cfg, plan, adapter, progress)
    # Without overrides the numbers are the run's own: they keep the run's config hash (the
    # config re-read today may differ only by settings added since, at their defaults).
    digest = config_hash(cfg) if overrides else manifest.get("config_hash") or config_hash(cfg)
    seconds = round(time.time() - started, 1)
    evaluation.metrics["evaluation"] = {
        "by": "jobs/evaluate.py RUN_DIR",
        "overrides": list(overrides),
        "config_hash": digest,
        "run_config_hash": manifest.get("config_hash"),
        "seconds": seconds,
    }
    facts = facts_from_manifest(manifest, digest)
    write_results(run_dir, evaluation.metrics, evaluation.grids, facts, manifest)
    return EvalOutcome(run_dir, evaluation.metrics, manifest, seconds)


def evaluate_new(cfg: FadeConfig, adapter_dir: Path, progress: bool = True) -> EvalOutcome:
    """Evaluate a bare adapter on `cfg.model.path` into a fresh run-style `cfg.output.dir`."""
    started = time.time()
    if cfg.model.path == "toy" and cfg.concepts.names is None and not cfg.concepts.concept_set:
        raise ConfigError("name the adapter's concepts: --concepts NAME[,NAME...]")
    adapter = check_adapter_dir(adapter_dir)
    plan = make_plan(apply_overrides(cfg, ["eval.enabled=true"]))
    cfg = plan.config  # recipe settings filled in, as a run directory records them
    from fade.adapters import adapter_modules, adapter_size_bytes
    from fade.eval.evaluate import check_detector, eval_sets, evaluate_adapter
    from fade.eval.results import facts_from_manifest, write_results

    check_detector(cfg, plan, eval_sets(cfg, plan).retained_names)
    writer = RunWriter(Path(cfg.output.dir), cfg.output.overwrite)
    try:
        copied = writer.add_tree(ADAPTER, adapter)
        evaluation = evaluate_adapter(cfg, plan, copied, progress)
        manifest = {
            **plan.manifest_head(),
            "adapter": {
                "source": str(Path(adapter_dir).resolve()),
                "modules": adapter_modules(copied),
                "bytes": adapter_size_bytes(copied),
            },
            "packages": package_versions(),
            "wall_seconds": round(time.time() - started, 1),
        }
        evaluation.metrics["evaluation"] = {
            "by": "jobs/evaluate.py --base MODEL --adapter DIR",
            "config_hash": manifest["config_hash"],
            "seconds": manifest["wall_seconds"],
        }
        writer.write_json(MANIFEST, manifest)
        facts = facts_from_manifest(manifest)
        write_results(writer.staging, evaluation.metrics, evaluation.grids, facts, manifest)
        path = writer.commit()
    except BaseException:
        writer.abort()
        raise
    return EvalOutcome(path, evaluation.metrics, manifest, manifest["wall_seconds"])
