"""Run a sweep: check everything, measure the base model once, let Ray Tune run the trials
(Optuna proposes, ASHA stops), then write the table, the best config and the plot.

A sweep is named and lives in `tune.dir/<name>`. Rerunning the same command finds Tune's saved
experiment there and continues it (`Tuner.restore`): finished trials are kept, interrupted ones
run again, failed ones stay recorded as failed. A rerun with other settings under the same name
is refused, because Tune would silently continue the old sweep.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
from dataclasses import dataclass
from pathlib import Path

from fade.config import FadeConfig, config_to_dict
from fade.errors import FadeError
from fade.plan import make_plan
from fade.tuning.results import (
    BEST_CONFIG,
    PLOT,
    TABLE,
    TrialRow,
    best_row,
    plot,
    rows_from_grid,
    write_best_config,
    write_table,
)
from fade.tuning.space import SearchSpace, load_space
from fade.tuning.trial import erase_and_score, measure_bases_task, trial_cpus

SETTINGS_FILE = "fade_sweep.json"


@dataclass
class SweepOutcome:
    path: Path  # the sweep's folder: Tune's experiment plus the files below
    rows: list[TrialRow]
    best: TrialRow | None
    default: TrialRow | None
    metric: str
    max_retained_drop: float | None
    resumed: bool
    complete: bool  # every trial ran (False after an interruption or a time budget)
    seconds: float

    @property
    def files(self) -> dict[str, Path]:
        return {name: self.path / name for name in (TABLE, BEST_CONFIG, PLOT)}


def sweep_name(cfg: FadeConfig, concepts: list[str]) -> str:
    if cfg.tune.name:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", cfg.tune.name):
            raise FadeError(
                f"tune.name={cfg.tune.name!r}: use letters, digits, '.', '_' and '-' only"
            )
        return cfg.tune.name
    joined = "-".join(concepts[:3]) + (
        f"-and-{len(concepts) - 3}-more" if len(concepts) > 3 else ""
    )
    return "sweep-" + re.sub(r"[^A-Za-z0-9._-]+", "_", joined)


def _settings(cfg: FadeConfig, space: SearchSpace) -> dict:
    """What makes two runs of the command the same sweep (where and how fast it runs do not)."""
    data = config_to_dict(cfg)
    for key in ("dir", "name", "max_concurrent", "time_budget_s", "space", "max_retained_drop"):
        data["tune"].pop(key)
    data.pop("output")
    data["distributed"].pop("address")
    return {"config": data, "space": space.text}


def _check_same_sweep(path: Path, settings: dict) -> None:
    """Record the sweep's settings on first start; refuse a rerun that changed them."""
    file = path / SETTINGS_FILE
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()
    if file.exists():
        if json.loads(file.read_text()).get("digest") != digest:
            raise FadeError(
                f"sweep {path} was started with other settings (config or search space); "
                "rerun it with the same ones to continue it, or pick another tune.name "
                "(or delete that folder) to start a new sweep"
            )
        return
    path.mkdir(parents=True, exist_ok=True)
    file.write_text(json.dumps({"digest": digest, **settings}, indent=2))


def trial_resources(cfg: FadeConfig) -> dict[str, float]:
    """What a trial itself reserves: one CPU, and on GPUs one GPU for its evaluation (its
    Train workers reserve their own)."""
    return {"CPU": 1, "GPU": 1} if cfg.distributed.use_gpu else {"CPU": 1}


def concurrency(cfg: FadeConfig) -> int:
    """Trials that fit in the cluster at once: a trial holds its own CPU (and GPU) plus its
    workers', and Tune must not start trials whose workers cannot be placed; a larger
    `tune.max_concurrent` is capped to this."""
    import ray

    d = cfg.distributed
    resources = ray.cluster_resources()
    fits = int(resources.get("CPU", 1) // trial_cpus(cfg))
    if d.use_gpu:
        fits = min(fits, int(resources.get("GPU", 0) // (d.num_workers + 1)))
    fits = max(1, fits)
    return min(cfg.tune.max_concurrent, fits) if cfg.tune.max_concurrent else fits


def _tuner(cfg, space, trainable, name, root, default_point):
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    t = cfg.tune
    search = OptunaSearch(
        points_to_evaluate=[default_point] if default_point else None, seed=cfg.seed
    )
    scheduler = (
        ASHAScheduler(time_attr="training_iteration", max_t=2, grace_period=1, reduction_factor=2)
        if t.early_stopping
        else None
    )
    return tune.Tuner(
        trainable,
        param_space=space.domains(),
        tune_config=tune.TuneConfig(
            metric=t.metric,
            mode="max",
            search_alg=search,
            scheduler=scheduler,
            num_samples=t.num_samples,
            max_concurrent_trials=concurrency(cfg),
            time_budget_s=t.time_budget_s,
        ),
        run_config=tune.RunConfig(
            name=name,
            storage_path=str(root),
            failure_config=tune.FailureConfig(max_failures=0, fail_fast=False),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            verbose=1,  # trial status tables, not every result in full
        ),
    )


def run_sweep(cfg: FadeConfig, space_path: Path) -> SweepOutcome:
    """Run (or continue) the sweep `cfg.tune` describes over the space in `space_path`."""
    started = time.time()
    # The input checks that need no model come first, before torch and Ray are imported: a
    # typo is answered at once.
    space = load_space(space_path, cfg)
    plan = make_plan(cfg)  # unknown concepts and the like fail here, before Ray starts
    default_point = space.default_point(plan.config) if cfg.tune.include_default else None
    name = sweep_name(cfg, [spec.name for spec in plan.concepts])
    root = Path(cfg.tune.dir).resolve()
    path = root / name

    import ray
    from ray import tune

    from fade.distributed.trainer import start_ray
    from fade.eval.evaluate import check_detector, eval_sets

    check_detector(cfg, plan, eval_sets(cfg, plan).retained_names)
    _check_same_sweep(path, _settings(cfg, space))  # the first check that writes
    base = config_to_dict(cfg)
    started_ray = start_ray(cfg)
    try:
        # Started now, awaited by the trials after their training, cancelled if no trial needs
        # it (a rerun of a finished sweep). It holds no more than a trial's workers (on GPUs,
        # one GPU), so it can always run beside one trial's own reservation.
        d = cfg.distributed
        task = (
            {"num_cpus": d.cpus_per_worker, "num_gpus": 1}
            if d.use_gpu
            else {"num_cpus": d.num_workers * d.cpus_per_worker}
        )
        bases = measure_bases_task().options(**task).remote(base, cfg.tune.early_stopping)
        trainable = tune.with_resources(
            tune.with_parameters(
                erase_and_score,
                base=base,
                bases=[bases],  # in a list: Tune would refuse to store a bare ObjectRef
                early_stopping=cfg.tune.early_stopping,
                metric=cfg.tune.metric,
            ),
            trial_resources(cfg),
        )
        resumed = tune.Tuner.can_restore(str(path))
        if resumed:
            tuner = tune.Tuner.restore(
                str(path),
                trainable,
                resume_unfinished=True,
                resume_errored=False,
                restart_errored=False,
            )
        else:
            tuner = _tuner(cfg, space, trainable, name, root, default_point)
        grid = tuner.fit()
    finally:
        if "bases" in locals():
            ray.cancel(bases)
        if started_ray:
            ray.shutdown()
    keys = [d.key for d in space.dimensions]
    rows = rows_from_grid(grid, keys, default_point)
    metric = cfg.tune.metric
    limit = cfg.tune.max_retained_drop
    best = best_row(rows, metric, limit)
    write_table(path / TABLE, rows, keys, limit)
    if best is not None:
        write_best_config(path / BEST_CONFIG, cfg, best, f"runs/{name}-best")
    plot(path / PLOT, rows, best, f"{name}: {len(rows)} trials, metric {metric}", metric, limit)
    done = sum(r.status in ("finished", "stopped early", "error") for r in rows)
    return SweepOutcome(
        path,
        rows,
        best,
        next((r for r in rows if r.is_default), None),
        metric,
        limit,
        resumed,
        complete=done >= cfg.tune.num_samples,
        seconds=round(time.time() - started, 1),
    )


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if not math.isnan(value) else "-"
    return "-" if value is None else str(value)


def summary(outcome: SweepOutcome) -> str:
    """The table `tune/sweep.py` prints: every trial, then the best config and its score."""
    keys = list(outcome.rows[0].params) if outcome.rows else []
    m = outcome.metric
    header = ["trial", "id", "status", *keys, m, "E", "F", "Acc target", "Acc retained (change)"]
    lines = [" | ".join(header)]
    for row in outcome.rows:
        s = row.scores
        cells = [
            str(row.number) + (" (base)" if row.is_default else ""),
            row.trial_id,
            row.status,
            *(_fmt(row.params.get(k)) for k in keys),
            _fmt(row.value(m)),
            _fmt(s.get("E")),
            _fmt(s.get("F")),
            _fmt(s.get("acc_target_after")),
            _fmt(s.get("acc_retained_after"))
            + (f" ({0.0 - row.retained_drop():+.1f})" if row.retained_drop() is not None else ""),
        ]
        lines.append(" | ".join(cells))
    b, d = outcome.best, outcome.default
    limit = outcome.max_retained_drop
    if b is None:
        finished = any(r.status == "finished" for r in outcome.rows)
        lines.append(
            f"no finished trial kept its retained concepts within {limit:g} Acc points: no best "
            "config (tune.max_retained_drop sets the limit)"
            if finished
            else "no trial finished its full evaluation: no best config"
        )
    else:
        values = ", ".join(f"{k}={_fmt(v)}" for k, v in b.params.items())
        lines.append(f"best: trial {b.number} ({b.trial_id}) {m} {b.value(m):.1f} with {values}")
        if limit is not None:
            over = [r for r in outcome.rows if r.status == "finished" and not r.eligible(limit)]
            if over:
                lines.append(
                    f"  not eligible (retained Acc fell more than {limit:g} points): trials "
                    + ", ".join(str(r.number) for r in over)
                )
        if d is not None and d.value(m) is not None and d.status == "finished":
            lines.append(
                f"base config: {m} {d.value(m):.1f} (best - base = {b.value(m) - d.value(m):+.1f})"
            )
        lines.append(
            f"best config: {outcome.files[BEST_CONFIG]} "
            f"(python jobs/erase.py --config {outcome.files[BEST_CONFIG]})"
        )
    lines.append(f"table: {outcome.files[TABLE]}; plot: {outcome.files[PLOT]}")
    state = "complete" if outcome.complete else "not complete: rerun the same command to continue"
    lines.append(
        f"{len(outcome.rows)} trials, {outcome.seconds:.0f} s"
        f"{' (continued)' if outcome.resumed else ''}; sweep {state}"
    )
    return "\n".join(lines)
