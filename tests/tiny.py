"""Tiny FLUX and SD pipelines built from configs in code, shared by every test.

Seeded, `.eval()`, word-level tokenizers built offline: no hub, no download. Image size 32x32
gives FLUX 64 packed tokens and SD an 8x8 latent.
"""

from __future__ import annotations

from fade.backbones.builders import FluxArch, SDArch, build_flux_pipeline, build_sd_pipeline

TINY_SIZE = 32
TINY_VOCABULARY = tuple(
    "a an the photo of painting picture by in style with red blue green striped dotted "
    "circle square triangle star letter k airplane cat dog person object".split()
)


def tiny_flux_pipeline(seed: int = 0):
    return build_flux_pipeline(FluxArch(), TINY_VOCABULARY, seed=seed)


def tiny_sd_pipeline(seed: int = 0, prediction_type: str = "epsilon"):
    return build_sd_pipeline(SDArch(prediction_type=prediction_type), TINY_VOCABULARY, seed=seed)
