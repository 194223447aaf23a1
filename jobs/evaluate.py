"""Evaluate an erasure adapter: rewrite a run directory's metrics and report, or evaluate a bare
adapter into a new run directory.

    python jobs/evaluate.py runs/latest                         # re-evaluate a run
    python jobs/evaluate.py runs/latest eval.samples_per_prompt=8 eval.fd_samples=128
    python jobs/evaluate.py --base toy --adapter my_lora/ --concepts diamond --out runs/mine

Thin entry point: parse the arguments, hand them to fade.eval.rundirs.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fade.cli import Shortcut, build_parser, config_from_args, shortcut_overrides
from fade.errors import ConfigError, run_cli

SHORTCUTS = (
    Shortcut("--base", "model.path", "base model of --adapter: a hub id, a local folder or 'toy'"),
    Shortcut("--concepts", "concepts.names", "concepts the adapter erases, comma-separated"),
    Shortcut("--concept-set", "concepts.concept_set", "a catalog set name or a catalog file"),
    Shortcut("--catalog", "concepts.catalog", "catalog that concept names are looked up in"),
    Shortcut("--surrogate", "concepts.surrogate", "concept the erased one should turn into"),
    Shortcut("--detector", "eval.detector", "concept detector: toy, imagenet, nudenet, clip, face"),
    Shortcut("--out", "output.dir", "run directory to write (with --adapter)"),
    Shortcut("--overwrite", "output.overwrite", "replace an existing --out directory", True),
    Shortcut("--seed", "seed", "random seed"),
)


def _dest(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser(
        "jobs/evaluate.py",
        "Evaluate an erasure adapter before/after on the same seeds: give a RUN_DIR written by "
        "jobs/erase.py (its metrics.json, metrics.parquet and report.html are rewritten), or "
        "--base MODEL --adapter DIR --concepts ... --out DIR for an adapter without a run "
        "directory.",
        SHORTCUTS,
        ("RUN_DIR key=value", "a run directory, then dotted config overrides for its evaluation"),
    )
    parser.usage = (
        "jobs/evaluate.py [RUN_DIR | --base MODEL --adapter DIR --concepts C --out DIR] "
        "[options] [key=value ...]"
    )
    parser.add_argument(
        "--adapter", metavar="DIR", help="folder holding pytorch_lora_weights.safetensors"
    )
    args = parser.parse_intermixed_args(argv)
    paths = [item for item in args.overrides if "=" not in item]
    args.overrides = [item for item in args.overrides if "=" in item]
    if len(paths) > 1:
        raise ConfigError(f"give one run directory, got {len(paths)}: {' '.join(paths)}")
    if paths and args.adapter:
        raise ConfigError("give either RUN_DIR or --adapter DIR, not both")
    if not paths and not args.adapter:
        raise ConfigError("give a RUN_DIR, or --base MODEL --adapter DIR --concepts ... --out DIR")
    from fade.eval.rundirs import evaluate_new, reevaluate

    if paths:
        given = {s.flag for s in SHORTCUTS if getattr(args, _dest(s.flag)) is not None}
        misplaced = sorted(given & {"--base", "--out", "--overwrite"})
        misplaced += ["--config"] if args.config else []
        if misplaced:
            raise ConfigError(
                f"{', '.join(misplaced)} go with --adapter: a RUN_DIR is evaluated with its own "
                "model, config and directory (key=value overrides change how)"
            )
        outcome = reevaluate(Path(paths[0]), [*shortcut_overrides(args), *args.overrides])
    else:
        outcome = evaluate_new(config_from_args(args), Path(args.adapter))
    from fade.eval.results import metrics_table

    print("\n".join(metrics_table(outcome.metrics)))
    print(
        f"evaluated in {outcome.seconds:.0f} s; written to {outcome.path} "
        "(metrics.json, metrics.parquet, report.html)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
