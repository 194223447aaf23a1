"""The FADE objective's terms (DESIGN.md section 2.3), each a function of backbone outputs.

- L_rem: adversarial removal, -log D_none(x̂0(y_c)): the adapter is trained until the
  discriminator can no longer tell the concept's generations from neutral ones.
- L_pres: trajectory preservation, ‖f_θ'(z_σ, σ, y) − f_θ(z_σ, σ, y)‖² for neutral and retain
  prompts at early steps only (σ in [1 − t0, 1]); f_θ is the same model with the adapter off.
- L_dist: self-distillation, ‖f_θ'(z_σ, σ, y_c) − sg(f_θ(z_σ, σ, y_s))‖²: the concept prompt
  learns to behave as the surrogate (or the neutral prompt) did in the original model.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor

from fade.backbones import Backbone
from fade.discriminator import ConceptDiscriminator


@contextmanager
def adapter_disabled(backbone: Backbone) -> Iterator[None]:
    """The base model f_θ: the same weights with every LoRA adapter switched off."""
    backbone.denoiser.disable_adapters()
    try:
        yield
    finally:
        backbone.denoiser.enable_adapters()


def removal_loss(discriminator: ConceptDiscriminator, concept_x0: Tensor) -> Tensor:
    """-log D_none(x̂0(y_c)), averaged; gradients reach the adapter through x̂0."""
    log_probs = F.log_softmax(discriminator(concept_x0), dim=-1)
    return -log_probs[:, discriminator.none_class].mean()


def preservation_loss(adapted: Tensor, base: Tensor) -> Tensor:
    """‖f_θ'(z, σ, y) − f_θ(z, σ, y)‖² at the held (early, or the concept's own) states."""
    return F.mse_loss(adapted, base.detach())


def distillation_loss(prediction: Tensor, surrogate_reference: Tensor) -> Tensor:
    """‖f_θ'(z, σ, y_c) − sg(f_θ(z, σ, y_s))‖²."""
    return F.mse_loss(prediction, surrogate_reference.detach())


def early_sigmas(batch: int, t0: float, generator: torch.Generator) -> Tensor:
    """σ uniform in [1 − t0, 1]: the early part of the trajectory where preservation applies."""
    return 1.0 - t0 * torch.rand(batch, generator=generator)
