"""Speed figures, printed (never asserted: machines are noisy; compare ratios in one run).

    python jobs/benchmark.py toy-generate      # FluxPipeline on the toy model: 64 images
    python jobs/benchmark.py ablation          # full FADE vs w/o adversary, λ = 0, w/o saliency

Each subcommand prints what it measured and how.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fade.errors import run_cli
from fade.plan import DEFAULT_TOY_CONCEPT


def toy_generate(args: argparse.Namespace) -> None:
    import torch
    from diffusers import FluxPipeline

    from fade.backbones.loading import resolve_model_path
    from fade.toyworld.spec import IMAGE_SIZE, MAX_TOKENS

    started = time.perf_counter()
    pipe = FluxPipeline.from_pretrained(resolve_model_path("toy"), local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    loaded = time.perf_counter() - started
    prompts = ["a red circle", "the letter k", "a star by velmora", "a blue striped heart"]
    prompts = (prompts * (args.images // len(prompts) + 1))[: args.images]
    kwargs = {
        "height": IMAGE_SIZE,
        "width": IMAGE_SIZE,
        "max_sequence_length": MAX_TOKENS,
        "num_inference_steps": args.steps,
        "output_type": "pt",
    }
    if args.guidance > 1:
        kwargs |= {"negative_prompt": [""] * len(prompts), "true_cfg_scale": args.guidance}
    pipe(prompts, **(kwargs | {"num_inference_steps": 1}))  # warm-up
    times = []
    for repeat in range(args.repeats):
        start = time.perf_counter()
        images = pipe(prompts, generator=torch.Generator().manual_seed(repeat), **kwargs).images
        times.append(time.perf_counter() - start)
    print(
        f"toy FluxPipeline: load {loaded:.2f} s; {len(images)} images {IMAGE_SIZE}x{IMAGE_SIZE}, "
        f"{args.steps} steps, true CFG {args.guidance}, torch threads {torch.get_num_threads()}"
    )
    print(
        f"  seconds per call: {', '.join(f'{t:.2f}' for t in times)} "
        f"(best {min(times):.2f} s, {len(images) / min(times):.1f} images/s)"
    )


def ablation(args: argparse.Namespace) -> None:
    import ray

    from fade.ablation import ablation_table, run_ablation

    overrides = [f"concepts.names={args.concepts}", *args.overrides]
    ray.init(address="local", num_cpus=max(3, os.cpu_count() or 1), include_dashboard=False)
    try:
        rows = run_ablation(overrides, Path(args.out))
    finally:
        ray.shutdown()
    print(f"ablation on {args.concepts} (overrides: {' '.join(args.overrides) or 'none'}):")
    print(ablation_table(rows))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="jobs/benchmark.py", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    generate = sub.add_parser("toy-generate", help="time FluxPipeline on the toy model")
    generate.add_argument("--images", type=int, default=64)
    generate.add_argument("--steps", type=int, default=20)
    generate.add_argument("--guidance", type=float, default=3.5)
    generate.add_argument("--repeats", type=int, default=3)
    generate.set_defaults(run=toy_generate)
    ablate = sub.add_parser(
        "ablation",
        help="erase one concept four ways (full, w/o adversary, λ = 0, w/o saliency)",
        epilog="Extra key=value overrides apply to every variant (docs/configuration.md).",
    )
    ablate.add_argument(
        "--concepts", default=DEFAULT_TOY_CONCEPT, help="concept(s) to erase (default: %(default)s)"
    )
    ablate.add_argument("--out", default="runs/ablation", help="one run directory per variant")
    ablate.add_argument("overrides", nargs="*", metavar="key=value")
    ablate.set_defaults(run=ablation)
    args = parser.parse_args(argv)
    args.run(args)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
