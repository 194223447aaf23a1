"""Erase concepts from a text-to-image model (FADE), as a Ray Train job.

    python jobs/erase.py                                  # the toy world's default concept
    python jobs/erase.py --dry-run --catalog cifar10 --concepts airplane
    ray job submit -- python jobs/erase.py --config jobs/configs/default.yaml erase.t0=0.5

Thin entry point: parse the config, resolve the plan, hand it to the library.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fade.cli import COMMON_SHORTCUTS, Shortcut, build_parser, config_from_args
from fade.errors import run_cli
from fade.plan import make_plan

NO_EVAL = Shortcut(
    "--no-eval",
    "eval.enabled",
    "skip the before/after evaluation: no metrics.json, metrics.parquet or report.html "
    "(add them later with jobs/evaluate.py DIR)",
    is_switch=True,
    switch_value="false",
)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser(
        "jobs/erase.py",
        "Erase concepts from a text-to-image model and write a LoRA adapter run directory, "
        "then evaluate it (metrics.json, metrics.parquet, report.html).",
        (*COMMON_SHORTCUTS, NO_EVAL),
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="resolve concepts and prompts, print the plan, stop"
    )
    args = parser.parse_args(argv)
    cfg = config_from_args(args)
    plan = make_plan(cfg)
    print(plan.summary())
    if args.dry_run:
        return 0
    # Imported here, not at the top: it pulls in torch, diffusers and Ray (seconds), and a
    # mistake or a --dry-run should answer at once.
    from fade.run import erase, summary_table

    result = erase(cfg)
    print(summary_table(result))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
