"""Build the embedded toy world (model and detector) from its recipe, resumably.

    python jobs/build_toyworld.py                      # all stages, into fade/toyworld/
    python jobs/build_toyworld.py --stages autoencoder --work build/toyworld
    python jobs/build_toyworld.py --stages check --work "$(mktemp -d)" \
        --sheet docs/toyworld_concepts.png              # check the committed model

Each stage checkpoints into --work; rerun the same command to resume. See docs/toyworld.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fade.errors import FadeError, run_cli
from fade.toyworld.build import (
    MODEL_DIR,
    STAGES,
    build_toyworld,
    draw_concept_sheet,
    require_model,
    time_summary,
)
from fade.toyworld.spec import ToyBuildConfig


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="jobs/build_toyworld.py", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--work", default="build/toyworld", help="checkpoint directory")
    parser.add_argument("--out", default=str(MODEL_DIR), help="where the diffusers folder goes")
    parser.add_argument("--stages", default=",".join(STAGES), help=f"comma list of {STAGES}")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model-steps", type=int, help="override the recipe's model steps")
    parser.add_argument(
        "--detector-out",
        help="the detector folder the detector stage writes and the check stage reads "
        "(default: the committed one for the committed model, else OUT-detector beside --out, "
        "so a scratch build never overwrites it)",
    )
    parser.add_argument(
        "--no-compile",
        action="store_true",
        help="train the transformer eagerly instead of compiled by TorchInductor (slower; "
        "for machines where compilation fails)",
    )
    parser.add_argument(
        "--sheet",
        help="after the stages, draw 8 generations of every concept from --out into this PNG",
    )
    args = parser.parse_args(argv)
    stages = tuple(s for s in args.stages.split(",") if s)
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise FadeError(f"unknown stage(s) {unknown}: choose from {list(STAGES)}")
    builds_a_model = "model" in stages
    if (args.sheet or "check" in stages) and not builds_a_model:
        require_model(Path(args.out))  # before anything is written
    config = ToyBuildConfig(seed=args.seed)
    if args.model_steps:
        config.model.steps = args.model_steps
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    detector_out = Path(args.detector_out) if args.detector_out else None
    started = time.time()
    report = build_toyworld(
        config,
        Path(args.work),
        Path(args.out),
        stages,
        detector_out,
        compile_transformer=not args.no_compile,
    )
    print(json.dumps(report, indent=2))
    print(time_summary(report, time.time() - started))
    if args.sheet:
        print(f"concept sheet: {draw_concept_sheet(Path(args.out), Path(args.sheet))}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
