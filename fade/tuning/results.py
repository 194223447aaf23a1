"""What a sweep leaves for its user: every trial as a Parquet row, the best config as a YAML that
`jobs/erase.py --config` runs, and a plot of erasure E against fidelity F.

Only trials that finished the full evaluation compete for best: a trial ASHA stopped after the
quick evaluation has a noisier score (a third of the images) and is shown, not ranked.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fade.config import FadeConfig, apply_overrides, save_config
from fade.tuning.trial import FULL

TABLE, BEST_CONFIG, PLOT = "trials.parquet", "best.yaml", "pareto.png"


@dataclass
class TrialRow:
    """One trial as the table holds it."""

    number: int  # 1, 2, ... in the order Tune created the trials
    trial_id: str
    status: str  # "finished", "stopped early" (by ASHA), "error" or "unfinished" (interrupted)
    params: dict[str, Any]
    scores: dict[str, Any]
    is_default: bool = False
    error: str | None = None
    checkpoint: str | None = None

    def value(self, metric: str) -> float | None:
        value = self.scores.get(metric)
        return value if isinstance(value, int | float) and math.isfinite(value) else None

    def retained_drop(self) -> float | None:
        """Acc points the retained concepts lost (None: not measured)."""
        before, after = self.value("acc_retained_before"), self.value("acc_retained_after")
        return None if before is None or after is None else before - after

    def eligible(self, max_retained_drop: float | None) -> bool:
        """Finished, scored, and within the retained-Acc limit (when there is one)."""
        if self.status != "finished":
            return False
        drop = self.retained_drop()
        return max_retained_drop is None or (drop is not None and drop <= max_retained_drop)


def rows_from_grid(grid, keys: list[str], default_point: dict | None) -> list[TrialRow]:
    """The ResultGrid's trials in the order they were created (trial ids sort that way)."""
    rows = []
    for result in grid:
        metrics = dict(result.metrics or {})
        params = {key: (result.config or {}).get(key) for key in keys}
        stage = metrics.get("stage")
        if result.error is not None:
            status, error = "error", " ".join(str(result.error).split())[:2000]
        else:
            status = {FULL: "finished", None: "unfinished"}.get(stage, "stopped early")
            error = None
        scores = {k: v for k, v in metrics.items() if k not in ("config",) and _plain(v)}
        rows.append(
            TrialRow(
                number=_trial_number(Path(result.path).name),
                trial_id=str(metrics.get("trial_id") or Path(result.path).name),
                status=status,
                params=params,
                scores=scores,
                is_default=default_point is not None and params == default_point,
                error=error,
                checkpoint=result.checkpoint.path if result.checkpoint else None,
            )
        )
    return sorted(rows, key=lambda row: row.number)


def _trial_number(folder: str) -> int:
    """Tune names a trial's folder <trainable>_<id>_<number>_<params>_<date>."""
    match = re.search(r"_[0-9a-f]{5,}_(\d+)_", folder)
    return int(match.group(1)) if match else 0


def _plain(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


SCORE_COLUMNS = (
    "stage",
    "H",
    "E",
    "F",
    "H_o",
    "H_c",
    "acc_target_before",
    "acc_target_after",
    "acc_synonyms_before",
    "acc_synonyms_after",
    "acc_retained_before",
    "acc_retained_after",
    "fd_before",
    "fd_after",
    "alignment_before",
    "alignment_after",
    "steps_run",
    "train_seconds",
    "time_total_s",
)


def write_table(
    path: Path, rows: list[TrialRow], keys: list[str], max_retained_drop: float | None = None
) -> Path:
    """trials.parquet: one row per trial; swept settings as `param:<key>` columns; `eligible`
    says whether the trial could be best (finished, retained Acc within the limit)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    records = [
        {
            "trial": row.number,
            "trial_id": row.trial_id,
            "status": row.status,
            "is_default": row.is_default,
            "eligible": row.eligible(max_retained_drop),
            **{f"param:{key}": row.params.get(key) for key in keys},
            **{column: row.scores.get(column) for column in SCORE_COLUMNS},
            "error": row.error,
            "checkpoint": row.checkpoint,
        }
        for row in rows
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(records), path)
    return path


def best_row(
    rows: list[TrialRow], metric: str, max_retained_drop: float | None = None
) -> TrialRow | None:
    """The eligible trial with the highest `metric` (the first of equals)."""
    eligible = [r for r in rows if r.eligible(max_retained_drop) and r.value(metric) is not None]
    return max(eligible, key=lambda r: r.value(metric)) if eligible else None


def write_best_config(path: Path, base: FadeConfig, best: TrialRow, run_dir: str) -> Path:
    """The base config with the best trial's values, writing its run to `run_dir`."""
    cfg = apply_overrides(base, {**best.params, "output.dir": run_dir})
    return save_config(cfg, path)


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both E and F (both maximised), by E."""
    front = [
        i
        for i, (e, f) in enumerate(points)
        if not any(
            (e2 >= e and f2 >= f) and (e2 > e or f2 > f) for j, (e2, f2) in enumerate(points)
        )
    ]
    return sorted(front, key=lambda i: points[i][0])


def plot(
    path: Path,
    rows: list[TrialRow],
    best: TrialRow | None,
    title: str,
    metric: str = "H",
    max_retained_drop: float | None = None,
) -> Path:
    """E (x) against F (y): finished trials filled (orange when their retained concepts lost
    more than `max_retained_drop`), stopped ones hollow, each numbered as in the table; the
    Pareto front of the finished ones as a line, the base config and the best trial marked,
    and dotted curves of equal H (the harmonic mean of E and F) to read any trial's H off."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    def xy(row: TrialRow) -> tuple[float, float] | None:
        e, f = row.value("E"), row.value("F")
        return None if e is None or f is None else (e, f)

    finished = [(r, p) for r in rows if r.status == "finished" and (p := xy(r))]
    stopped = [(r, p) for r in rows if r.status == "stopped early" and (p := xy(r))]
    every = [p for _, p in finished + stopped]
    fig, ax = plt.subplots(figsize=(6.4, 4.8), dpi=120)
    low_e = min(p[0] for p in every) - 0.04 if every else 0.0
    low_f = min(p[1] for p in every) - 0.04 if every else 0.0
    high_f = max(p[1] for p in every) + 0.03 if every else 1.05
    scores = [r.value("H") for r, _ in finished + stopped if r.value("H") is not None]
    levels = (
        sorted({round(h, 1) for h in np.linspace(min(scores), max(scores), 5)}) if scores else []
    )
    grid_e = np.linspace(max(low_e, 0.01), 1.03, 400)
    for h in (level / 100 for level in levels):
        with np.errstate(divide="ignore", invalid="ignore"):
            f = h * grid_e / (2 * grid_e - h)  # from H = 2EF / (E + F)
        seen = (2 * grid_e > h) & (f >= low_f) & (f <= high_f)
        if seen.any():
            ax.plot(grid_e[seen], f[seen], ":", color="0.7", lw=0.8)
            at = np.flatnonzero(seen)[len(np.flatnonzero(seen)) // 2]
            ax.annotate(f"H={h * 100:.1f}", (grid_e[at], f[at]), fontsize=7, color="0.45")
    if stopped:
        ax.scatter(
            *zip(*[p for _, p in stopped], strict=True),
            facecolors="none",
            edgecolors="tab:gray",
            label="stopped early (quick evaluation)",
        )
    if finished:
        over = [p for r, p in finished if not r.eligible(max_retained_drop)]
        kept = [p for r, p in finished if r.eligible(max_retained_drop)]
        if kept:
            ax.scatter(*zip(*kept, strict=True), color="tab:blue", label="finished")
        if over:
            ax.scatter(
                *zip(*over, strict=True),
                color="tab:orange",
                label=f"finished, retained Acc fell > {max_retained_drop:g} points",
            )
        front = pareto_front([p for _, p in finished])
        ax.plot(
            *zip(*[finished[i][1] for i in front], strict=True),
            "-",
            color="tab:blue",
            alpha=0.5,
            label="Pareto front",
        )
    for row, (e, f) in finished + stopped:  # the trial number, to find it in the table
        ax.annotate(str(row.number), (e, f), xytext=(4, 3), textcoords="offset points", fontsize=7)
    if best is not None and xy(best):
        ax.scatter(
            *xy(best),
            marker="*",
            s=260,
            color="tab:red",
            zorder=5,
            label=f"best ({metric} {best.value(metric):.1f})",
        )
    default = next((r for r in rows if r.is_default and xy(r)), None)
    if default is not None:
        ax.scatter(
            *xy(default),
            marker="s",
            s=90,
            facecolors="none",
            edgecolors="black",
            linewidths=1.5,
            zorder=6,
            label="base config",
        )
    ax.set_xlabel("E = 1 - target Acc  (erasure)")
    ax.set_ylabel("F  (fidelity: alignment and FD kept)")
    ax.set_xlim(low_e, 1.03)
    ax.set_ylim(low_f, high_f)
    ax.set_title(title, fontsize=10)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="lower left")
    else:
        ax.text(0.5, 0.5, "no trial scored yet", ha="center", transform=ax.transAxes)
    ax.grid(alpha=0.2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
