"""The image engine a Serve replica wraps: one base pipeline, the policy fused in, adapters on top.

Why a Ray-free class: everything a replica computes (which adapters are live, the seeds, the
pixels) is tested here in one process, and the Serve layer only adds routing and batching.

Safety model: policy adapters are fused into the base weights and their LoRA layers unloaded,
so no request parameter, adapter choice or scale can switch them off. A request adapter is a
LoRA on top of that model, always at the strength it was trained at (clients cannot set a
scale: a negative one would undo an erasure).
"""

from __future__ import annotations

import io
import logging
import threading
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import numpy as np
import torch
from peft.tuners.lora import LoraLayer
from PIL import Image

from fade.adapters import fuse_into_weights, load_adapter
from fade.backbones import Backbone
from fade.eval.sampling import noise_for
from fade.serve.registry import NO_ADAPTER, AdapterEntry

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImageRequest:
    """One validated request: `count` images, image i from noise seed `seed + i`."""

    prompt: str
    adapter: str = NO_ADAPTER
    seed: int = 0
    steps: int = 20
    size: int = 32
    count: int = 1

    def batch_key(self) -> tuple[int, int]:
        """Requests with one key share a denoiser call, whatever their adapters."""
        return (self.steps, self.size)


def to_png(image: torch.Tensor) -> bytes:
    """An image in [0, 1] (3, H, W) as PNG bytes, rounded as diffusers' `numpy_to_pil` does."""
    array = (image.permute(1, 2, 0).cpu().float().numpy() * 255).round().astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


class ImageEngine:
    """A backbone with the policy fused in and request adapters loaded on demand.

    Thread-safe: Serve calls `load` from its event loop and `generate` from worker threads, and
    both change which LoRA layers the denoiser runs, so one lock covers them.
    """

    def __init__(
        self,
        backbone: Backbone,
        entries: dict[str, AdapterEntry],
        policy: list[AdapterEntry],
        guidance_scale: float = 3.5,
    ):
        self.backbone = backbone
        self.entries = entries
        self.policy = [entry.id for entry in policy]
        self.guidance_scale = guidance_scale
        backbone.max_cached_prompts = 1024
        self._lock = threading.Lock()
        self._loaded: set[str] = set()
        self._released: set[str] = set()
        # What the LoRA layers do now ("off", "mixed" or one adapter id; None: unknown), so a
        # run of batches in one mode switches nothing; and the mixed path's stacked weights,
        # built once per set of loaded adapters.
        self._mode: str | None = None
        self._stacked: tuple[tuple[str, ...], list] = ((), [])
        self._fuse_policy(policy)

    @property
    def size_multiple(self) -> int:
        """Image sides must be a multiple of this (FLUX packs 2x2 latent patches)."""
        factor = int(self.backbone.pipeline.vae_scale_factor)
        return factor * 2 if self.backbone.family == "flux" else factor

    def _fuse_policy(self, policy: list[AdapterEntry]) -> None:
        if not policy:
            return
        names = [f"policy-{entry.id}" for entry in policy]
        for entry, name in zip(policy, names, strict=True):
            load_adapter(self.backbone, entry.weights_dir, adapter_name=name)
        # Nothing is left that disable_lora, set_adapters or a scale could turn off.
        fuse_into_weights(self.backbone, names)
        log.info("policy fused into the base weights: %s", ", ".join(self.policy))

    def load(self, adapter_id: str) -> None:
        """Make an adapter ready (idempotent); `none` is the policy-only model."""
        with self._lock:
            self._load_locked(adapter_id)

    def release(self, adapter_id: str) -> None:
        """Forget an adapter at the next generation (Serve evicted it; deleting it now could
        pull it from under a running batch)."""
        self._released.add(adapter_id)

    def _load_locked(self, adapter_id: str) -> None:
        self._released.discard(adapter_id)
        if adapter_id == NO_ADAPTER or adapter_id in self._loaded:
            return
        load_adapter(self.backbone, self.entries[adapter_id].weights_dir, adapter_name=adapter_id)
        self._loaded.add(adapter_id)
        self._mode = None  # loading makes the new adapter the active one
        self._stacked = ((), [])

    def _prepare(self, adapter_ids: set[str]) -> None:
        """Drop evicted adapters, load the batch's, and set the LoRA layers for it."""
        pipeline = self.backbone.pipeline
        stale = (self._released - adapter_ids) & self._loaded
        if stale:
            pipeline.delete_adapters(sorted(stale))
            self._loaded -= stale
            self._mode, self._stacked = None, ((), [])
        self._released.clear()
        for adapter_id in adapter_ids:
            self._load_locked(adapter_id)
        if not self._loaded:
            return
        mode = "off" if adapter_ids == {NO_ADAPTER} else "mixed"
        if len(adapter_ids) == 1 and mode != "off":
            mode = next(iter(adapter_ids))
        if mode == self._mode:
            return
        if mode in ("off", "mixed"):  # mixed rows get their LoRA from _per_row_adapters
            pipeline.disable_lora()
        else:
            pipeline.enable_lora()
            pipeline.set_adapters([mode], adapter_weights=[1.0])
        self._mode = mode

    def _stacked_layers(self) -> tuple[tuple[str, ...], list]:
        """(adapter order, [(layer, (A, B))]) for the loaded adapters (see _stacked_lora)."""
        order = tuple(sorted(self._loaded))
        if self._stacked[0] != order:
            layers = []
            for module in self.backbone.denoiser.modules():
                if isinstance(module, LoraLayer) and hasattr(module, "in_features"):
                    stacked = _stacked_lora(module, list(order))
                    if stacked is not None:
                        layers.append((module, stacked))
            self._stacked = (order, layers)
        return self._stacked

    @contextmanager
    def _per_row_adapters(self, rows: list[str]):
        """Each image of the batch through its own adapter, in one denoiser call.

        peft's own mixed batches (`adapter_names`) run every adapter's LoRA on its rows one
        after another; on a small model those extra operations cost more than the batch saves.
        Here the LoRA layers are off (`_prepare`) and each one's output gets x @ A_row^T @
        B_row^T from its adapters stacked (zeros for "none" and for adapters without that
        module, ranks padded): two batched products per layer however many adapters share it.
        """
        order, layers = self._stacked_layers()
        index = torch.tensor([order.index(r) + 1 if r in order else 0 for r in rows])
        hooks = [
            module.register_forward_hook(_add_rows(stacked, index)) for module, stacked in layers
        ]
        try:
            yield
        finally:
            for hook in hooks:
                hook.remove()

    @torch.no_grad()
    def generate(self, requests: list[ImageRequest]) -> list[list[bytes]]:
        """PNG images for requests that share a step count and size, in one denoiser batch;
        requests for different adapters share it too (each row through its own adapter)."""
        keys = {request.batch_key() for request in requests}
        if len(keys) != 1:
            raise ValueError(f"one batch needs one step count and size, got {keys}")
        steps, size = keys.pop()
        prompts = [r.prompt for r in requests for _ in range(r.count)]
        seeds = [r.seed + i for r in requests for i in range(r.count)]
        rows = [r.adapter for r in requests for _ in range(r.count)]
        with self._lock:
            self._prepare(set(rows))
            mixed = len(set(rows)) > 1 and bool(self._loaded)
            backbone = self.backbone
            with self._per_row_adapters(rows) if mixed else nullcontext():
                noise = noise_for(backbone, seeds, size, size)
                result = backbone.sample(
                    noise,
                    backbone.encode(prompts),
                    steps,
                    self.guidance_scale,
                    height=size,
                    width=size,
                )
            images = backbone.decode(result.latents, size, size)
        pngs = [to_png(image) for image in images]
        out, start = [], 0
        for request in requests:
            out.append(pngs[start : start + request.count])
            start += request.count
        return out


def _stacked_lora(layer: LoraLayer, order: list[str]) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(A, B) of `order`'s adapters on one layer, stacked after a zero entry for "none":
    A (K+1, r, in), B (K+1, out, r) with the LoRA scale folded in; None if none has it."""
    present = [name for name in order if name in layer.lora_A]
    if not present:
        return None
    rank = max(layer.lora_A[name].weight.shape[0] for name in present)
    weight = layer.lora_A[present[0]].weight
    a = weight.new_zeros(len(order) + 1, rank, layer.in_features)
    b = weight.new_zeros(len(order) + 1, layer.out_features, rank)
    for slot, name in enumerate(order, start=1):
        if name in layer.lora_A:
            r = layer.lora_A[name].weight.shape[0]
            a[slot, :r] = layer.lora_A[name].weight
            b[slot, :, :r] = layer.lora_B[name].weight * layer.scaling[name]
    return a, b


def _add_rows(stacked: tuple[torch.Tensor, torch.Tensor], index: torch.Tensor):
    a, b = stacked

    def hook(_module, args, output):
        x = args[0]
        rows = index if len(index) == len(x) else None
        if rows is None:
            raise ValueError(f"batch of {len(x)} rows for {len(index)} adapter rows")
        a_rows, b_rows = a[rows], b[rows]
        flat = x.reshape(len(x), -1, x.shape[-1])
        delta = torch.bmm(torch.bmm(flat, a_rows.transpose(1, 2)), b_rows.transpose(1, 2))
        return output + delta.reshape(*output.shape).to(output.dtype)

    return hook
