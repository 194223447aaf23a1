"""How the adapter's gradients, weights and optimizer state are held across workers.

FADE trains only the LoRA adapter, but on FLUX.1 the frozen 12B backbone is what fills a GPU,
so the strategies differ in what they shard:

- ``ddp``: every worker holds the whole model and a whole AdamW; gradients are averaged with an
  all-reduce after each backward (what DistributedDataParallel does, without its wrapper, so
  the backbone's helper methods keep calling the plain module).
- ``fsdp``: FSDP2 (``fully_shard``) shards every parameter, frozen or not, block by block, and
  gathers a block's weights just for its forward and backward; AdamW then works on the shards.
- ``zero2`` / ``zero3``: DeepSpeed ZeRO. Stage 2 partitions the adapter's gradients and AdamW
  state; stage 3 also partitions every parameter and gathers them in module hooks. Both take
  CPU offload.

The discriminator is a few thousand parameters: it stays replicated under every strategy, its
gradients averaged like ``ddp``'s.

Checkpoints must resume on another worker count (and strategy), so every strategy reads and
writes the same portable form: full tensors by parameter name, for the adapter weights and for
AdamW's moments, plus AdamW's step count. Reading it is collective (shards are gathered): every
rank calls it.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

MOMENTS = ("exp_avg", "exp_avg_sq")


@dataclass(frozen=True)
class StrategyOptions:
    name: str = "ddp"
    #: "none", "optimizer" (ZeRO: AdamW state in host memory) or "parameters" (ZeRO-3: the
    #: weights too).
    offload: str = "none"
    #: bf16 compute with float32 adapter weights and optimizer state.
    bf16: bool = False
    gradient_checkpointing: bool = False
    #: Prompts per worker and step (DeepSpeed's micro batch).
    batch_size: int = 1
    #: This worker's rank on its node (DeepSpeed reads it from LOCAL_RANK).
    local_rank: int = 0


def average_gradients(parameters, all_reduce_mean: Callable[[torch.Tensor], None] | None) -> None:
    """Average gradients over workers (what DDP does), so every replica stays identical; a
    parameter without a gradient on this worker contributes zeros."""
    if all_reduce_mean is None:
        return
    for parameter in parameters:
        if parameter.grad is None:
            parameter.grad = torch.zeros_like(parameter)
        all_reduce_mean(parameter.grad)


def empty_optimizer_state() -> dict:
    return {"step": 0, **{key: {} for key in MOMENTS}}


class AdapterStrategy:
    """Replicated adapter, gradients averaged by `all_reduce_mean` (``ddp``; alone: no-op)."""

    name = "ddp"
    #: Whether every forward is collective (weights gathered from all workers), so that all
    #: workers must run the same forwards in the same order.
    lockstep = False

    def __init__(
        self,
        options: StrategyOptions | None = None,
        all_reduce_mean: Callable[[torch.Tensor], None] | None = None,
    ):
        self.options = options or StrategyOptions()
        self.all_reduce_mean = all_reduce_mean

    def configure(self, denoiser: nn.Module) -> None:
        """Model-wide settings, applied before the saliency pass (itself a forward and backward
        through the whole denoiser)."""
        if self.options.gradient_checkpointing:
            denoiser.enable_gradient_checkpointing()

    def prepare(self, denoiser: nn.Module, named: dict[str, nn.Parameter], lr: float) -> None:
        """Take the model with its adapter attached (and already holding resumed weights) and
        build the optimizer; `named` are the adapter's parameters."""
        self.denoiser = denoiser
        self.named = named
        self.optimizer = torch.optim.AdamW(list(named.values()), lr=lr, weight_decay=0.0)

    def update(self, loss: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        average_gradients(self.named.values(), self.all_reduce_mean)
        self.optimizer.step()

    def full(self, parameter: torch.Tensor) -> torch.Tensor:
        return parameter.detach()

    def adapter_state(self) -> dict[str, torch.Tensor]:
        """Adapter weights by name, whole, on the CPU (collective)."""
        return {name: self.full(p).cpu().clone() for name, p in self.named.items()}

    def restore(self, adapter: dict[str, torch.Tensor]) -> None:
        """After `prepare`: put resumed weights where the optimizer keeps its own copy."""

    def optimizer_state(self) -> dict:
        """AdamW's step and moments by parameter name, whole, on the CPU (collective). A
        parameter that has had no gradient yet has no moments: zeros stand in."""
        states = [self.optimizer.state.get(p) for p in self.named.values()]
        started = [s for s in states if s]
        if not started:
            return empty_optimizer_state()
        moments = {
            key: {
                name: self.full(state[key] if state else torch.zeros_like(p)).cpu().clone()
                for (name, p), state in zip(self.named.items(), states, strict=True)
            }
            for key in MOMENTS
        }
        return {"step": int(float(started[0]["step"])), **moments}

    def load_optimizer_state(self, state: dict) -> None:
        if not state["step"]:
            return
        for name, parameter in self.named.items():
            self.optimizer.state[parameter] = {
                "step": torch.tensor(float(state["step"]), dtype=torch.float32),
                **{key: self.shard_like(parameter, state[key][name]) for key in MOMENTS},
            }

    def shard_like(self, parameter: torch.Tensor, full: torch.Tensor) -> torch.Tensor:
        return full.to(device=parameter.device, dtype=torch.float32).clone()


class FullyShardedStrategy(AdapterStrategy):
    """FSDP2: `fully_shard` on each transformer or U-Net block, then on the whole denoiser."""

    name = "fsdp"
    lockstep = True

    def prepare(self, denoiser: nn.Module, named: dict[str, nn.Parameter], lr: float) -> None:
        import torch.distributed as dist
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        device = next(denoiser.parameters()).device
        mesh = init_device_mesh(device.type, (dist.get_world_size(),))
        settings = {"mesh": mesh}
        if self.options.bf16:
            settings["mp_policy"] = MixedPrecisionPolicy(
                param_dtype=torch.bfloat16, reduce_dtype=torch.float32
            )
        # diffusers' FLUX blocks return views, which FSDP2 warns could lose its pre-backward
        # hook under an in-place op. None follows here: tests/test_strategies.py finds the
        # gradients identical to ddp's.
        warnings.filterwarnings("ignore", message="FSDP2-wrapped module .* returned a view")
        for block in shardable_blocks(denoiser):
            fully_shard(block, **settings)
        fully_shard(denoiser, **settings)
        # fully_shard swaps every parameter for a sharded DTensor: look the adapter up again.
        by_name = dict(denoiser.named_parameters())
        self.denoiser, self.named = denoiser, {name: by_name[name] for name in named}
        self.optimizer = torch.optim.AdamW(list(self.named.values()), lr=lr, weight_decay=0.0)

    def update(self, loss: torch.Tensor) -> None:
        # FSDP2 reduce-scatters (and averages) the gradients during backward.
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()

    def full(self, parameter: torch.Tensor) -> torch.Tensor:
        return parameter.detach().full_tensor()

    def shard_like(self, parameter: torch.Tensor, full: torch.Tensor) -> torch.Tensor:
        from torch.distributed.tensor import distribute_tensor

        local = full.to(device=parameter.device, dtype=torch.float32)
        return distribute_tensor(local, parameter.device_mesh, parameter.placements)


class DeepSpeedStrategy(AdapterStrategy):
    """DeepSpeed ZeRO stage 2 or 3 around the denoiser, with torch's AdamW inside.

    The backbone keeps calling the plain module: ZeRO-3 gathers weights in hooks it puts on
    every submodule, and ZeRO-2 reduces gradients in hooks on the adapter's parameters, so
    only backward and the optimizer step go through the engine."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.stage = 3 if self.options.name == "zero3" else 2
        self.name = self.options.name
        self.lockstep = self.stage == 3

    def config(self, batch_size: int) -> dict:
        zero: dict = {"stage": self.stage}
        if self.options.offload in ("optimizer", "parameters"):
            zero["offload_optimizer"] = {"device": "cpu"}
        if self.options.offload == "parameters":
            zero["offload_param"] = {"device": "cpu"}
        return {
            "train_micro_batch_size_per_gpu": batch_size,
            "gradient_accumulation_steps": 1,
            "zero_optimization": zero,
            "bf16": {"enabled": self.options.bf16},
            # torch's AdamW, not DeepSpeed's: its CPU Adam compiles for half a minute (and
            # needs 6 GB) for an optimizer that here holds a few million values.
            "zero_allow_untested_optimizer": True,
            "zero_force_ds_cpu_optimizer": False,
            "steps_per_print": 1 << 30,
        }

    def prepare(self, denoiser: nn.Module, named: dict[str, nn.Parameter], lr: float) -> None:
        import deepspeed

        # Ray Train (like torchrun) has set up the process group; DeepSpeed joins it but
        # insists on the launcher's LOCAL_RANK.
        os.environ.setdefault("LOCAL_RANK", str(self.options.local_rank))
        params = list(named.values())
        optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
        self.engine, *_ = deepspeed.initialize(
            model=denoiser,
            model_parameters=params,
            optimizer=optimizer,
            config=self.config(self.options.batch_size),
        )
        self.denoiser, self.named = denoiser, named
        # ZeRO's optimizer wraps torch's: the moments live on its flat fp32 partitions.
        self.optimizer = self.engine.optimizer.optimizer

    def restore(self, adapter: dict[str, torch.Tensor]) -> None:
        # The module got the checkpoint's weights before `prepare`, but with bf16 the engine
        # has cast it and built its float32 master copy from the rounded values: put the
        # checkpoint's own float32 weights there (the next step copies them to the module).
        for name, parameter in self.named.items():
            self._set_whole(parameter, adapter[name])

    def _set_whole(self, parameter: nn.Parameter, value: torch.Tensor, key: str | None = None):
        """Write a whole tensor into this worker's part of a parameter's float32 master copy
        (`key` None) or of its AdamW state."""
        from deepspeed.utils import (
            safe_set_full_fp32_param,
            safe_set_full_optimizer_state,
            safe_set_local_fp32_param,
            safe_set_local_optimizer_state,
        )

        value = value.float()
        if self.stage != 3:
            if key is None:
                return safe_set_full_fp32_param(parameter, value)
            return safe_set_full_optimizer_state(parameter, value, key)
        # ZeRO-3 pads each parameter to a multiple of the worker count, and its own whole-
        # tensor setter then reads past the end on the last worker: cut this worker's padded
        # slice here and set it locally.
        import torch.distributed as dist

        if value.numel() != parameter.ds_numel:
            raise ValueError(
                f"checkpoint tensor of {value.numel()} values for {parameter.ds_numel}"
            )
        size = parameter.ds_tensor.numel()
        padded = torch.zeros(size * dist.get_world_size(), dtype=torch.float32)
        padded[: value.numel()] = value.flatten()
        local = padded.narrow(0, size * dist.get_rank(), size)
        if key is None:
            return safe_set_local_fp32_param(parameter, local)
        return safe_set_local_optimizer_state(parameter, local, key)

    def update(self, loss: torch.Tensor) -> None:
        self.engine.backward(loss)
        self.engine.step()

    def adapter_state(self) -> dict[str, torch.Tensor]:
        from deepspeed.utils import safe_get_full_fp32_param

        return {n: safe_get_full_fp32_param(p).cpu().clone() for n, p in self.named.items()}

    def optimizer_state(self) -> dict:
        from deepspeed.utils import safe_get_full_optimizer_state

        flat = [self.optimizer.state.get(p) for p in self._flat_partitions()]
        if not flat or not all(flat):
            return empty_optimizer_state()
        moments = {
            key: {
                n: safe_get_full_optimizer_state(p, key).cpu().clone()
                for n, p in self.named.items()
            }
            for key in MOMENTS
        }
        return {"step": int(float(flat[0]["step"])), **moments}

    def load_optimizer_state(self, state: dict) -> None:
        if not state["step"]:
            return
        # torch's AdamW creates its state at the first step; create it now, then fill it.
        for flat in self._flat_partitions():
            self.optimizer.state[flat] = {
                "step": torch.tensor(float(state["step"]), dtype=torch.float32),
                **{key: torch.zeros_like(flat) for key in MOMENTS},
            }
        if self.stage == 2:
            # ZeRO-2 maps each parameter onto the state at its first step; map it now.
            self.engine.optimizer._lazy_init_hp_params_optimizer_state()
        for name, parameter in self.named.items():
            for key in MOMENTS:
                self._set_whole(parameter, state[key][name], key)

    def _flat_partitions(self) -> list[torch.Tensor]:
        """This worker's flat float32 partitions, on which ZeRO runs torch's AdamW (the
        attribute differs by stage; stage 3 takes them out of the param groups between
        steps)."""
        zero = self.engine.optimizer
        if self.stage == 3:
            return list(zero.fp32_partitioned_groups_flat)
        return list(zero.single_partition_of_fp32_groups)


def shardable_blocks(denoiser: nn.Module) -> list[nn.Module]:
    """The repeated blocks FSDP shards one by one: FLUX's double and single stream blocks,
    the U-Net's down, mid and up blocks."""
    blocks: list[nn.Module] = []
    lists = ("transformer_blocks", "single_transformer_blocks", "down_blocks", "up_blocks")
    for attribute in lists:
        blocks.extend(getattr(denoiser, attribute, None) or [])
    if getattr(denoiser, "mid_block", None) is not None:
        blocks.append(denoiser.mid_block)
    return blocks


def make_strategy(
    options: StrategyOptions, all_reduce_mean: Callable[[torch.Tensor], None] | None
) -> AdapterStrategy:
    if options.name == "ddp":
        return AdapterStrategy(options, all_reduce_mean)
    if options.name == "fsdp":
        return FullyShardedStrategy(options, all_reduce_mean)
    if options.name in ("zero2", "zero3"):
        return DeepSpeedStrategy(options, all_reduce_mean)
    raise ValueError(f"unknown strategy {options.name}")
