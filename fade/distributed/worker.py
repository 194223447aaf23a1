"""What each Ray Train worker runs: load the model, erase, and (rank 0) save and report.

The story of the loop, in order: join the process group Ray Train set up, load the backbone on
this worker's device, resolve the plan, then either locate the concept (saliency averaged over
workers), attach the adapter, hand the model to the strategy (ddp, FSDP2, ZeRO) and pre-train
the discriminator, or, when Ray Train hands over a
checkpoint (a worker was replaced, or the run was started again under the same name), restore
all of that from it. Then train with gradients averaged over workers, reporting a checkpoint
every `distributed.checkpoint_every` steps, and finally rank 0 writes the adapter, the state
and the training log into the last checkpoint.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist

from fade.adapters import save_adapter
from fade.backbones import load_backbone
from fade.concepts import PromptSets
from fade.config import FadeConfig, config_from_dict
from fade.distributed.checkpoints import (
    SELECTION_FILE,
    fingerprint,
    read_checkpoint,
    write_checkpoint,
)
from fade.distributed.strategies import StrategyOptions, make_strategy
from fade.erase import Eraser, EraseResult
from fade.plan import make_plan

TRAINING_LOG = "training.json"
__all__ = ["SELECTION_FILE", "TRAINING_LOG", "erase_on_worker"]


def all_reduce_mean(tensor: torch.Tensor) -> None:
    """In-place mean over the process group (gloo on CPU, NCCL on GPU)."""
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    tensor.div_(dist.get_world_size())


def _report(rank: int, metrics: dict, write=None) -> None:
    """Every worker reports (Ray Train waits for all); only rank 0 brings a checkpoint."""
    import ray.train

    with tempfile.TemporaryDirectory() as staging:
        checkpoint = None
        if rank == 0 and write is not None:
            write(Path(staging))
            checkpoint = ray.train.Checkpoint.from_directory(staging)
        ray.train.report(metrics, checkpoint=checkpoint)


def _distinct_nodes(world: int) -> int:
    """How many Ray nodes the workers ran on (recorded in the manifest)."""
    import ray

    node = ray.get_runtime_context().get_node_id()
    if world == 1:
        return 1
    nodes: list = [None] * world
    dist.all_gather_object(nodes, node)
    return len(set(nodes))


def _prompt_shard(prompts: PromptSets) -> list[int] | None:
    """This worker's training rows from the trainer's prompt dataset (None when the trainer
    was given none: the Eraser then picks the same rows itself)."""
    import ray.train

    from fade.distributed.prompts import PROMPTS, shard_rows

    try:
        shard = ray.train.get_dataset_shard(PROMPTS)
    except KeyError:
        return None
    return None if shard is None else shard_rows(shard, prompts)


def erase_on_worker(loop_config: dict) -> None:
    """`train_loop_per_worker` of the TorchTrainer; `loop_config["fade"]` is the FadeConfig dict."""
    import ray.train

    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    cfg = config_from_dict(loop_config["fade"])
    started = time.time()
    device = "cuda" if cfg.distributed.use_gpu else "cpu"
    backbone = load_backbone(
        cfg.model.path,
        cfg.model.family,
        cfg.model.revision,
        cfg.model.dtype,
        device,
        cfg.model.local_files_only,
    )
    plan = make_plan(cfg)
    cfg = plan.config
    reduce = all_reduce_mean if world > 1 else None
    shard = _prompt_shard(plan.prompts)
    eraser = Eraser(
        backbone,
        plan.prompts,
        cfg.erase,
        size=(cfg.eval.height, cfg.eval.width),
        seed=cfg.seed,
        rank=rank,
        world_size=world,
        all_reduce_mean=reduce,
        strategy=make_strategy(strategy_options(cfg, context.get_local_rank()), reduce),
        shard=shard,
    )
    result, pretrain_accuracy, resumed_from = None, None, None
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            selection, state, progress = read_checkpoint(Path(directory))
        if progress["fingerprint"] != fingerprint(cfg):
            raise ValueError(
                f"checkpoint {checkpoint.path} comes from an erasure with other settings"
            )
        eraser.setup(selection, state["adapter"])
        result = eraser.load_state_dict(state)
        pretrain_accuracy, resumed_from = state.get("pretrain_heldout_accuracy"), result.steps_run
        if rank == 0:
            print(f"resuming from step {resumed_from} (checkpoint {checkpoint.path})", flush=True)
    else:
        selection = eraser.setup()
        pretrain_accuracy = eraser.pretrain_discriminator()

    def state_of(result: EraseResult) -> dict:
        # Collective (sharded strategies gather): every rank builds it, rank 0 writes it.
        return {**eraser.state_dict(result), "pretrain_heldout_accuracy": pretrain_accuracy}

    def save_progress(result: EraseResult) -> None:
        state = state_of(result)
        _report(
            rank,
            {"steps_run": result.steps_run, "final": False},
            lambda d: write_checkpoint(d, state, selection, cfg),
        )

    training_started, steps_before = time.time(), result.steps_run if result else 0
    result = eraser.train(
        progress=rank == 0,
        result=result,
        checkpoint=save_progress,
        checkpoint_every=cfg.distributed.checkpoint_every,
    )
    loop_seconds = max(time.time() - training_started, 1e-9)
    summary = {
        "steps_run": result.steps_run,
        "nodes": _distinct_nodes(world),
        "stopped_early": result.stopped_early,
        "pretrain_heldout_accuracy": pretrain_accuracy,
        "final_heldout_accuracy": eraser.heldout_accuracy(),
        "train_seconds": round(time.time() - started, 1),
        # The loop alone (no model loading, ranking or D pre-training): what strategies and
        # worker counts are compared on (jobs/benchmark.py scaling).
        "steps_per_second": round((result.steps_run - steps_before) / loop_seconds, 3),
        "strategy": cfg.distributed.strategy,
        "workers": world,
        "resumed_from_step": resumed_from,
        # What is left of each concept, as `erase.balance` weighs it (1: untouched).
        "concepts_left": {
            name: round(left, 3)
            for name, left in zip(plan.prompts.names, eraser.left.tolist(), strict=True)
        },
        "final": True,
    }

    state = state_of(result)

    def write_final(directory: Path) -> None:
        write_checkpoint(directory, state, selection, cfg)
        # Whole weights, gathered by the strategy (a sharded module holds only its shard).
        save_adapter(backbone, directory / "adapter", weights=state["adapter"])
        history = [vars(log) for log in result.history]
        (directory / TRAINING_LOG).write_text(
            json.dumps({"summary": summary, "history": history}, indent=2)
        )

    _report(rank, summary, write_final)


def strategy_options(cfg: FadeConfig, local_rank: int = 0) -> StrategyOptions:
    d = cfg.distributed
    on_gpu_in_bf16 = d.use_gpu and cfg.model.dtype == "bfloat16"
    bf16 = d.mixed_precision == "bf16" or (d.mixed_precision == "auto" and on_gpu_in_bf16)
    return StrategyOptions(
        name=d.strategy,
        offload=d.offload,
        bf16=bf16,
        gradient_checkpointing=d.gradient_checkpointing,
        batch_size=cfg.erase.batch_size,
        local_rank=local_rank,
    )
