"""D_φ: the concept discriminator on x̂0 latents (DESIGN.md section 2.3).

It sees the model's own clean-latent estimates, never decoded pixels (no VAE in the gradient
path), and tells which of K concepts they show, or "none" (class K). One concept is the binary
case K = 1. The adversarial removal loss pushes the adapter until D says "none" for concept
prompts; D keeps learning on the adapter's latest outputs, so the adapter cannot hide the
concept in a way one fixed classifier would miss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class ConceptDiscriminator(nn.Module):
    """A small conv net over (B, C, H, W) latents -> (B, K + 1) logits; class K is "none"."""

    def __init__(self, latent_channels: int, num_concepts: int, width: int = 64):
        super().__init__()
        self.num_concepts = num_concepts
        self.net = nn.Sequential(
            nn.Conv2d(latent_channels, width, 3, padding=1),
            nn.GroupNorm(8, width),
            nn.SiLU(),
            nn.Conv2d(width, width * 2, 3, stride=2, padding=1),
            nn.GroupNorm(8, width * 2),
            nn.SiLU(),
            nn.Conv2d(width * 2, width * 2, 3, stride=2, padding=1),
            nn.SiLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(width * 2, num_concepts + 1),
        )

    @property
    def none_class(self) -> int:
        return self.num_concepts

    def forward(self, latents: Tensor) -> Tensor:
        return self.net(latents.float())

    def accuracy(self, concept_latents: Tensor, labels: Tensor, neutral_latents: Tensor) -> float:
        """Share of correct answers on concept (label) and neutral ("none") latents."""
        with torch.no_grad():
            hits = (self(concept_latents).argmax(-1) == labels).sum()
            none = torch.full(
                (len(neutral_latents),), self.none_class, device=concept_latents.device
            )
            hits = hits + (self(neutral_latents).argmax(-1) == none).sum()
        return float(hits) / (len(concept_latents) + len(neutral_latents))

    def chance(self) -> float:
        """Accuracy of guessing, on the balanced concept/neutral batches D is scored on."""
        return 0.5


def discriminator_loss(
    discriminator: ConceptDiscriminator,
    concept_latents: Tensor,
    labels: Tensor,
    neutral_latents: Tensor,
) -> Tensor:
    """Cross-entropy: concept x̂0 -> its concept, neutral x̂0 -> none (inputs detached)."""
    none = torch.full(
        (len(neutral_latents),), discriminator.none_class, device=neutral_latents.device
    )
    logits = discriminator(torch.cat([concept_latents.detach(), neutral_latents.detach()]))
    return F.cross_entropy(logits, torch.cat([labels, none]))
