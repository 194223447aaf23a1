"""What each Ray Train worker runs: load the model, erase, and (rank 0) save and report.

The story of the loop, in order: join the process group Ray Train set up, load the backbone on
this worker's device, resolve the plan, locate the concept (saliency averaged over workers),
attach the adapter, pre-train the discriminator, train with gradients averaged over workers,
then rank 0 writes the adapter and the training log into a checkpoint that it reports.
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
from fade.config import config_from_dict
from fade.erase import Eraser
from fade.plan import make_plan

TRAINING_LOG = "training.json"
SELECTION_FILE = "saliency.json"


def all_reduce_mean(tensor: torch.Tensor) -> None:
    """In-place mean over the process group (gloo on CPU, NCCL on GPU)."""
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    tensor.div_(dist.get_world_size())


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
    eraser = Eraser(
        backbone,
        plan.prompts,
        cfg.erase,
        size=(cfg.eval.height, cfg.eval.width),
        seed=cfg.seed,
        rank=rank,
        world_size=world,
        all_reduce_mean=all_reduce_mean if world > 1 else None,
    )
    selection = eraser.setup()
    pretrain_accuracy = eraser.pretrain_discriminator()
    result = eraser.train(progress=rank == 0)
    summary = {
        "steps_run": result.steps_run,
        "stopped_early": result.stopped_early,
        "pretrain_heldout_accuracy": pretrain_accuracy,
        "final_heldout_accuracy": eraser.heldout_accuracy(),
        "train_seconds": round(time.time() - started, 1),
        "workers": world,
    }
    with tempfile.TemporaryDirectory() as staging:
        checkpoint = None
        if rank == 0:
            directory = Path(staging)
            save_adapter(backbone, directory / "adapter")
            (directory / SELECTION_FILE).write_text(json.dumps(selection.to_dict(), indent=2))
            history = [vars(log) for log in result.history]
            (directory / TRAINING_LOG).write_text(
                json.dumps({"summary": summary, "history": history}, indent=2)
            )
            checkpoint = ray.train.Checkpoint.from_directory(staging)
        ray.train.report(summary, checkpoint=checkpoint)
