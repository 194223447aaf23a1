"""One interface over text-to-image denoisers: the time, noise and sampling math FADE needs.

Why: the erasure objective (DESIGN.md section 2) is written once, against this interface, and
works for FLUX (flow matching, velocity prediction) and Stable Diffusion (epsilon or v
prediction) alike. Time is a single convention for both families: `sigma` in [0, 1] is the
fraction of the trajectory still to go, 1 = pure noise, 0 = clean, so the trajectory cutoff
`t0` means the same thing on every model.

Sampling reuses the pipeline's own scheduler and latent preparation, so a full sample from
sigma=1 to 0 is the diffusers pipeline's output for the same seed and steps, and a partial one
(for the erasure's "a few steps without grad, then one with grad") is a slice of it.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import torch
from diffusers import DiffusionPipeline
from torch import Tensor, nn


@dataclass
class Conditioning:
    """Encoded prompts: per-token embeddings and, for FLUX, the pooled CLIP vector."""

    embeds: Tensor
    pooled: Tensor | None = None

    def __len__(self) -> int:
        return self.embeds.shape[0]

    def __getitem__(self, index: slice | Tensor | list[int]) -> Conditioning:
        pooled = None if self.pooled is None else self.pooled[index]
        return Conditioning(self.embeds[index], pooled)

    @staticmethod
    def cat(parts: list[Conditioning]) -> Conditioning:
        pooled = None if parts[0].pooled is None else torch.cat([p.pooled for p in parts])
        return Conditioning(torch.cat([p.embeds for p in parts]), pooled)


@dataclass
class SampleResult:
    """Latents after a (partial) sample and the sigma they are at."""

    latents: Tensor
    sigma: float


class Backbone(ABC):
    """A loaded pipeline plus the math to noise, denoise and sample in its latent space.

    `denoiser` is the module that erasure adapters attach to (FLUX transformer, SD UNet); the
    text encoders and VAE stay frozen. Prompt encodings are cached: erasure re-uses a few
    hundred prompts thousands of times.
    """

    family: ClassVar[str]
    #: Prompt encodings kept before the cache starts over (a server sees unbounded prompts).
    max_cached_prompts: int = 100_000

    def __init__(
        self, pipeline: DiffusionPipeline, model_id: str = "", revision: str | None = None
    ):
        self.pipeline = pipeline
        self.model_id = model_id
        self.revision = revision
        self._prompt_cache: dict[str, Conditioning] = {}
        for component in pipeline.components.values():
            if isinstance(component, nn.Module):
                component.eval()

    # --- properties --------------------------------------------------------------------------

    @property
    @abstractmethod
    def denoiser(self) -> nn.Module:
        """The module erasure trains adapters on."""

    @property
    def device(self) -> torch.device:
        return next(self.denoiser.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.denoiser.parameters()).dtype

    @property
    def default_size(self) -> int:
        """Default image side in pixels (the denoiser's training resolution)."""
        return int(self.pipeline.default_sample_size * self.pipeline.vae_scale_factor)

    # --- prompts -----------------------------------------------------------------------------

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> Conditioning:
        """Encode prompts (cached per prompt string); text encoders never get gradients."""
        missing = list(dict.fromkeys(p for p in prompts if p not in self._prompt_cache))
        if missing:
            if len(self._prompt_cache) + len(missing) > self.max_cached_prompts:
                self._prompt_cache = {
                    p: self._prompt_cache[p] for p in prompts if p in self._prompt_cache
                }
            fresh = self._encode_uncached(missing)
            for index, prompt in enumerate(missing):
                self._prompt_cache[prompt] = fresh[index : index + 1]
        return Conditioning.cat([self._prompt_cache[p] for p in prompts])

    def clear_prompt_cache(self) -> None:
        self._prompt_cache.clear()

    @abstractmethod
    def _encode_uncached(self, prompts: list[str]) -> Conditioning: ...

    # --- noise and time math -----------------------------------------------------------------

    @abstractmethod
    def initial_noise(
        self, batch_size: int, height: int, width: int, generator: torch.Generator | None = None
    ) -> Tensor:
        """Pure noise in the denoiser's latent layout, drawn exactly as the pipeline draws it."""

    @abstractmethod
    def add_noise(self, x0: Tensor, noise: Tensor, sigma: Tensor) -> Tensor:
        """z_sigma from clean latents x0 and noise, with one sigma per batch row."""

    @abstractmethod
    def x0_from_prediction(self, z: Tensor, sigma: Tensor, prediction: Tensor) -> Tensor:
        """The clean latent implied by a denoiser output at z_sigma (x̂0)."""

    @abstractmethod
    def target_for(self, x0: Tensor, noise: Tensor, sigma: Tensor) -> Tensor:
        """What a perfect denoiser predicts at z_sigma (velocity, epsilon or v)."""

    @abstractmethod
    def predict(
        self,
        z: Tensor,
        sigma: Tensor,
        cond: Conditioning,
        guidance_scale: float = 1.0,
        size: tuple[int, int] | None = None,
    ) -> Tensor:
        """Raw denoiser output for latents z at per-row sigma. Gradients flow if enabled.

        `size` is the image (height, width) in pixels; needed only where the latent layout does
        not say it (FLUX's packed tokens of a non-square image).
        """

    @abstractmethod
    def schedule(self, num_steps: int, height: int, width: int) -> tuple[object, Tensor, Tensor]:
        """(a private scheduler copy set to `num_steps`, its timesteps, their sigmas in [0, 1])."""

    # --- sampling ----------------------------------------------------------------------------

    def sample(
        self,
        latents: Tensor,
        cond: Conditioning,
        num_steps: int,
        guidance_scale: float = 1.0,
        sigma_start: float = 1.0,
        sigma_end: float = 0.0,
        height: int | None = None,
        width: int | None = None,
        grad: bool = False,
    ) -> SampleResult:
        """Run the pipeline's schedule over the steps whose sigma lies in (sigma_end, sigma_start].

        `latents` must be at `sigma_start` (pure noise when it is 1). The scheduler is a copy,
        so the pipeline's own state is never touched.
        """
        if not 0.0 <= sigma_end < sigma_start <= 1.0:
            raise ValueError(
                f"need 0 <= sigma_end < sigma_start <= 1, got {sigma_end}, {sigma_start}"
            )
        height = height or self.default_size
        width = width or self.default_size
        scheduler, timesteps, sigmas = self.schedule(num_steps, height, width)
        eps = 1e-6
        active = [
            i for i, s in enumerate(sigmas.tolist()) if sigma_end + eps < s <= sigma_start + eps
        ]
        reached = sigma_start
        if not active:
            return SampleResult(latents, reached)
        if hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(active[0])
        with torch.set_grad_enabled(grad):
            for i in active:
                sigma = sigmas[i].expand(latents.shape[0]).to(latents.device)
                prediction = self.predict(latents, sigma, cond, guidance_scale, (height, width))
                latents = scheduler.step(prediction, timesteps[i], latents, return_dict=False)[0]
                reached = float(sigmas[i + 1]) if i + 1 < len(sigmas) else 0.0
        return SampleResult(latents, reached)

    def trajectory_state(
        self,
        noise: Tensor,
        cond: Conditioning,
        num_steps: int,
        generator: torch.Generator,
        height: int | None = None,
        width: int | None = None,
        point_generator: torch.Generator | None = None,
    ) -> SampleResult:
        """The model's own state at a random point of a `num_steps` schedule, without grad.

        The point is one of the schedule's sigmas, each equally likely, pure noise included:
        a concept's layout is decided in the first steps, so the erasure must train there,
        and a state at sigma 0 (where x̂0 is the input itself) teaches nothing. The point is
        drawn from `point_generator` (default: `generator`): sharded models, whose every
        forward is collective, draw it from one generator shared by all workers.
        """
        height, width = height or self.default_size, width or self.default_size
        _, _, sigmas = self.schedule(num_steps, height, width)
        index = int(torch.randint(num_steps, (1,), generator=point_generator or generator))
        if index == 0:
            return SampleResult(noise, float(sigmas[0]))
        # `sample` runs the steps whose sigma lies above sigma_end: exactly `index` of them.
        sigma_end = float(sigmas[index])
        return self.sample(noise, cond, num_steps, sigma_end=sigma_end, height=height, width=width)

    @staticmethod
    def _scheduler_copy(scheduler: object) -> object:
        return copy.deepcopy(scheduler)

    def to_spatial(self, latents: Tensor, height: int, width: int) -> Tensor:
        """Latents as (B, C, H', W') maps (what a discriminator on x̂0 looks at)."""
        return latents

    # --- pixels ------------------------------------------------------------------------------

    @abstractmethod
    def decode(self, latents: Tensor, height: int, width: int) -> Tensor:
        """Images in [0, 1], shape (B, 3, H, W), exactly as the pipeline's `output_type="pt"`."""
