"""Search the erasure's settings (λ, t0, saliency sparsity, ...) with Ray Tune against H.

    python tune/sweep.py                                   # one toy concept, 10 trials
    python tune/sweep.py --concepts circle --space tune/spaces/default.yaml tune.num_samples=16
    ray job submit -- python tune/sweep.py --concepts diamond   # on a cluster

Rerunning the same command continues an interrupted sweep. Thin entry point: parse the config,
hand it to fade.tuning (docs/tuning.md).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fade.cli import COMMON_SHORTCUTS, Shortcut, build_parser, config_from_args
from fade.errors import run_cli

DEFAULT_SPACE = Path(__file__).resolve().parent / "spaces" / "default.yaml"
SWEEP_SHORTCUTS = (
    Shortcut("--space", "tune.space", "search space YAML (default: tune/spaces/default.yaml)"),
    Shortcut("--trials", "tune.num_samples", "how many trials to run"),
    Shortcut("--name", "tune.name", "sweep name; the same name continues the sweep"),
    Shortcut("--metric", "tune.metric", "score to maximise: H, H_o or H_c"),
)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser(
        "tune/sweep.py",
        "Sweep erasure settings with Ray Tune (Optuna search, ASHA early stopping) and write "
        "trials.parquet, best.yaml (a config for jobs/erase.py --config) and pareto.png "
        "into tune.dir/<name>.",
        (
            *[s for s in COMMON_SHORTCUTS if s.flag not in ("--out", "--overwrite")],
            *SWEEP_SHORTCUTS,
        ),
    )
    args = parser.parse_args(argv)
    cfg = config_from_args(args)
    from fade.tuning.sweep import run_sweep, summary

    outcome = run_sweep(cfg, Path(cfg.tune.space) if cfg.tune.space else DEFAULT_SPACE)
    print(summary(outcome))
    return 0 if outcome.complete else 130


if __name__ == "__main__":
    sys.exit(run_cli(main))
