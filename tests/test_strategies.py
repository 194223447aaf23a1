"""Every strategy computes the same erasure as ddp, and resumes any strategy's checkpoint.

Two gloo processes train a tiny FLUX for a few steps under ddp, FSDP2, ZeRO-2 and ZeRO-3 with
the same trajectory points on every worker (what FSDP and ZeRO-3 need anyway). The adapter,
AdamW's moments and the losses must match ddp's to float precision, the adapter file written
under sharding must hold whole tensors that `load_lora_weights` accepts, and a checkpoint
written under ddp must resume under each strategy to the same state.
"""

from __future__ import annotations

import dataclasses
import json
import os
import warnings
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from fade.config import load_config
from fade.errors import ConfigError
from tests.ports import free_port

STRATEGIES = ("ddp", "fsdp", "zero2", "zero3")
WORLD = 2
FIRST_STEPS, TOTAL_STEPS = 3, 5
#: A collective that some worker never joins fails after this instead of gloo's 30 minutes.
TIMEOUT = timedelta(seconds=120)


def _eraser(strategy: str, rank: int, world: int = WORLD):
    from fade.backbones import wrap_pipeline
    from fade.concepts import build_prompt_sets
    from fade.distributed.strategies import StrategyOptions, make_strategy
    from fade.distributed.worker import all_reduce_mean
    from fade.erase import Eraser
    from tests.test_erase_loop import SPEC, TINY_ERASE
    from tests.tiny import TINY_SIZE, tiny_flux_pipeline

    pipeline = tiny_flux_pipeline()
    pipeline.set_progress_bar_config(disable=True)
    # Two concepts: the mass recipe, whose per-concept weights (`erase.balance`) follow what
    # all workers measured, so every strategy and rank weighs alike.
    square = dataclasses.replace(SPEC, name="square", synonyms=())
    prompts = build_prompt_sets([SPEC, square], None, n_per_concept=8, n_retain=2, seed=0)
    options = StrategyOptions(strategy, batch_size=2, local_rank=rank)
    held = make_strategy(options, all_reduce_mean)
    held.lockstep = True  # ddp too: the same trajectory points as the sharded strategies
    config = dataclasses.replace(TINY_ERASE, steps=TOTAL_STEPS, eval_every=100)
    return Eraser(
        wrap_pipeline(pipeline),
        prompts,
        config,
        size=(TINY_SIZE, TINY_SIZE),
        rank=rank,
        world_size=world,
        all_reduce_mean=all_reduce_mean,
        strategy=held,
    )


def _train_and_resume(rank: int, port: int, root: str) -> None:
    """One worker, every strategy in turn in one process group (a spawn per strategy cost
    ~30 s of imports each): train FIRST_STEPS steps and save the state and adapter; then, in
    a fresh model, resume ddp's first state to TOTAL_STEPS and save that state."""
    from fade.adapters import save_adapter
    from fade.erase import EraseResult

    warnings.filterwarnings("ignore")
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD, timeout=TIMEOUT)
    try:
        for strategy in STRATEGIES:  # ddp first: the others resume its checkpoint
            out_dir = Path(root) / strategy
            eraser = _eraser(strategy, rank)
            eraser.setup()
            eraser.pretrain_discriminator(1)
            eraser.config = dataclasses.replace(eraser.config, steps=FIRST_STEPS)
            result = eraser.train(progress=False)
            state = eraser.state_dict(result)
            if rank == 0:
                out_dir.mkdir()
                save_adapter(eraser.backbone, out_dir / "adapter", weights=state["adapter"])
                torch.save({**state, "selected": eraser.selection.selected}, out_dir / "first.pt")
            dist.barrier()

            saved = torch.load(Path(root) / "ddp" / "first.pt", weights_only=False)
            resumed = _eraser(strategy, rank)
            resumed.setup(eraser.selection, saved["adapter"])
            partial: EraseResult = resumed.load_state_dict(saved)
            done = resumed.train(progress=False, result=partial)
            final = resumed.state_dict(done)
            if rank == 0:
                torch.save(final, out_dir / "resumed.pt")
    finally:
        dist.destroy_process_group()


def _round_trip(rank: int, world: int, port: int, checkpoint: str, out: str) -> None:
    """One of `world` workers: load ddp's 2-worker checkpoint under each strategy and read
    the state straight back (ZeRO-3 pads tensors whose size the worker count does not
    divide, and FSDP2 shards them unevenly)."""
    warnings.filterwarnings("ignore")
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=TIMEOUT)
    try:
        saved = torch.load(Path(checkpoint), weights_only=False)
        from fade.saliency import SaliencySelection

        for strategy in STRATEGIES[1:]:
            eraser = _eraser(strategy, rank, world)
            selection = SaliencySelection(selected=saved["selected"], scores={}, sparsity=0.3)
            eraser.setup(selection, saved["adapter"])
            state = eraser.state_dict(eraser.load_state_dict(saved))
            if rank == 0:
                torch.save(state, Path(out) / f"{strategy}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def strategy_runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("strategies")
    mp.spawn(_train_and_resume, args=(free_port(), str(root)), nprocs=WORLD)
    return {strategy: root / strategy for strategy in STRATEGIES}


def _max_difference(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[name] - b[name]).abs().max()) for name in a)


@pytest.mark.parametrize("strategy", STRATEGIES[1:])
def test_each_strategy_trains_exactly_what_ddp_trains(strategy_runs, strategy) -> None:
    ddp = torch.load(strategy_runs["ddp"] / "first.pt", weights_only=False)
    other = torch.load(strategy_runs[strategy] / "first.pt", weights_only=False)
    assert other["selected"] == ddp["selected"]
    assert [log["loss"] for log in other["history"]] == pytest.approx(
        [log["loss"] for log in ddp["history"]], rel=1e-5
    )
    assert _max_difference(other["adapter"], ddp["adapter"]) < 1e-6
    trained = [v for name, v in other["adapter"].items() if "lora_B" in name]  # B starts at 0
    assert trained and max(float(v.abs().max()) for v in trained) > 1e-4
    assert other["optimizer"]["step"] == ddp["optimizer"]["step"] == FIRST_STEPS
    for key in ("exp_avg", "exp_avg_sq"):
        assert _max_difference(other["optimizer"][key], ddp["optimizer"][key]) < 1e-6
    assert other["concepts_left"] == pytest.approx(ddp["concepts_left"], rel=1e-6)
    assert any(abs(left - 1.0) > 1e-4 for left in ddp["concepts_left"])  # it was measured


@pytest.mark.parametrize("strategy", STRATEGIES[1:])
def test_a_ddp_checkpoint_resumes_under_each_strategy(strategy_runs, strategy) -> None:
    ddp = torch.load(strategy_runs["ddp"] / "resumed.pt", weights_only=False)
    other = torch.load(strategy_runs[strategy] / "resumed.pt", weights_only=False)
    assert other["steps_run"] == ddp["steps_run"] == TOTAL_STEPS
    assert other["optimizer"]["step"] == TOTAL_STEPS
    assert _max_difference(other["adapter"], ddp["adapter"]) < 1e-6
    for key in ("exp_avg", "exp_avg_sq"):
        assert _max_difference(other["optimizer"][key], ddp["optimizer"][key]) < 1e-6


def test_a_checkpoint_loads_whole_on_three_workers_under_each_strategy(
    strategy_runs, tmp_path
) -> None:
    args = (3, free_port(), str(strategy_runs["ddp"] / "first.pt"), str(tmp_path))
    mp.spawn(_round_trip, args=args, nprocs=3)
    saved = torch.load(strategy_runs["ddp"] / "first.pt", weights_only=False)
    for strategy in STRATEGIES[1:]:
        state = torch.load(tmp_path / f"{strategy}.pt", weights_only=False)
        assert _max_difference(state["adapter"], saved["adapter"]) == 0.0, strategy
        assert state["optimizer"]["step"] == saved["optimizer"]["step"], strategy
        for key in ("exp_avg", "exp_avg_sq"):
            assert _max_difference(state["optimizer"][key], saved["optimizer"][key]) == 0.0


@pytest.mark.parametrize("strategy", ["fsdp", "zero3"])
def test_a_sharded_adapter_file_is_whole_and_loads_in_diffusers(strategy_runs, strategy) -> None:
    """Saved without gathering, ZeRO-3 and FSDP write empty or partial tensors."""
    from safetensors.torch import load_file

    from fade.adapters import WEIGHT_NAME
    from tests.tiny import tiny_flux_pipeline

    written = load_file(strategy_runs[strategy] / "adapter" / WEIGHT_NAME)
    reference = load_file(strategy_runs["ddp"] / "adapter" / WEIGHT_NAME)
    assert written.keys() == reference.keys() and written
    for name, tensor in written.items():
        assert tensor.numel() > 0 and tensor.shape == reference[name].shape, name
    assert _max_difference(written, reference) < 1e-6
    pipeline = tiny_flux_pipeline()
    pipeline.load_lora_weights(str(strategy_runs[strategy] / "adapter"), adapter_name="fade")
    loaded = {n: p for n, p in pipeline.transformer.named_parameters() if ".fade." in n}
    assert len(loaded) == len(written)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("distributed.offload=optimizer", "not available with distributed.strategy = ddp"),
        (
            "distributed.strategy=zero2 distributed.offload=parameters distributed.use_gpu=true",
            "must be one of none, optimizer",
        ),
        ("distributed.strategy=fsdp distributed.offload=optimizer", "must be one of none$"),
        ("distributed.strategy=zero3 distributed.offload=optimizer", "needs distributed.use_gpu"),
        (
            "distributed.strategy=zero3 distributed.mixed_precision=bf16",
            "needs model.dtype = bfloat16",
        ),
    ],
)
def test_offload_a_strategy_cannot_do_is_one_line(override, message) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(overrides=override.split())


def test_zero3_through_ray_train_writes_a_whole_adapter(ray_session, tmp_path) -> None:
    """The product path: Ray Train's process group, DeepSpeed inside it, the adapter gathered
    from its partitions and written by rank 0, loadable by plain diffusers."""
    from diffusers import FluxPipeline
    from safetensors.torch import load_file

    from fade.adapters import WEIGHT_NAME
    from fade.backbones.loading import resolve_model_path
    from fade.run import erase

    out = tmp_path / "zero3"
    run = erase(
        load_config(
            overrides=[
                "concepts.names=velmora",
                "erase.steps=6",
                "erase.disc_pretrain_steps=2",
                "erase.batch_size=2",
                "concepts.prompts_per_concept=8",
                "distributed.num_workers=2",
                "distributed.strategy=zero3",
                "distributed.max_failures=0",  # an error fails the test, not four retries
                "eval.enabled=false",
                f"output.dir={out}",
            ]
        )
    )
    training = json.loads((run.path / "manifest.json").read_text())["training"]
    assert (training["strategy"], training["workers"], training["steps_run"]) == ("zero3", 2, 6)
    weights = load_file(run.path / "adapter" / WEIGHT_NAME)
    assert weights and all(t.numel() > 0 for t in weights.values())
    assert any(float(t.abs().max()) > 0 for n, t in weights.items() if "lora_B" in n)  # trained
    pipeline = FluxPipeline.from_pretrained(resolve_model_path("toy"), local_files_only=True)
    pipeline.load_lora_weights(str(run.path / "adapter"), adapter_name="fade")
    loaded = {n: p for n, p in pipeline.transformer.named_parameters() if ".fade." in n}
    assert len(loaded) == len(weights)
