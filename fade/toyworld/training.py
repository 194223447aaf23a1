"""Train the toy world's autoencoder, then its transformer and text encoders (rectified flow).

Why here and not in `fade/erase.py`: this is pre-training of the embedded model, done once by
`jobs/build_toyworld.py`, never by users' jobs. Every stage is resumable: it checkpoints into
the build directory and a rerun continues from the last checkpoint.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, FluxPipeline
from tqdm.auto import tqdm

from fade.toyworld.captions import caption_for
from fade.toyworld.data import SceneSet, to_tensor
from fade.toyworld.spec import AutoencoderSchedule, ModelSchedule

logger = logging.getLogger(__name__)


def _save_checkpoint(path: Path, state: dict) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def _load_checkpoint(path: Path) -> dict | None:
    return torch.load(path, weights_only=False) if path.is_file() else None


def train_autoencoder(
    vae: AutoencoderKL, data: SceneSet, schedule: AutoencoderSchedule, work: Path, seed: int
) -> dict[str, float]:
    """Train `vae` to reconstruct renders; returns its latent statistics and reconstruction PSNR.

    Near-lossless is the goal: FLUX's sampling is done in latent space and the detector looks
    at decoded pixels, so the autoencoder must not blur what makes one concept differ from
    another (a glyph's strokes, a texture's period).
    """
    checkpoint_path = work / "autoencoder.pt"
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(vae.parameters(), lr=schedule.lr, weight_decay=0.0)
    start = 0
    if (state := _load_checkpoint(checkpoint_path)) is not None:
        vae.load_state_dict(state["vae"])
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["generator"])
        start = state["step"]
    images = to_tensor(data.images)
    vae.train().requires_grad_(True)
    progress = tqdm(
        range(start, schedule.steps), desc="autoencoder", initial=start, total=schedule.steps
    )
    for step in progress:
        batch = images[torch.randint(len(images), (schedule.batch_size,), generator=generator)]
        posterior = vae.encode(batch).latent_dist
        latents = posterior.sample(generator=generator)
        reconstruction = vae.decode(latents).sample
        mse = F.mse_loss(reconstruction, batch)
        loss = mse + schedule.kl_weight * posterior.kl().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        for group in optimizer.param_groups:  # cosine decay to 10%
            group["lr"] = schedule.lr * (0.55 + 0.45 * math.cos(math.pi * step / schedule.steps))
        if step % 20 == 0:
            progress.set_postfix(psnr=f"{10 * math.log10(4 / max(mse.item(), 1e-10)):.1f}")
        if (step + 1) % 250 == 0 or step + 1 == schedule.steps:
            _save_checkpoint(
                checkpoint_path,
                {
                    "vae": vae.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "generator": generator.get_state(),
                    "step": step + 1,
                },
            )
    vae.eval().requires_grad_(False)
    return autoencoder_statistics(vae, images[:2048])


@torch.no_grad()
def autoencoder_statistics(vae: AutoencoderKL, images: torch.Tensor) -> dict[str, float]:
    """Latent mean/std (for shift and scaling factors) and reconstruction PSNR in dB."""
    latents = torch.cat([vae.encode(chunk).latent_dist.mode() for chunk in images.split(256)])
    recon = torch.cat([vae.decode(chunk).sample for chunk in latents.split(256)])
    mse = F.mse_loss(recon.clamp(-1, 1), images).item()
    return {
        "shift_factor": float(latents.mean()),
        "scaling_factor": float(1.0 / latents.std()),
        "psnr_db": 10 * math.log10(4 / max(mse, 1e-10)),
    }


@torch.no_grad()
def encode_dataset(pipeline: FluxPipeline, data: SceneSet) -> torch.Tensor:
    """Packed, scaled latents of every render: what the transformer learns to generate."""
    vae = pipeline.vae
    images = to_tensor(data.images)
    chunks = []
    for chunk in tqdm(images.split(512), desc="encode data set"):
        latents = vae.encode(chunk).latent_dist.mode()
        latents = (latents - vae.config.shift_factor) * vae.config.scaling_factor
        b, c, h, w = latents.shape
        chunks.append(pipeline._pack_latents(latents, b, c, h, w))
    return torch.cat(chunks)


@functools.cache
def inductor_works() -> bool:
    """Whether TorchInductor can compile and run a small forward and backward pass here.

    Why a probe rather than a look for `g++`: Inductor also needs the compiler it is configured
    with (`$CXX`) and Python's headers, and it fails only at the first compiled call, which in a
    build comes after minutes of rendering and encoding. Compiling one tiny function up front
    (a few seconds, once per process) finds that out before any of it.
    """
    probe = torch.compile(lambda x: F.gelu(x, approximate="tanh").sum())
    x = torch.ones(4, requires_grad=True)
    try:
        probe(x).backward()
    except Exception as error:  # any compiler or linker failure means: train eagerly
        logger.warning("TorchInductor cannot compile here (%s): training uncompiled", error)
        return False
    return True


def compiled_for_training(module: torch.nn.Module) -> torch.nn.Module:
    """`module` compiled by TorchInductor, or as it is where Inductor cannot compile.

    Why: on 2 CPU cores a toy training step is mostly element-wise work (the tanh GELU alone is
    a sixth of it), which Inductor fuses into a few loops; a step takes about three quarters of
    the eager time (docs/toyworld.md), which keeps the build within its time bound. Parameters
    are shared with `module`, so its state dict and the EMA are unaffected.
    """
    return torch.compile(module) if inductor_works() else module


class _TextConditioner:
    """Encodes captions with the (trainable) text encoders exactly as FluxPipeline does."""

    def __init__(self, pipeline: FluxPipeline, max_tokens: int):
        self.pipeline = pipeline
        self.max_tokens = max_tokens

    def __call__(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        pipe = self.pipeline
        clip_ids = pipe.tokenizer(
            captions,
            padding="max_length",
            max_length=pipe.tokenizer_max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids
        t5_ids = pipe.tokenizer_2(
            captions,
            padding="max_length",
            max_length=self.max_tokens,
            truncation=True,
            return_tensors="pt",
        ).input_ids
        pooled = pipe.text_encoder(clip_ids, output_hidden_states=False).pooler_output
        embeds = pipe.text_encoder_2(t5_ids, output_hidden_states=False)[0]
        return embeds, pooled


def train_model(
    pipeline: FluxPipeline,
    latents: torch.Tensor,
    data: SceneSet,
    schedule: ModelSchedule,
    work: Path,
    seed: int,
    max_tokens: int,
    on_checkpoint: Callable[[int], None] | None = None,
    phase: str = "model",
    compile_transformer: bool = False,
) -> None:
    """Rectified-flow training of transformer + text encoders; EMA weights end in `pipeline`.

    Starts from whatever weights `pipeline` holds, so a later `phase` (with its own checkpoint
    file in `work`) continues an earlier one. `compile_transformer` trades a minute of
    compilation for faster steps (`compiled_for_training`); the build uses it.
    """
    modules = {
        "transformer": pipeline.transformer,
        "text_encoder": pipeline.text_encoder,
        "text_encoder_2": pipeline.text_encoder_2,
    }
    params = [p for m in modules.values() for p in m.parameters()]
    for module in modules.values():
        module.train().requires_grad_(True)
    optimizer = torch.optim.AdamW(params, lr=schedule.lr, weight_decay=0.01)
    ema = {
        name: {k: v.detach().clone() for k, v in m.state_dict().items()}
        for name, m in modules.items()
    }
    generator = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    checkpoint_path = work / f"{phase}.pt"
    start = 0
    if (state := _load_checkpoint(checkpoint_path)) is not None:
        for name, module in modules.items():
            module.load_state_dict(state["modules"][name])
        optimizer.load_state_dict(state["optimizer"])
        ema = state["ema"]
        generator.set_state(state["generator"])
        rng.bit_generator.state = state["rng"]
        if "torch_rng" in state:  # T5's dropout draws from torch's global generator
            torch.set_rng_state(state["torch_rng"])
        start = state["step"]
        logger.info("resuming %s training at step %d", phase, start)
    conditioner = _TextConditioner(pipeline, max_tokens)
    transformer = (
        compiled_for_training(pipeline.transformer) if compile_transformer else pipeline.transformer
    )
    side = math.isqrt(latents.shape[1])
    image_ids = pipeline._prepare_latent_image_ids(1, side, side, "cpu", torch.float32)
    text_ids = torch.zeros(max_tokens, 3)
    progress = tqdm(
        range(start, schedule.steps),
        desc=f"toy FLUX ({phase})",
        initial=start,
        total=schedule.steps,
    )
    running = None
    for step in progress:
        index = torch.randint(len(latents), (schedule.batch_size,), generator=generator)
        x0 = latents[index]
        captions = [
            "" if rng.random() < schedule.empty_caption_rate else caption_for(data.scenes[i], rng)
            for i in index.tolist()
        ]
        embeds, pooled = conditioner(captions)
        normal = torch.randn(len(x0), generator=generator)
        sigma = torch.sigmoid(normal + schedule.sigma_location)  # logit-normal
        noise = torch.randn(x0.shape, generator=generator)
        z = (1 - sigma[:, None, None]) * x0 + sigma[:, None, None] * noise
        prediction = transformer(
            hidden_states=z,
            timestep=sigma,
            guidance=None,
            pooled_projections=pooled,
            encoder_hidden_states=embeds,
            txt_ids=text_ids,
            img_ids=image_ids,
            return_dict=False,
        )[0]
        loss = F.mse_loss(prediction, noise - x0)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        lr = schedule.lr * min(1.0, (step + 1) / schedule.warmup_steps)
        floor = schedule.final_lr_fraction
        lr *= floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * step / schedule.steps))
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.step()
        with torch.no_grad():
            decay = min(schedule.ema_decay, (1 + step) / (10 + step))
            for name, module in modules.items():
                for key, value in module.state_dict().items():
                    if value.dtype.is_floating_point:
                        ema[name][key].lerp_(value, 1 - decay)
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        if step % 10 == 0:
            progress.set_postfix(loss=f"{running:.4f}", lr=f"{lr:.1e}")
        if (step + 1) % schedule.checkpoint_every == 0 or step + 1 == schedule.steps:
            _save_checkpoint(
                checkpoint_path,
                {
                    "modules": {n: m.state_dict() for n, m in modules.items()},
                    "optimizer": optimizer.state_dict(),
                    "ema": ema,
                    "step": step + 1,
                    "generator": generator.get_state(),
                    "rng": rng.bit_generator.state,
                    "torch_rng": torch.get_rng_state(),
                },
            )
            if on_checkpoint is not None:
                on_checkpoint(step + 1)
    for name, module in modules.items():
        module.load_state_dict(ema[name])
        module.eval().requires_grad_(False)
