"""Backbones: one interface over FLUX and Stable Diffusion for FADE's noise and sampling math."""

from fade.backbones.base import Backbone, Conditioning, SampleResult
from fade.backbones.flux import FluxBackbone
from fade.backbones.loading import load_backbone, wrap_pipeline
from fade.backbones.sd import SDBackbone

__all__ = [
    "Backbone",
    "Conditioning",
    "FluxBackbone",
    "SDBackbone",
    "SampleResult",
    "load_backbone",
    "wrap_pipeline",
]
