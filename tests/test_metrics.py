"""H, MACE's variants and the Fréchet distance follow DESIGN.md section 3 exactly: each is
checked against values worked out by hand from the formula (docs/evaluation.md)."""

from __future__ import annotations

import sys
import warnings

import numpy as np
import pytest
from scipy import linalg

from fade.eval.frechet import cleanfid_frechet, common_span, frechet_distance, gaussian
from fade.eval.metrics import (
    fidelity,
    h_artistic,
    h_celebrities,
    h_objects,
    harmonic_h,
    harmonic_mean,
    score_value,
)


def test_perfect_erasure_without_side_effects_scores_100() -> None:
    assert harmonic_h(0.0, 90.0, 90.0, 4.0, 4.0) == pytest.approx(100.0)


def test_nothing_erased_scores_0() -> None:
    assert harmonic_h(100.0, 90.0, 90.0, 4.0, 4.0) == pytest.approx(0.0)


def test_fidelity_by_hand() -> None:
    # alignment kept 80%; FD rose from 4 to 5: max(4 - 1, 0) / 4 = 0.75
    assert fidelity(90.0, 72.0, 4.0, 5.0) == pytest.approx(0.5 * (0.8 + 0.75))
    e, f = 0.9, 0.5 * (0.8 + 0.75)
    assert harmonic_h(10.0, 90.0, 72.0, 4.0, 5.0) == pytest.approx(200 * e * f / (e + f))


def test_h_by_hand_when_fd_falls_and_alignment_rises() -> None:
    # E = 1 - 0.40 = 0.6; F = (55/50 + (20 - (15 - 20))/20) / 2 = (1.1 + 1.25) / 2 = 1.175
    # H = 2 * 0.6 * 1.175 / (0.6 + 1.175) * 100 = 141 / 1.775 = 79.43661971...
    assert harmonic_h(40.0, 50.0, 55.0, 20.0, 15.0) == pytest.approx(79.436619718, rel=1e-9)


@pytest.mark.parametrize("fd_after", [20.0, 25.0, 1000.0])
def test_the_shift_term_is_clamped_at_zero_from_twice_the_original_fd(fd_after) -> None:
    # FD_orig = 10, FD >= 2 FD_orig: max(10 - (FD - 10), 0) = 0, so F = (60/80 + 0) / 2 = 0.375
    # E = 1 - 0.25 = 0.75; H = 2 * 0.75 * 0.375 / 1.125 * 100 = 50 exactly
    assert fidelity(80.0, 60.0, 10.0, fd_after) == pytest.approx(0.375)
    assert harmonic_h(25.0, 80.0, 60.0, 10.0, fd_after) == pytest.approx(50.0)


def test_just_below_the_clamp_the_shift_still_counts() -> None:
    # FD 19 of FD_orig 10: max(10 - 9, 0) / 10 = 0.1 -> F = (0.75 + 0.1) / 2 = 0.425
    assert fidelity(80.0, 60.0, 10.0, 19.0) == pytest.approx(0.425)


def test_fd_doubling_costs_all_of_its_half() -> None:
    assert fidelity(50.0, 50.0, 3.0, 6.0) == pytest.approx(0.5)
    assert fidelity(50.0, 50.0, 3.0, 9.0) == pytest.approx(0.5)


# --- MACE's variants (Lu et al., CVPR 2024) ----------------------------------------------------


def test_h_o_by_hand() -> None:
    # efficacy 1 - 0.1, generality 1 - 0.2, specificity 0.9:
    # 3 / (1/0.9 + 1/0.8 + 1/0.9) = 3 / (125/36) = 108/125 = 0.864
    assert h_objects(10.0, 20.0, 90.0) == pytest.approx(86.4)


def test_h_c_by_hand() -> None:
    # 2 / (1/0.8 + 1/0.6) = 2 / (35/12) = 24/35
    assert h_celebrities(20.0, 60.0) == pytest.approx(100 * 24 / 35)


def test_h_a_is_the_difference_retained_minus_erased() -> None:
    assert h_artistic(align_erased=12.5, align_retained=40.0) == pytest.approx(27.5)
    assert h_artistic(align_erased=40.0, align_retained=12.5) == pytest.approx(-27.5)


def test_a_zero_term_makes_a_harmonic_mean_zero() -> None:
    assert h_objects(100.0, 0.0, 100.0) == 0.0  # nothing erased
    assert h_objects(0.0, 0.0, 0.0) == 0.0  # nothing kept
    assert h_celebrities(0.0, 100.0) == pytest.approx(100.0)
    assert harmonic_mean(0.5, 0.5) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        harmonic_mean(-0.1, 0.5)


def test_score_value_reads_bare_numbers_and_provenance_entries() -> None:
    assert score_value({"H": {"value": 87.5, "detector": "toy"}}) == 87.5
    assert score_value({"H": 87.5}) == 87.5
    assert score_value({"H_o": {"value": 3}}, "H_o") == 3.0
    assert score_value({}, "H_a") is None


# --- the Fréchet distance (clean-fid's code) ---------------------------------------------------


def _scipy_frechet(a: np.ndarray, b: np.ndarray) -> float:
    """The FID formula written out directly with scipy."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = linalg.sqrtm(cov_a @ cov_b).real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * root))


@pytest.mark.parametrize(("n", "dim", "seed"), [(400, 8, 0), (300, 32, 1), (512, 64, 2)])
def test_frechet_distance_equals_a_direct_scipy_computation(n: int, dim: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n, dim))
    mix = rng.normal(size=(dim, dim)) / np.sqrt(dim)
    b = rng.normal(size=(n, dim)) @ mix + rng.normal(size=dim)
    assert frechet_distance(a, b) == pytest.approx(_scipy_frechet(a, b), rel=1e-7)


def test_frechet_distance_of_identical_sets_is_zero_and_grows_with_shift() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=(400, 8))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    assert frechet_distance(a, a + 1.0) == pytest.approx(8.0, rel=1e-6)


def test_singular_covariances_give_a_finite_distance() -> None:
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(20, 64)), rng.normal(size=(20, 64)) + 0.5  # rank 19 < 64
    value = frechet_distance(a, b)
    assert np.isfinite(value) and value > 0


@pytest.mark.parametrize(("n_a", "n_b", "dim", "seed"), [(20, 25, 64, 0), (12, 40, 128, 1)])
def test_fewer_images_than_dimensions_give_the_full_spaces_distance(n_a, n_b, dim, seed) -> None:
    """Below N_a + N_b + 1 < D the distance is computed on the features' span (fast); it is
    the same number clean-fid's function gives on the full-dimensional Gaussians."""
    rng = np.random.default_rng(seed)
    a = np.maximum(rng.normal(size=(n_a, dim)) + 0.3, 0)  # ReLU-like, as Inception's
    b = np.maximum(rng.normal(size=(n_b, dim)) @ rng.normal(size=(dim, dim)) / 8, 0)
    with warnings.catch_warnings():  # clean-fid passes sqrtm's deprecated disp argument
        warnings.simplefilter("ignore", DeprecationWarning)
        full = cleanfid_frechet()(*gaussian(a), *gaussian(b))
    reduced_a, reduced_b = common_span(a, b)
    assert reduced_a.shape == (n_a, n_a + n_b + 1) and reduced_b.shape == (n_b, n_a + n_b + 1)
    assert frechet_distance(a, b) == pytest.approx(full, rel=1e-6)


def test_the_function_is_clean_fids_own_and_torchvision_stays_out() -> None:
    function = cleanfid_frechet()
    assert function.__code__.co_filename.replace("\\", "/").endswith("cleanfid/fid.py")
    assert "cleanfid.fid" not in sys.modules and "torchvision" not in sys.modules
