"""The toy world's build recipe: model sizes, data sizes and training schedules, in one place.

Why a dataclass: `jobs/build_toyworld.py` reproduces the committed model from this recipe and
a seed, and the recipe is saved beside the model (build_config.json) so anyone can see how the
weights were made. The sizes were chosen to fit a 2-core CPU (see docs/toyworld.md).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from fade.backbones.builders import FluxArch, TextEncoderArch
from fade.toyworld.captions import FIGURE_WEIGHTS

IMAGE_SIZE = 32
MAX_TOKENS = 12  # CLIP and T5 tokens per prompt; pass max_sequence_length=12 to FluxPipeline

TOY_TEXT = TextEncoderArch(
    clip_hidden=64,
    clip_layers=2,
    clip_heads=4,
    clip_max_length=MAX_TOKENS,
    t5_d_model=64,
    t5_layers=2,
    t5_heads=4,
    t5_d_kv=16,
    t5_d_ff=128,
    t5_max_length=MAX_TOKENS,
)

# 2 double + 4 single blocks, 4 heads of 32, on 8x8 tokens of packed 16x16x12 latents.
TOY_ARCH = FluxArch(
    num_layers=2,
    num_single_layers=4,
    attention_head_dim=32,
    num_attention_heads=4,
    axes_dims_rope=(8, 12, 12),
    guidance_embeds=False,
    latent_channels=12,
    vae_channels=(16, 32),
    vae_norm_groups=4,
    text=TOY_TEXT,
)


@dataclass
class AutoencoderSchedule:
    steps: int = 2500
    batch_size: int = 32
    lr: float = 2e-3
    kl_weight: float = 1e-6


@dataclass
class ModelSchedule:
    """Rectified-flow training of the transformer and both text encoders, jointly."""

    steps: int = 3500
    batch_size: int = 128
    lr: float = 1e-3
    warmup_steps: int = 200
    ema_decay: float = 0.999
    empty_caption_rate: float = 0.1  # learn the unconditional branch for CFG
    checkpoint_every: int = 250
    final_lr_fraction: float = 0.1  # cosine decay ends at this share of `lr`
    sigma_location: float = 0.0  # logit-normal mean of the training sigma; > 0 favours noise
    figure_weights: tuple[float, float, float] = FIGURE_WEIGHTS  # shape, glyph, artist scenes


def _later_phase(
    steps: int,
    lr: float,
    warmup_steps: int,
    sigma_location: float,
    figure_weights: tuple[float, float, float],
) -> ModelSchedule:
    """A phase from the one before's EMA weights; each ends its cosine decay at 5% of its peak,
    because most of a phase's gain came at the end of its decay (docs/toyworld.md)."""
    return ModelSchedule(
        steps=steps,
        lr=lr,
        warmup_steps=warmup_steps,
        final_lr_fraction=0.05,
        sigma_location=sigma_location,
        figure_weights=figure_weights,
    )


def _refine_schedule() -> ModelSchedule:
    """Second phase: colours, textures and artists are learned by then, geometry is not. So:
    more shape and letter scenes and more weight on the high-noise steps where a figure's outline
    is decided."""
    return _later_phase(1000, 6e-4, 100, 0.5, (0.35, 0.35, 0.30))


def _polish_schedule() -> ModelSchedule:
    """Third and last phase: after the refine phase shapes and letters were still lumpy (77.8
    and 71.2% of their images confidently found). One long decay at a lower learning rate firms
    them up, most of its scenes shapes: letters need less (their target is 75%) and world v4's
    three shorter decays showed that each decay's gain comes at its end (docs/toyworld.md, "How
    world v5 was made")."""
    return _later_phase(4000, 5e-4, 100, 0.3, (0.55, 0.15, 0.3))


@dataclass
class DetectorSchedule:
    steps: int = 2000
    batch_size: int = 128
    lr: float = 2e-3
    negative_rate: float = 0.25


@dataclass
class ToyBuildConfig:
    seed: int = 0
    dataset_size: int = 60000
    autoencoder: AutoencoderSchedule = field(default_factory=AutoencoderSchedule)
    model: ModelSchedule = field(default_factory=ModelSchedule)
    refine: ModelSchedule = field(default_factory=_refine_schedule)
    polish: ModelSchedule = field(default_factory=_polish_schedule)
    detector: DetectorSchedule = field(default_factory=DetectorSchedule)

    def to_dict(self) -> dict:
        return asdict(self)
