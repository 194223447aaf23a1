"""FADE on Ray: erase concepts from text-to-image models (FLUX, Stable Diffusion) at cluster scale.

Importing `fade` starts nothing: no Ray, no downloads, no model loading. Entry points live in
`jobs/`, `tune/` and the library modules below are what they call.
"""

__version__ = "0.1.0"
