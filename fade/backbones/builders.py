"""Build FLUX and Stable Diffusion pipelines from architecture configs, with random weights.

Why: tests need tiny models (no hub, no download) and the toy world needs a small model to train;
both are the real diffusers/transformers classes built from a config, so everything that works
on them works on the released checkpoints. Weights are seeded, every module is put in `.eval()`
(models built from a config start in train mode), and tokenizers are word-level, built offline
from the given vocabulary.

Not a trainer and not a loader of released weights: see `fade.backbones.loading` for that.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    FlowMatchEulerDiscreteScheduler,
    FluxPipeline,
    FluxTransformer2DModel,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

from fade.backbones.tokenizers import build_clip_tokenizer, build_t5_tokenizer


@dataclass(frozen=True)
class TextEncoderArch:
    """A CLIP text tower (and, for FLUX, a T5 encoder) small enough for a unit test."""

    clip_hidden: int = 32
    clip_layers: int = 2
    clip_heads: int = 2
    clip_max_length: int = 16
    t5_d_model: int = 32
    t5_layers: int = 2
    t5_heads: int = 2
    t5_d_kv: int = 16
    t5_d_ff: int = 64
    t5_max_length: int = 16


@dataclass(frozen=True)
class FluxArch:
    """FluxTransformer2DModel + AutoencoderKL sizes. Defaults are test-tiny (~50k parameters).

    The transformer sees packed 2x2 latent patches, so its `in_channels` is 4x the VAE's latent
    channels; the VAE downsamples by 2**(len(vae_channels) - 1).
    """

    num_layers: int = 1
    num_single_layers: int = 1
    attention_head_dim: int = 16
    num_attention_heads: int = 2
    axes_dims_rope: tuple[int, int, int] = (4, 4, 8)
    guidance_embeds: bool = True
    latent_channels: int = 1
    vae_channels: tuple[int, ...] = (4,)
    vae_norm_groups: int = 1
    vae_scaling_factor: float = 1.5
    vae_shift_factor: float = 0.0
    text: TextEncoderArch = TextEncoderArch()


@dataclass(frozen=True)
class SDArch:
    """UNet2DConditionModel + AutoencoderKL sizes, Stable Diffusion 1.x layout, test-tiny."""

    unet_channels: tuple[int, ...] = (8, 16)
    layers_per_block: int = 1
    norm_num_groups: int = 4
    attention_head_dim: int = 4
    latent_channels: int = 4
    vae_channels: tuple[int, ...] = (8, 16)
    vae_scaling_factor: float = 0.18215
    prediction_type: str = "epsilon"
    text: TextEncoderArch = TextEncoderArch()


def _clip_text_encoder(arch: TextEncoderArch, tokenizer_vocab_size: int) -> CLIPTextModel:
    config = CLIPTextConfig(
        vocab_size=tokenizer_vocab_size,
        hidden_size=arch.clip_hidden,
        intermediate_size=arch.clip_hidden * 2,
        num_hidden_layers=arch.clip_layers,
        num_attention_heads=arch.clip_heads,
        max_position_embeddings=arch.clip_max_length,
        projection_dim=arch.clip_hidden,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
        hidden_act="gelu",
    )
    return CLIPTextModel(config)


def _t5_encoder(arch: TextEncoderArch, tokenizer_vocab_size: int) -> T5EncoderModel:
    config = T5Config(
        vocab_size=tokenizer_vocab_size,
        d_model=arch.t5_d_model,
        d_kv=arch.t5_d_kv,
        d_ff=arch.t5_d_ff,
        num_layers=arch.t5_layers,
        num_heads=arch.t5_heads,
        relative_attention_num_buckets=8,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )
    return T5EncoderModel(config)


def _autoencoder(
    channels: tuple[int, ...], latent_channels: int, groups: int, **extra
) -> AutoencoderKL:
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * len(channels),
        up_block_types=("UpDecoderBlock2D",) * len(channels),
        block_out_channels=channels,
        layers_per_block=1,
        latent_channels=latent_channels,
        norm_num_groups=groups,
        **extra,
    )


def _eval_all(*modules: torch.nn.Module) -> None:
    for module in modules:
        module.eval()
        module.requires_grad_(False)


def build_flux_pipeline(arch: FluxArch, vocabulary: Iterable[str], seed: int = 0) -> FluxPipeline:
    """A FluxPipeline with seeded random weights and word-level tokenizers over `vocabulary`."""
    words = list(vocabulary)
    tokenizer = build_clip_tokenizer(words, model_max_length=arch.text.clip_max_length)
    tokenizer_2 = build_t5_tokenizer(words, model_max_length=arch.text.t5_max_length)
    inner_dim = arch.attention_head_dim * arch.num_attention_heads
    if sum(arch.axes_dims_rope) != arch.attention_head_dim:
        raise ValueError(
            f"axes_dims_rope {arch.axes_dims_rope} must sum to attention_head_dim "
            f"{arch.attention_head_dim}"
        )
    torch.manual_seed(seed)
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=4 * arch.latent_channels,
        num_layers=arch.num_layers,
        num_single_layers=arch.num_single_layers,
        attention_head_dim=arch.attention_head_dim,
        num_attention_heads=arch.num_attention_heads,
        joint_attention_dim=arch.text.t5_d_model,
        pooled_projection_dim=arch.text.clip_hidden,
        guidance_embeds=arch.guidance_embeds,
        axes_dims_rope=arch.axes_dims_rope,
    )
    assert inner_dim == transformer.inner_dim
    torch.manual_seed(seed + 1)
    text_encoder = _clip_text_encoder(arch.text, len(tokenizer))
    torch.manual_seed(seed + 2)
    text_encoder_2 = _t5_encoder(arch.text, len(tokenizer_2))
    torch.manual_seed(seed + 3)
    vae = _autoencoder(
        arch.vae_channels,
        arch.latent_channels,
        groups=arch.vae_norm_groups,
        use_quant_conv=False,
        use_post_quant_conv=False,
        shift_factor=arch.vae_shift_factor,
        scaling_factor=arch.vae_scaling_factor,
    )
    _eval_all(transformer, text_encoder, text_encoder_2, vae)
    return FluxPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        text_encoder_2=text_encoder_2,
        tokenizer_2=tokenizer_2,
        transformer=transformer,
    )


def build_sd_pipeline(
    arch: SDArch, vocabulary: Iterable[str], seed: int = 0
) -> StableDiffusionPipeline:
    """A Stable Diffusion 1.x-layout pipeline with seeded random weights and a DDIM scheduler."""
    tokenizer = build_clip_tokenizer(vocabulary, model_max_length=arch.text.clip_max_length)
    down = ("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (len(arch.unet_channels) - 1)
    up = ("CrossAttnUpBlock2D",) * (len(arch.unet_channels) - 1) + ("UpBlock2D",)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=arch.latent_channels,
        out_channels=arch.latent_channels,
        block_out_channels=arch.unet_channels,
        layers_per_block=arch.layers_per_block,
        down_block_types=down,
        up_block_types=up,
        cross_attention_dim=arch.text.clip_hidden,
        attention_head_dim=arch.attention_head_dim,
        norm_num_groups=arch.norm_num_groups,
    )
    torch.manual_seed(seed + 1)
    text_encoder = _clip_text_encoder(arch.text, len(tokenizer))
    torch.manual_seed(seed + 2)
    vae = _autoencoder(
        arch.vae_channels,
        arch.latent_channels,
        groups=arch.norm_num_groups,
        scaling_factor=arch.vae_scaling_factor,
    )
    _eval_all(unet, text_encoder, vae)
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        prediction_type=arch.prediction_type,
    )
    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
