"""Speed figures, printed (never asserted: machines are noisy; compare ratios in one run).

    python jobs/benchmark.py toy-generate      # FluxPipeline on the toy model: 64 images
    python jobs/benchmark.py ablation          # full FADE vs w/o adversary, λ = 0, w/o saliency
    python jobs/benchmark.py evaluate          # before/after evaluation, 4 toy concepts x 32

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


def random_adapter(out: Path, share: float = 0.5, rank: int = 4, seed: int = 0) -> Path:
    """A LoRA with random (non-zero) weights on the first `share` of the toy model's candidate
    modules, saved in the diffusers format: the size of a default erasure adapter, no training."""
    import torch

    from fade.adapters import attach_lora, lora_parameters, save_adapter
    from fade.backbones import load_backbone
    from fade.saliency import candidate_modules

    backbone = load_backbone("toy", local_files_only=True)
    modules = candidate_modules(backbone.denoiser, backbone.family)
    attach_lora(backbone, modules[: max(1, round(share * len(modules)))], rank=rank)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in lora_parameters(backbone):
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.02)
    save_adapter(backbone, out)
    return out


def evaluate(args: argparse.Namespace) -> None:
    import tempfile

    import torch

    from fade.adapters import adapter_modules
    from fade.config import config_hash, load_config
    from fade.eval.evaluate import evaluate_adapter
    from fade.eval.results import RunFacts, write_results
    from fade.plan import make_plan

    overrides = [
        f"concepts.names=[{args.concepts}]",
        f"eval.images_per_concept={args.images}",
        f"eval.samples_per_prompt={max(1, args.images // 8)}",
        f"eval.fd_samples={max(16, args.images)}",
        *args.overrides,
    ]
    cfg = load_config(overrides=overrides)
    plan = make_plan(cfg)
    with tempfile.TemporaryDirectory(prefix="fade-bench-") as tmp:
        if args.adapter:
            adapter, source = Path(args.adapter), f"the adapter in {args.adapter}"
        else:
            adapter = random_adapter(Path(tmp) / "adapter")
            source = "a random LoRA (rank 4, std 0.02) on half of the candidate modules"
        load = os.getloadavg()
        started = time.perf_counter()
        evaluation = evaluate_adapter(cfg, plan, adapter)
        evaluated = time.perf_counter() - started
        facts = RunFacts("toy", None, [s.name for s in plan.concepts], config_hash(cfg), cfg.seed)
        write_results(Path(tmp) / "run", evaluation.metrics, evaluation.grids, facts)
        written = time.perf_counter() - started
        modules = len(adapter_modules(adapter))
    samples = evaluation.metrics["samples"]
    images = 2 * sum(samples.values())
    print(
        f"evaluate: {len(plan.concepts)} toy concepts ({args.concepts}), {args.images} images per "
        f"concept and prompt set, {cfg.eval.num_inference_steps} steps, CFG "
        f"{cfg.eval.guidance_scale}; adapter: {source} ({modules} modules)"
    )
    print(
        f"  images per model state: {', '.join(f'{k} {v}' for k, v in samples.items())}; "
        f"{images} in all (before + after)"
    )
    print(
        f"  evaluate_adapter {evaluated:.1f} s ({images / evaluated:.1f} images/s); with "
        f"metrics.json, metrics.parquet and report.html written {written:.1f} s"
    )
    print(
        f"  torch threads {torch.get_num_threads()}, OMP_WAIT_POLICY "
        f"{os.environ.get('OMP_WAIT_POLICY', 'unset')}, load average at start "
        f"{load[0]:.2f} on {os.cpu_count()} CPUs"
    )


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
    timed = sub.add_parser(
        "evaluate",
        help="time the before/after evaluation of 4 toy concepts (issue 5: <= 180 s on 2 cores)",
        epilog="Extra key=value overrides apply to the evaluation (docs/configuration.md).",
    )
    timed.add_argument("--concepts", default="diamond,circle,red,velmora")
    timed.add_argument("--images", type=int, default=32, help="images per concept and prompt set")
    timed.add_argument(
        "--adapter", help="adapter folder to evaluate (default: a random LoRA, built untimed)"
    )
    timed.add_argument("overrides", nargs="*", metavar="key=value")
    timed.set_defaults(run=evaluate)
    args = parser.parse_args(argv)
    args.run(args)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
