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

from fade.adapters import adapter_modules, adapter_size_bytes
from fade.config import FadeConfig, apply_overrides
from fade.distributed.checkpoints import latest_progress
from fade.distributed.trainer import check_resumable, run_erasure, storage_location
from fade.distributed.worker import SELECTION_FILE, TRAINING_LOG
from fade.errors import FadeError
from fade.eval.evaluate import check_detector, eval_sets, evaluate_adapter
from fade.eval.results import facts_from_manifest, metrics_table, write_results
from fade.plan import make_plan
from fade.rundir import ADAPTER, MANIFEST, RunWriter, package_versions


@dataclass
class RunResult:
    path: Path
    metrics: dict
    manifest: dict


def erase(cfg: FadeConfig) -> RunResult:
    """Erase, evaluate (unless `eval.enabled` is false) and write the run directory."""
    started = time.time()
    plan = make_plan(cfg)
    cfg = plan.config  # recipe settings filled in: what runs, and what the manifest records
    if cfg.eval.enabled:  # a detector that cannot measure these concepts fails before training
        check_detector(cfg, plan, eval_sets(cfg, plan).retained_names)
    # Checkpoints outlive a failed or interrupted run, so the same command resumes it; once the
    # run directory is written they are no longer needed (unless the user chose where).
    storage, name = checkpoint_location(cfg)
    cfg = apply_overrides(cfg, {"distributed.run_name": name})
    check_resumable(storage, name, cfg)  # another run's checkpoints: refused up front
    writer = RunWriter(Path(cfg.output.dir), cfg.output.overwrite)
    try:
        outcome = run_erasure(cfg, storage=Path(storage))
        adapter_dir = writer.add_tree(ADAPTER, outcome.checkpoint_dir / "adapter")
        evaluation = evaluate_adapter(cfg, plan, adapter_dir) if cfg.eval.enabled else None
        training = json.loads((outcome.checkpoint_dir / TRAINING_LOG).read_text())
        manifest = {
            **plan.manifest_head(),
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
        writer.write_json(TRAINING_LOG, training)
        if evaluation is not None:
            write_results(
                writer.staging,
                evaluation.metrics,
                evaluation.grids,
                facts_from_manifest(manifest),
                manifest,
            )
        path = writer.commit()
    except FadeError as error:
        writer.abort()
        if latest_progress(storage, name) is not None:
            raise type(error)(
                f"{error} (checkpoints kept in {storage}/{name}: the same command resumes)"
            ) from error
        raise
    except BaseException:
        writer.abort()
        raise
    finally:
        if "outcome" in locals():
            shutil.rmtree(outcome.checkpoint_dir, ignore_errors=True)
    if cfg.distributed.storage_path is None:
        shutil.rmtree(Path(storage) / name, ignore_errors=True)
        if Path(storage).is_dir() and not any(Path(storage).iterdir()):
            Path(storage).rmdir()
    return RunResult(path, evaluation.metrics if evaluation else {}, manifest)


def checkpoint_location(cfg: FadeConfig) -> tuple[str, str]:
    """(storage folder or URI, run name) of a run's Ray Train checkpoints (DistributedConfig)."""
    out = Path(cfg.output.dir)
    storage = storage_location(cfg.distributed.storage_path or out.parent / ".checkpoints")
    return storage, cfg.distributed.run_name or out.resolve().name


def summary_table(result: RunResult) -> str:
    """The short before/after table `jobs/erase.py` prints."""
    lines = metrics_table(result.metrics) if result.metrics else ["evaluation skipped (--no-eval)"]
    adapter = result.manifest["adapter"]
    lines.append(
        f"adapter: {len(adapter['modules'])} modules, {adapter['bytes'] / 1024:.1f} KiB; "
        f"{result.manifest['wall_seconds']:.0f} s; written to {result.path}"
    )
    return "\n".join(lines)
