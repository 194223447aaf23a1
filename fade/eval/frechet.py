"""The Fréchet distance of FID and FD_toy, computed by clean-fid's own `frechet_distance`.

DESIGN.md section 3 asks for clean-fid's Fréchet code, so that our FID numbers mean what
published FID numbers mean (clean-fid's stable formula, and its handling of a singular
covariance product: it retries with ``eps`` added to both diagonals).

Why this module does not simply ``from cleanfid.fid import frechet_distance``: ``cleanfid.fid``
imports ``cleanfid.utils``, which imports torchvision at module level, and torchvision cannot be
installed next to the CPU torch this project pins (PyPI's torchvision is a CUDA build; a failed
import of it also breaks ``import peft``; DESIGN.md section 6). So clean-fid is installed with
``--no-deps`` and its function is taken from the installed ``cleanfid/fid.py`` *source*: the
module is parsed with :mod:`ast`, the one ``def frechet_distance`` node is compiled and executed
in a namespace holding the two names it uses (``np`` and ``scipy.linalg``). Nothing of
clean-fid's is copied into this repository and no other statement of ``fid.py`` runs (no
torch/torchvision import, no download), so the code that computes our numbers is exactly the
installed clean-fid's. The version is checked (:data:`CLEANFID_VERSION`) so an upgrade that
changes the function is noticed. The same path is used on every machine, GPU or not, so the
numbers never depend on whether torchvision happened to import.

Fewer images than feature dimensions (FID from 64 images in Inception's 2048 dimensions): both
Gaussians then live in the span of the centred features and the difference of the means, and
the Fréchet distance is invariant under an orthogonal change of basis, so the features are
first expressed in an orthonormal basis of that span (at most N_a + N_b + 1 dimensions) and
clean-fid's function runs there. The value is the same (the dimensions left out have zero
variance in both sets and add nothing, also to clean-fid's ``eps`` retry: eps + eps - 2 eps);
the time is not: SciPy's ``sqrtm`` of a rank-deficient 2048 x 2048 product took 10 to 100 s
on the project's 2-core machine, in the span well under a second. A synthetic check (64 vs 64
features in 2048-d) agreed with the full computation to 1e-7 relative;
tests/test_metrics.py checks the reduction against the full one on smaller sizes. With at
least as many images as dimensions (FD_toy: 64 + 512 images, 256-d) nothing is projected.
"""

from __future__ import annotations

import ast
import contextlib
import functools
import importlib.util
import io
import logging
import warnings
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

import numpy as np
from scipy import linalg

from fade.errors import FadeError

#: The clean-fid release whose `frechet_distance` this module was checked against.
CLEANFID_VERSION = "0.1.35"
#: How results name the implementation (stamped on every Fréchet number).
IMPLEMENTATION = f"clean-fid {CLEANFID_VERSION} frechet_distance"

log = logging.getLogger(__name__)


def _cleanfid_source() -> Path:
    """Path of the installed cleanfid/fid.py, found without importing the package."""
    spec = importlib.util.find_spec("cleanfid")
    if spec is None or not spec.submodule_search_locations:
        raise FadeError(
            f"clean-fid is not installed: pip install --no-deps clean-fid=={CLEANFID_VERSION} "
            "(or bash scripts/setup.sh)"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "fid.py"


@functools.cache
def cleanfid_frechet() -> Callable[..., float]:
    """clean-fid's ``frechet_distance(mu1, sigma1, mu2, sigma2, eps=1e-6)``, loaded from its
    source file without importing ``cleanfid.fid`` (see the module docstring)."""
    version = metadata.version("clean-fid")
    if version != CLEANFID_VERSION:
        raise FadeError(
            f"clean-fid {version} is installed but FADE was checked against {CLEANFID_VERSION}: "
            f"pip install --no-deps clean-fid=={CLEANFID_VERSION}"
        )
    path = _cleanfid_source()
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    nodes = [
        node
        for node in tree.body
        if isinstance(node, ast.FunctionDef) and node.name == "frechet_distance"
    ]
    if len(nodes) != 1:
        raise FadeError(f"{path} has no single top-level frechet_distance: is clean-fid intact?")
    namespace: dict = {"np": np, "linalg": linalg}
    exec(compile(ast.Module(body=nodes, type_ignores=[]), str(path), "exec"), namespace)
    return namespace["frechet_distance"]


def gaussian(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of (N, D) features, as clean-fid computes them (rowvar=False)."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or len(features) < 2:
        raise ValueError(f"need (N >= 2, D) features, got shape {features.shape}")
    return features.mean(axis=0), np.cov(features, rowvar=False)


def common_span(features_a: np.ndarray, features_b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both feature sets in an orthonormal basis of the span of their centred features and
    the difference of their means (same Fréchet distance, fewer dimensions)."""
    a = np.asarray(features_a, dtype=np.float64)
    b = np.asarray(features_b, dtype=np.float64)
    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    spanning = np.concatenate([a - mu_a, b - mu_b, (mu_a - mu_b)[None]])
    basis, _ = np.linalg.qr(spanning.T)  # (D, N_a + N_b + 1), orthonormal columns
    return (a - mu_b) @ basis, (b - mu_b) @ basis


def frechet_distance(features_a: np.ndarray, features_b: np.ndarray, eps: float = 1e-6) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (the FID formula),
    computed by clean-fid's function. Its message about a singular product (it prints one,
    then retries with ``eps`` on the diagonals) and SciPy's warnings go to this module's logger
    (INFO) instead of stdout/stderr: with fewer images than feature dimensions (FD_toy's 64
    neutral images, 256 features) the covariances are singular on every run, by design.
    """
    a, b = np.asarray(features_a), np.asarray(features_b)
    if a.ndim == 2 and b.ndim == 2 and len(a) + len(b) + 1 < a.shape[1]:
        a, b = common_span(a, b)  # see the module docstring: exact, and far faster
    mu_a, sigma_a = gaussian(a)
    mu_b, sigma_b = gaussian(b)
    captured = io.StringIO()
    with contextlib.redirect_stdout(captured), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = cleanfid_frechet()(mu_a, sigma_a, mu_b, sigma_b, eps=eps)
    for warning in caught:
        # clean-fid 0.1.35 passes sqrtm(disp=False), deprecated since SciPy 1.17 (removed in
        # 1.18; pyproject pins scipy 1.17.1): the value is unaffected, so it is not repeated.
        if "`disp` argument is deprecated" not in str(warning.message):
            # e.g. "Matrix is singular" whenever there are fewer images than feature dimensions
            log.info(
                "clean-fid (%d vs %d samples): %s",
                len(features_a),
                len(features_b),
                warning.message,
            )
    if captured.getvalue().strip():
        log.info("clean-fid: %s", captured.getvalue().strip())
    return float(value)
