"""FLUX.1 backbone: rectified flow, velocity prediction, packed 2x2 latents, guidance embedding.

z_sigma = (1 - sigma) x0 + sigma eps; the transformer predicts v = eps - x0, so
x̂0 = z_sigma - sigma v. The pipeline's own helpers (prompt encoding, latent packing and ids,
the shifted sigma schedule) are called rather than re-implemented, so outputs match
`FluxPipeline.__call__` for the same seed.
"""

from __future__ import annotations

import numpy as np
import torch
from diffusers import FluxPipeline
from diffusers.pipelines.flux.pipeline_flux import calculate_shift, retrieve_timesteps
from torch import Tensor, nn

from fade.backbones.base import Backbone, Conditioning


def _per_row(sigma: Tensor, like: Tensor) -> Tensor:
    """Broadcast a (B,) sigma over the remaining dims of `like`."""
    return sigma.to(like.dtype).view(-1, *([1] * (like.dim() - 1)))


class FluxBackbone(Backbone):
    family = "flux"
    pipeline: FluxPipeline

    @property
    def denoiser(self) -> nn.Module:
        return self.pipeline.transformer

    @property
    def max_sequence_length(self) -> int:
        """T5 tokens per prompt: 512 on FLUX.1, the tokenizer's own limit on smaller models."""
        return int(min(512, self.pipeline.tokenizer_2.model_max_length))

    def _encode_uncached(self, prompts: list[str]) -> Conditioning:
        embeds, pooled, _text_ids = self.pipeline.encode_prompt(
            prompt=prompts,
            prompt_2=None,
            device=self.device,
            max_sequence_length=self.max_sequence_length,
        )
        return Conditioning(embeds, pooled)

    def _latent_grid(self, height: int, width: int) -> tuple[int, int]:
        """Unpacked latent height and width for an image size (as the pipeline rounds it)."""
        factor = self.pipeline.vae_scale_factor * 2
        if height % factor or width % factor:
            raise ValueError(
                f"height and width must be multiples of {factor}, got {height}x{width}"
            )
        return 2 * (height // factor), 2 * (width // factor)

    def initial_noise(
        self, batch_size: int, height: int, width: int, generator: torch.Generator | None = None
    ) -> Tensor:
        self._latent_grid(height, width)
        latents, _ids = self.pipeline.prepare_latents(
            batch_size,
            self.denoiser.config.in_channels // 4,
            height,
            width,
            self.dtype,
            self.device,
            generator,
        )
        return latents

    def add_noise(self, x0: Tensor, noise: Tensor, sigma: Tensor) -> Tensor:
        s = _per_row(sigma, x0)
        return (1.0 - s) * x0 + s * noise

    def target_for(self, x0: Tensor, noise: Tensor, sigma: Tensor) -> Tensor:
        return noise - x0

    def x0_from_prediction(self, z: Tensor, sigma: Tensor, prediction: Tensor) -> Tensor:
        return z - _per_row(sigma, z) * prediction

    def _image_ids(self, z: Tensor, size: tuple[int, int] | None) -> Tensor:
        if size is None:
            side = round(z.shape[1] ** 0.5)
            if side * side != z.shape[1]:
                raise ValueError("non-square packed latents: pass size=(height, width)")
            rows = cols = side
        else:
            latent_h, latent_w = self._latent_grid(*size)
            rows, cols = latent_h // 2, latent_w // 2
        return self.pipeline._prepare_latent_image_ids(1, rows, cols, z.device, z.dtype)

    def predict(
        self,
        z: Tensor,
        sigma: Tensor,
        cond: Conditioning,
        guidance_scale: float = 1.0,
        size: tuple[int, int] | None = None,
    ) -> Tensor:
        transformer = self.pipeline.transformer
        sigma = sigma.to(z.device)
        guidance = None
        if transformer.config.guidance_embeds:
            guidance = torch.full(
                (z.shape[0],), guidance_scale, device=z.device, dtype=torch.float32
            )
        # The pipeline feeds timesteps as scheduler units / 1000, i.e. exactly sigma.
        timestep = (sigma * 1000.0).to(z.dtype) / 1000
        image_ids = self._image_ids(z, size)

        def run(conditioning: Conditioning) -> Tensor:
            embeds = conditioning.embeds
            return transformer(
                hidden_states=z,
                timestep=timestep,
                guidance=guidance,
                pooled_projections=conditioning.pooled,
                encoder_hidden_states=embeds,
                txt_ids=torch.zeros(embeds.shape[1], 3, device=z.device, dtype=embeds.dtype),
                img_ids=image_ids,
                return_dict=False,
            )[0]

        prediction = run(cond)
        if self.uses_true_cfg(guidance_scale):
            # A model without a guidance embedding (the toy world) is guided the classic way,
            # as FluxPipeline does with negative_prompt="" and true_cfg_scale=guidance_scale.
            unconditional = run(self.encode([""] * len(cond)))
            prediction = unconditional + guidance_scale * (prediction - unconditional)
        return prediction

    def uses_true_cfg(self, guidance_scale: float) -> bool:
        """True classifier-free guidance applies when the model has no guidance embedding."""
        return guidance_scale > 1.0 and not self.pipeline.transformer.config.guidance_embeds

    def schedule(self, num_steps: int, height: int, width: int) -> tuple[object, Tensor, Tensor]:
        latent_h, latent_w = self._latent_grid(height, width)
        scheduler = self._scheduler_copy(self.pipeline.scheduler)
        config = scheduler.config
        sigmas = np.linspace(1.0, 1 / num_steps, num_steps)
        if getattr(config, "use_flow_sigmas", False):
            sigmas = None
        mu = calculate_shift(
            (latent_h // 2) * (latent_w // 2),
            config.get("base_image_seq_len", 256),
            config.get("max_image_seq_len", 4096),
            config.get("base_shift", 0.5),
            config.get("max_shift", 1.15),
        )
        timesteps, _ = retrieve_timesteps(scheduler, num_steps, self.device, sigmas=sigmas, mu=mu)
        return scheduler, timesteps, scheduler.sigmas[: len(timesteps)].to(self.device)

    def to_spatial(self, latents: Tensor, height: int, width: int) -> Tensor:
        return self.pipeline._unpack_latents(latents, height, width, self.pipeline.vae_scale_factor)

    def decode(self, latents: Tensor, height: int, width: int) -> Tensor:
        vae = self.pipeline.vae
        unpacked = self.pipeline._unpack_latents(
            latents, height, width, self.pipeline.vae_scale_factor
        )
        unpacked = unpacked / vae.config.scaling_factor + vae.config.shift_factor
        image = vae.decode(unpacked.to(vae.dtype), return_dict=False)[0]
        return self.pipeline.image_processor.postprocess(image, output_type="pt")
