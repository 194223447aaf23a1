"""Launch the erasure as a Ray Train TorchTrainer and bring its checkpoint back.

Attaches to the cluster when run under `ray job submit` (RAY_ADDRESS is set) or when
`distributed.address` is given; otherwise starts a local Ray sized to this machine and stops it
afterwards. The run name is fixed by the caller, so a rerun with the same name and storage
resumes rather than starts over.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from fade.config import FadeConfig, config_to_dict
from fade.distributed.checkpoints import fingerprint, latest_progress
from fade.distributed.ray_logs import quiet_state_api_warnings
from fade.distributed.worker import erase_on_worker
from fade.errors import FadeError, Interrupted
from fade.plan import make_plan


@dataclass
class TrainOutcome:
    checkpoint_dir: Path  # a local copy of rank 0's checkpoint (adapter, saliency, log)
    metrics: dict


def start_ray(cfg: FadeConfig, extra_cpus: float = 0) -> bool:
    """Connect or start Ray; returns True when this call started it (and must stop it).

    A local Ray gets enough CPUs for the erasure's workers plus `extra_cpus` (a server's
    replicas), and at least this machine's count."""
    import ray

    if ray.is_initialized():
        return False
    address = cfg.distributed.address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=True)
        return False
    needed = cfg.distributed.num_workers * cfg.distributed.cpus_per_worker + 1 + extra_cpus
    ray.init(
        address="local",
        num_cpus=max(math.ceil(needed), os.cpu_count() or 1),
        include_dashboard=False,
        log_to_driver=True,
        runtime_env={"worker_process_setup_hook": quiet_state_api_warnings},  # ray_logs.py
    )
    return True


def storage_location(path: str | Path) -> str:
    """A URI as given; a local path made absolute (Ray reads a relative one as a URI)."""
    text = str(path)
    return text if "://" in text else str(Path(text).expanduser().resolve())


def check_resumable(storage_path: str, name: str, cfg: FadeConfig) -> tuple[str, int] | None:
    """The checkpoint and step a run will resume from (None: it starts afresh); refuses
    another erasure's checkpoints before any worker loads a model."""
    found = latest_progress(storage_path, name)
    if found is None:
        return None
    folder, progress = found
    if progress["fingerprint"] != fingerprint(cfg):
        raise FadeError(
            f"{storage_path.rstrip('/')}/{name} holds checkpoints of an erasure with other "
            "settings (or of an older FADE's checkpoint format): rerun with the same settings "
            "to resume it, or delete that folder (or choose another distributed.run_name) to "
            "start over"
        )
    return folder, progress["steps_run"]


def run_erasure(cfg: FadeConfig, storage: Path) -> TrainOutcome:
    """Run the TorchTrainer; raises FadeError with the workers' error on failure. Checkpoints
    go to `distributed.storage_path` (else `storage`) under `distributed.run_name`."""
    import ray
    import ray.data
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    name = cfg.distributed.run_name or "fade-erase"
    storage_path = storage_location(cfg.distributed.storage_path or storage)
    local = not (cfg.distributed.address or os.environ.get("RAY_ADDRESS") or ray.is_initialized())
    d = cfg.distributed
    if local and d.placement_strategy == "STRICT_SPREAD" and d.num_workers > 1:
        raise FadeError(
            "distributed.placement_strategy=STRICT_SPREAD puts each worker on its own node, "
            "and a local Ray has one: use it on a cluster, or PACK/SPREAD here"
        )
    resume = check_resumable(storage_path, name, cfg)
    if resume is not None:
        print(f"resuming {name} from step {resume[1]} ({resume[0]})", flush=True)
    started_here = start_ray(cfg)
    # A few hundred prompt rows read once: Ray Data's progress bars would only clutter the log.
    # The trainer hands the workers a copy of this context; the setting is restored below.
    data_context = ray.data.DataContext.get_current()
    progress_bars, data_context.enable_progress_bars = data_context.enable_progress_bars, False
    try:
        from fade.distributed.prompts import PROMPTS, PromptShards, prompt_dataset

        prompts, shard_sizes = prompt_dataset(
            make_plan(cfg).prompts, cfg.seed, cfg.distributed.num_workers
        )
        trainer = TorchTrainer(
            erase_on_worker,
            train_loop_config={"fade": config_to_dict(cfg)},
            datasets={PROMPTS: prompts},
            dataset_config=PromptShards(shard_sizes),
            scaling_config=ScalingConfig(
                num_workers=cfg.distributed.num_workers,
                use_gpu=cfg.distributed.use_gpu,
                resources_per_worker={"CPU": cfg.distributed.cpus_per_worker},
                placement_strategy=cfg.distributed.placement_strategy,
            ),
            run_config=RunConfig(
                name=name,
                storage_path=storage_path,
                failure_config=FailureConfig(max_failures=cfg.distributed.max_failures),
                checkpoint_config=CheckpointConfig(num_to_keep=2),
            ),
        )
        try:
            result = trainer.fit()
        except ray.train.TrainingFailedError as error:
            raise FadeError(f"erasure failed on a worker: {error}") from error
        except (KeyboardInterrupt, SystemExit) as stop:
            # Ray Train's own Ctrl-C handler aborts the run, then calls sys.exit.
            raise Interrupted("the erasure was stopped") from stop
        if result.error is not None:
            raise FadeError(f"erasure failed on a worker: {result.error}")
        if result.checkpoint is None:
            raise FadeError("erasure finished without a checkpoint")
        local = Path(tempfile.mkdtemp(prefix="fade-checkpoint-"))
        with result.checkpoint.as_directory() as directory:
            shutil.copytree(directory, local, dirs_exist_ok=True)
        return TrainOutcome(local, dict(result.metrics or {}))
    finally:
        data_context.enable_progress_bars = progress_bars
        if started_here:
            ray.shutdown()
