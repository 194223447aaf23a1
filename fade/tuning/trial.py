"""One sweep trial: erase with the trial's settings (Ray Train inside the trial), then score it.

Ray 2.60 runs Train inside Tune as a function trainable that calls `trainer.fit()` (a Tuner
over a TorchTrainer is refused), so the trial is a small driver: the Train workers it starts
hold their own CPUs (or GPUs) while it waits, and the evaluation runs in the trial itself once
they are released, on as many threads as the trial and its workers together reserved.

The base model's half of every evaluation ("before") is the same for all trials, so the sweep
measures it once and hands it in. With early stopping the adapter is scored twice: first on
the quick evaluation (`quick_eval_config`), reported as step 1 for ASHA to judge, then, if the
trial is not stopped, on the full evaluation, reported as step 2 with the adapter as the
trial's checkpoint.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fade.config import FadeConfig, apply_overrides, config_from_dict, save_config
from fade.eval.metrics import fidelity
from fade.plan import make_plan

if TYPE_CHECKING:  # torch and the models: the sweep's input checks must not wait for them
    from fade.eval.erasure import StateMeasurement

#: The evaluation stages of a trial, in order (the training_iteration ASHA counts).
QUICK, FULL = "quick", "full"


def quick_eval_config(cfg: FadeConfig) -> FadeConfig:
    """About a third of the full evaluation's images (96 of 256 on the toy world's default):
    enough to tell a failed trial from a good one, not to rank two good ones."""
    e = cfg.eval
    return apply_overrides(
        cfg,
        {
            "eval.samples_per_prompt": max(1, e.samples_per_prompt // 2),
            "eval.images_per_concept": (
                None if e.images_per_concept is None else max(4, e.images_per_concept // 2)
            ),
            "eval.images_per_neighbour": max(4, e.images_per_neighbour // 4),
            "eval.fd_samples": max(16, e.fd_samples // 2),
        },
    )


def stage_configs(cfg: FadeConfig, early_stopping: bool) -> dict[str, FadeConfig]:
    return {QUICK: quick_eval_config(cfg), FULL: cfg} if early_stopping else {FULL: cfg}


def trial_cpus(cfg: FadeConfig) -> int:
    """CPUs one trial holds at its peak: its own plus its Train workers'."""
    d = cfg.distributed
    return 1 + d.num_workers * d.cpus_per_worker


def measure_bases(base: dict, early_stopping: bool) -> dict[str, StateMeasurement]:
    """The base model on each stage's prompt groups."""
    import torch

    from fade.eval.evaluate import instruments

    cfg = config_from_dict(base)
    d = cfg.distributed
    torch.set_num_threads(d.num_workers * d.cpus_per_worker)
    plan = make_plan(cfg)
    tools = instruments(plan.config, plan)  # loaded once, for every stage
    return {
        stage: tools.with_sample_counts(stage_cfg, plan).measure()
        for stage, stage_cfg in stage_configs(plan.config, early_stopping).items()
    }


def measure_bases_task():
    """`measure_bases` as a Ray remote function (made on use: importing this module must not
    need Ray)."""
    import ray

    return ray.remote(measure_bases)


def _finite(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def score_row(metrics: dict, stage: str) -> dict[str, Any]:
    """The flat numbers a trial reports (and the sweep's table holds) from metrics.json."""
    acc = metrics.get("acc", {})
    fid, align = metrics.get("fidelity"), metrics.get("alignment")
    row: dict[str, Any] = {"stage": stage}
    for group in ("target", "synonyms", "retained"):
        for state in ("before", "after"):
            row[f"acc_{group}_{state}"] = _finite(acc.get(group, {}).get(state))
    for name, entry in (("fd", fid), ("alignment", align)):
        for state in ("before", "after"):
            row[f"{name}_{state}"] = _finite(entry[state]) if entry else None
    target = row["acc_target_after"]
    row["E"] = None if target is None else 1.0 - target / 100.0
    row["F"] = None
    if fid and align:
        row["F"] = fidelity(align["before"], align["after"], fid["before"], fid["after"])
    for score in ("H", "H_o", "H_c"):
        row[score] = _finite(metrics.get(score))
    return row


def erase_and_score(
    params: dict,
    *,
    base: dict,
    bases: list,
    early_stopping: bool,
    metric: str,
) -> None:
    """The Tune function trainable; `params` are the trial's sampled dotted keys."""
    import ray
    import torch
    from ray import tune

    from fade.distributed.trainer import run_erasure
    from fade.eval.evaluate import instruments

    trial_id = tune.get_context().get_trial_id()
    cfg = apply_overrides(config_from_dict(base), {**params, "distributed.run_name": trial_id})
    plan = make_plan(cfg)
    cfg = plan.config
    scratch = Path(tempfile.mkdtemp(prefix=f"fade-{trial_id}-"))
    try:
        outcome = run_erasure(cfg, storage=scratch / "train")
        adapter = outcome.checkpoint_dir / "adapter"
        training = json.loads((outcome.checkpoint_dir / "training.json").read_text())["summary"]
        # The workers are gone: their CPUs are this trial's until it ends (see module doc).
        torch.set_num_threads(trial_cpus(cfg))
        before = ray.get(bases[0])  # the sweep's one measurement of the base model
        tools = instruments(cfg, plan)  # the model and measuring networks, loaded once
        tools.load_adapter(adapter)
        for stage, stage_cfg in stage_configs(cfg, early_stopping).items():
            staged = tools.with_sample_counts(stage_cfg, plan)
            evaluation = staged.summarise(before[stage], staged.measure())
            row = {
                **score_row(evaluation.metrics, stage),
                "steps_run": training["steps_run"],
                "train_seconds": training["train_seconds"],
            }
            if row[metric] is None:
                raise RuntimeError(f"the evaluation gave no {metric}: {evaluation.metrics}")
            if stage != FULL:
                tune.report(row)
                continue
            keep = scratch / "checkpoint"
            shutil.copytree(adapter, keep / "adapter")
            (keep / "metrics.json").write_text(json.dumps(evaluation.metrics, indent=2))
            save_config(cfg, keep / "config.yaml")
            tune.report(row, checkpoint=tune.Checkpoint.from_directory(keep))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        if "outcome" in locals():
            shutil.rmtree(outcome.checkpoint_dir, ignore_errors=True)
