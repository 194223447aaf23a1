"""FADE on Ray: erase concepts from text-to-image models (FLUX, Stable Diffusion) at cluster scale.

Importing `fade` starts nothing: no Ray, no downloads, no model loading. Entry points live in
`jobs/` and `tune/`; the library modules below are what they call.
"""

import logging

__version__ = "0.1.0"


class _DropTorchvisionFallbackNotice(logging.Filter):
    """CPU installs have no torchvision on purpose (docs/install.md); transformers' notice that
    it falls back to PIL image processors is expected there and only confuses users."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "requires torchvision (not installed)" not in record.getMessage()


logging.getLogger("transformers.utils.import_utils").addFilter(_DropTorchvisionFallbackNotice())
