"""Stable Diffusion 1.x/2.x backbone: DDPM-style noising, epsilon or v prediction, CFG.

z_t = sqrt(ᾱ_t) x0 + sqrt(1 - ᾱ_t) eps over the scheduler's discrete timesteps; the common
`sigma` in [0, 1] maps to timestep round(sigma * (T - 1)), so sigma=1 is the noisiest step and
`t0` keeps its meaning (fraction of the trajectory from pure noise). Classifier-free guidance
batches [uncond, cond] exactly as `StableDiffusionPipeline.__call__` does, so a full sample
matches the pipeline's output for the same seed and steps.
"""

from __future__ import annotations

import logging

import torch
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    PNDMScheduler,
    StableDiffusionPipeline,
    UniPCMultistepScheduler,
)
from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import retrieve_timesteps
from torch import Tensor, nn

from fade.backbones.base import Backbone, Conditioning

logger = logging.getLogger(__name__)

# Schedulers whose latents live in the DDPM space sqrt(ᾱ) x0 + sqrt(1 - ᾱ) eps, the space
# add_noise and x0_from_prediction use. Sigma-space ones (Euler, Heun, LMS) are swapped for DDIM.
_ALPHA_SPACE_SCHEDULERS = (
    DDIMScheduler,
    DDPMScheduler,
    PNDMScheduler,
    DPMSolverMultistepScheduler,
    UniPCMultistepScheduler,
)


class SDBackbone(Backbone):
    family = "sd"
    pipeline: StableDiffusionPipeline

    def __init__(
        self, pipeline: StableDiffusionPipeline, model_id: str = "", revision: str | None = None
    ):
        super().__init__(pipeline, model_id, revision)
        if not isinstance(pipeline.scheduler, _ALPHA_SPACE_SCHEDULERS):
            logger.info(
                "replacing %s with DDIMScheduler (FADE's noise math is in DDPM latent space)",
                type(pipeline.scheduler).__name__,
            )
            pipeline.scheduler = DDIMScheduler.from_config(pipeline.scheduler.config)

    @property
    def denoiser(self) -> nn.Module:
        return self.pipeline.unet

    @property
    def num_train_timesteps(self) -> int:
        return int(self.pipeline.scheduler.config.num_train_timesteps)

    @property
    def prediction_type(self) -> str:
        return str(self.pipeline.scheduler.config.get("prediction_type", "epsilon"))

    def _encode_uncached(self, prompts: list[str]) -> Conditioning:
        embeds, _negative = self.pipeline.encode_prompt(
            prompts, self.device, num_images_per_prompt=1, do_classifier_free_guidance=False
        )
        return Conditioning(embeds)

    def initial_noise(
        self, batch_size: int, height: int, width: int, generator: torch.Generator | None = None
    ) -> Tensor:
        factor = self.pipeline.vae_scale_factor
        if height % factor or width % factor:
            raise ValueError(
                f"height and width must be multiples of {factor}, got {height}x{width}"
            )
        return self.pipeline.prepare_latents(
            batch_size,
            self.denoiser.config.in_channels,
            height,
            width,
            self.dtype,
            self.device,
            generator,
        )

    def timestep_of(self, sigma: Tensor) -> Tensor:
        """Discrete timestep for a sigma fraction in [0, 1]."""
        steps = torch.round(sigma.float() * (self.num_train_timesteps - 1)).long()
        return steps.clamp(0, self.num_train_timesteps - 1)

    def _alpha_bar(self, sigma: Tensor, like: Tensor) -> Tensor:
        alphas = self.pipeline.scheduler.alphas_cumprod.to(like.device)
        return (
            alphas[self.timestep_of(sigma).to(like.device)]
            .to(like.dtype)
            .view(-1, *([1] * (like.dim() - 1)))
        )

    def add_noise(self, x0: Tensor, noise: Tensor, sigma: Tensor) -> Tensor:
        alpha_bar = self._alpha_bar(sigma, x0)
        return alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * noise

    def target_for(self, x0: Tensor, noise: Tensor, sigma: Tensor) -> Tensor:
        if self.prediction_type == "v_prediction":
            alpha_bar = self._alpha_bar(sigma, x0)
            return alpha_bar.sqrt() * noise - (1 - alpha_bar).sqrt() * x0
        return noise

    def x0_from_prediction(self, z: Tensor, sigma: Tensor, prediction: Tensor) -> Tensor:
        alpha_bar = self._alpha_bar(sigma, z)
        if self.prediction_type == "v_prediction":
            return alpha_bar.sqrt() * z - (1 - alpha_bar).sqrt() * prediction
        return (z - (1 - alpha_bar).sqrt() * prediction) / alpha_bar.sqrt()

    def _unconditional(self, batch_size: int) -> Conditioning:
        return self.encode([""] * batch_size)

    def predict(
        self,
        z: Tensor,
        sigma: Tensor,
        cond: Conditioning,
        guidance_scale: float = 1.0,
        size: tuple[int, int] | None = None,
    ) -> Tensor:
        steps = self.timestep_of(sigma).to(z.device)
        # The pipeline passes one scalar timestep for the batch; do the same when all rows agree
        # so the UNet sees bit-identical inputs.
        timestep = steps[0] if bool((steps == steps[0]).all()) else steps
        use_cfg = guidance_scale > 1.0 and self.denoiser.config.time_cond_proj_dim is None
        if use_cfg:
            z_in = torch.cat([z, z])
            embeds = torch.cat([self._unconditional(len(cond)).embeds, cond.embeds])
            timestep = timestep if timestep.dim() == 0 else torch.cat([timestep, timestep])
        else:
            z_in, embeds = z, cond.embeds
        prediction = self.denoiser(z_in, timestep, encoder_hidden_states=embeds, return_dict=False)[
            0
        ]
        if use_cfg:
            uncond, text = prediction.chunk(2)
            prediction = uncond + guidance_scale * (text - uncond)
        return prediction

    def schedule(self, num_steps: int, height: int, width: int) -> tuple[object, Tensor, Tensor]:
        scheduler = self._scheduler_copy(self.pipeline.scheduler)
        timesteps, _ = retrieve_timesteps(scheduler, num_steps, self.device)
        sigmas = timesteps.float() / (self.num_train_timesteps - 1)
        return scheduler, timesteps, sigmas

    def decode(self, latents: Tensor, height: int, width: int) -> Tensor:
        vae = self.pipeline.vae
        image = vae.decode(latents / vae.config.scaling_factor, return_dict=False)[0]
        return self.pipeline.image_processor.postprocess(
            image, output_type="pt", do_denormalize=[True] * image.shape[0]
        )
