"""Speed figures, printed (never asserted: machines are noisy; compare ratios in one run).

    python jobs/benchmark.py toy-generate      # FluxPipeline on the toy model: 64 images
    python jobs/benchmark.py ablation          # full FADE vs w/o adversary, λ = 0, w/o saliency
    python jobs/benchmark.py evaluate          # before/after evaluation, 4 toy concepts x 32
    python jobs/benchmark.py serve             # HTTP load vs the pipeline called directly
    python jobs/benchmark.py scaling           # erasure steps/s per strategy, 1 and 2 workers

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
    prompts = ["a red circle", "the letter k", "a cross by velmora", "a blue striped heart"]
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
    from fade.config import apply_overrides, config_hash, load_config
    from fade.eval.evaluate import evaluate_adapter, side_by_side_threads
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
        # Both ways of measuring the two model states, one after the other in one run, so the
        # ratio does not depend on how busy the machine was on another day.
        serial_cfg = apply_overrides(cfg, {"eval.side_by_side": False})
        started = time.perf_counter()
        serial = evaluate_adapter(serial_cfg, plan, adapter)
        serial_seconds = time.perf_counter() - started
        started = time.perf_counter()
        evaluation = evaluate_adapter(cfg, plan, adapter)
        evaluated = time.perf_counter() - started
        facts = RunFacts("toy", None, [s.name for s in plan.concepts], config_hash(cfg), cfg.seed)
        write_results(Path(tmp) / "run", evaluation.metrics, evaluation.grids, facts)
        written = time.perf_counter() - started
        modules = len(adapter_modules(adapter))
    same = serial.metrics["acc"] == evaluation.metrics["acc"]
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
    threads = side_by_side_threads(cfg)
    way = f"side by side (2 processes x {threads} threads)" if threads else "in one process"
    print(
        f"  evaluate_adapter {evaluated:.1f} s {way} ({images / evaluated:.1f} images/s); with "
        f"metrics.json, metrics.parquet and report.html written {written:.1f} s"
    )
    print(
        f"  one state after the other in one process (eval.side_by_side=false): "
        f"{serial_seconds:.1f} s, {serial_seconds / evaluated:.2f}x the time; "
        f"Acc {'identical' if same else 'DIFFERENT'}"
    )
    print(
        f"  torch threads {torch.get_num_threads()}, OMP_WAIT_POLICY "
        f"{os.environ.get('OMP_WAIT_POLICY', 'unset')}, load average at start "
        f"{load[0]:.2f} on {os.cpu_count()} CPUs"
    )


BENCH_PROMPTS = ["a red circle", "the letter k", "a cross by velmora", "a blue striped heart"]


def _bench_registry(root: Path, count: int) -> list[str]:
    """`count` run directories holding random adapters of a default erasure's size (the
    speed of serving does not depend on what an adapter erases)."""
    import json

    ids = []
    for index in range(count):
        run = root / f"bench-{index}"
        random_adapter(run / "adapter", seed=index)
        manifest = {"model": {"path": "toy"}, "concepts": [{"name": f"random-{index}"}]}
        (run / "manifest.json").write_text(json.dumps(manifest))
        ids.append(run.name)
    return ids


def _direct(ids: list[str], registry: Path, requests: int, batch: int, steps: int) -> float:
    """Requests/s of FluxPipeline called in this process, `batch` prompts a call, one adapter."""
    import torch
    from diffusers import FluxPipeline

    from fade.backbones.loading import resolve_model_path
    from fade.toyworld.spec import MAX_TOKENS

    pipe = FluxPipeline.from_pretrained(resolve_model_path("toy"), local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    pipe.load_lora_weights(str(registry / ids[0] / "adapter"), adapter_name=ids[0])

    def call(count: int, seed: int) -> None:
        prompts = [BENCH_PROMPTS[(seed + i) % 4] for i in range(count)]
        pipe(
            prompts,
            negative_prompt=[""] * count,
            true_cfg_scale=3.5,
            height=32,
            width=32,
            max_sequence_length=MAX_TOKENS,
            num_inference_steps=steps,
            generator=[torch.Generator().manual_seed(seed + i) for i in range(count)],
        )

    call(batch, 0)  # warm-up
    started = time.perf_counter()
    for seed in range(0, requests, batch):
        call(min(batch, requests - seed), seed)
    return requests / (time.perf_counter() - started)


def serve_bench(args: argparse.Namespace) -> None:
    import signal
    import socket
    import tempfile

    import ray
    from ray import serve

    from fade.config import load_config
    from fade.serve.loadtest import run_load
    from fade.serve.runner import start, stop

    cpus = os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="fade-serve-bench-") as tmp:
        registry = Path(tmp)
        ids = _bench_registry(registry, 3)
        n, steps = args.requests, args.steps
        direct_batched = _direct(ids, registry, n, args.concurrency, steps)
        direct_single = _direct(ids, registry, max(args.concurrency, n // 4), 1, steps)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        ray.init(address="local", num_cpus=cpus, include_dashboard=False, log_to_driver=False)
        try:
            cfg = load_config(
                overrides=[
                    f"serve.registry=[{registry}]",
                    f"serve.port={port}",
                    f"serve.replica_cpus={cpus}",
                    f"serve.max_batch_size={args.concurrency}",
                    f"serve.default_steps={steps}",
                ]
            )
            url = start(cfg)

            def bodies(adapters: list[str]) -> list[dict]:
                return [
                    {
                        "prompt": BENCH_PROMPTS[i % 4],
                        "adapter": adapters[i % len(adapters)],
                        "seed": i,
                    }
                    for i in range(n)
                ]

            run_load(url, bodies(ids)[: 4 * args.concurrency], args.concurrency)  # warm-up
            single = run_load(url, bodies(ids[:1]), args.concurrency)
            switching = run_load(url, bodies(ids), args.concurrency)
            handle = serve.get_deployment_handle("ImageGenerator", app_name="fade")
            victim = handle.describe.remote().result(timeout_s=60)["pid"]
            kill_at = n // 3

            def kill(index: int) -> None:
                if index == kill_at:
                    os.kill(victim, signal.SIGKILL)

            faulted = run_load(url, bodies(ids[:1]), args.concurrency, after_request=kill)
            replacement = handle.describe.remote().result(timeout_s=120)["pid"]
            stop()
        finally:
            ray.shutdown()
    print(
        f"serve: toy model, 32x32, {steps} steps, {n} requests of 1 image at concurrency "
        f"{args.concurrency}; 1 replica with {cpus} CPUs, batches up to {args.concurrency}; "
        f"{cpus} CPUs in all (client, proxy, gateway and replica share them)"
    )
    print(f"  one adapter:         {single.summary()}")
    print(f"  3 adapters in turn:  {switching.summary()}")
    print(
        f"  replica killed after request {kill_at}: {faulted.summary()}; "
        f"replica pid {victim} -> {replacement}"
    )
    print(
        f"  FluxPipeline in one process, same adapter: {direct_batched:.2f} requests/s in "
        f"batches of {args.concurrency}, {direct_single:.2f} requests/s one at a time"
    )
    print(
        f"  ratios: served / direct batched {single.throughput / direct_batched:.2f}, "
        f"served / direct one at a time {single.throughput / direct_single:.2f}, "
        f"3 adapters / 1 adapter {switching.throughput / single.throughput:.2f}"
    )


def worker_counts(text: str) -> list[int]:
    """`--workers 1,2` as numbers (argparse turns the error into a one-line usage error)."""
    try:
        counts = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers like 1,2, got {text!r}") from None
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"worker counts must be >= 1, got {text!r}")
    return counts


def scaling(args: argparse.Namespace) -> None:
    """Each strategy at each worker count runs the same erasure loop through Ray Train, one
    after another on one Ray; the loop's own steps/s comes from the workers' summary (model
    loading, ranking and D pre-training excluded)."""
    import dataclasses
    import shutil
    import tempfile

    import ray

    from fade.config import load_config, validate_config
    from fade.distributed.trainer import run_erasure, start_ray
    from fade.plan import make_plan

    strategies, counts = args.strategies.split(","), args.workers
    base = load_config(
        overrides=[
            f"concepts.names={args.concepts}",
            f"erase.steps={args.steps}",
            "erase.early_stop_patience=1000000",  # every run does all its steps
            "distributed.checkpoint_every=0",
            "distributed.max_failures=0",
            "eval.enabled=false",
            *args.overrides,
            f"distributed.strategy={strategies[0]}",  # offload etc. are checked per strategy
        ]
    )
    runs = {}
    for strategy in strategies:  # every combination validated before Ray starts
        for workers in counts:
            distributed = dataclasses.replace(
                base.distributed,
                strategy=strategy,
                num_workers=workers,
                storage_path=None,  # a fresh folder per run: a rerun must not resume
                run_name=f"scaling-{strategy}-{workers}",
            )
            runs[strategy, workers] = validate_config(
                dataclasses.replace(base, distributed=distributed)
            )
    make_plan(base)  # a bad concept fails here too
    widest = dataclasses.replace(base.distributed, num_workers=max(counts))
    started = start_ray(dataclasses.replace(base, distributed=widest))
    rows = []
    try:
        for (strategy, workers), cfg in runs.items():
            wall = time.perf_counter()
            with tempfile.TemporaryDirectory() as storage:
                outcome = run_erasure(cfg, Path(storage))
            shutil.rmtree(outcome.checkpoint_dir)
            rate = outcome.metrics["steps_per_second"]
            rows.append((strategy, workers, rate, time.perf_counter() - wall))
            print(f"  {strategy} x {workers}: {rate:.3f} steps/s", flush=True)
    finally:
        if started:
            ray.shutdown()
    batch = base.erase.batch_size
    reference = rows[0][2]
    print(
        f"\nerasure loop on {args.concepts}, {args.steps} steps, {batch} prompts per worker and "
        f"step, {os.cpu_count()} CPUs (workers share them)"
    )
    print(
        f"{'strategy':<9} {'workers':>7} {'steps/s':>8} {'s/step':>7} {'prompts/s':>9} "
        f"{'vs first':>8} {'run s':>6}"
    )
    for strategy, workers, rate, wall in rows:
        prompts = rate * batch * workers
        print(
            f"{strategy:<9} {workers:>7} {rate:>8.3f} {1 / rate:>7.2f} {prompts:>9.1f}"
            f" {rate / reference:>8.2f} {wall:>6.0f}"
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
    served = sub.add_parser(
        "serve",
        help="HTTP load on the Serve app (1 and 3 adapters, a replica killed) vs FluxPipeline "
        "called directly",
    )
    served.add_argument("--requests", type=int, default=300)
    served.add_argument("--concurrency", type=int, default=8)
    served.add_argument("--steps", type=int, default=20)
    served.set_defaults(run=serve_bench)
    scaled = sub.add_parser(
        "scaling",
        help="erasure steps/s for each strategy (ddp, fsdp, zero2, zero3) at 1 and 2 workers",
        epilog="Extra key=value overrides apply to every run (docs/configuration.md).",
    )
    scaled.add_argument(
        "--strategies",
        default="ddp,fsdp,zero2,zero3",
        help="comma-separated (default: %(default)s)",
    )
    scaled.add_argument(
        "--workers", type=worker_counts, default="1,2", help="worker counts (default: 1,2)"
    )
    scaled.add_argument(
        "--steps", type=int, default=30, help="erasure steps per run (default: %(default)s)"
    )
    scaled.add_argument(
        "--concepts", default=DEFAULT_TOY_CONCEPT, help="concept(s) to erase (default: %(default)s)"
    )
    scaled.add_argument("overrides", nargs="*", metavar="key=value")
    scaled.set_defaults(run=scaling)
    args = parser.parse_args(argv)
    args.run(args)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
