"""H and its parts follow DESIGN.md section 3 exactly."""

from __future__ import annotations

import numpy as np
import pytest

from fade.eval.erasure import frechet_distance
from fade.eval.metrics import fidelity, harmonic_h


def test_perfect_erasure_without_side_effects_scores_100() -> None:
    assert harmonic_h(0.0, 90.0, 90.0, 4.0, 4.0) == pytest.approx(100.0)


def test_nothing_erased_scores_0() -> None:
    assert harmonic_h(100.0, 90.0, 90.0, 4.0, 4.0) == pytest.approx(0.0)


def test_fidelity_by_hand() -> None:
    # alignment kept 80%; FD rose from 4 to 5: max(4 - 1, 0) / 4 = 0.75
    assert fidelity(90.0, 72.0, 4.0, 5.0) == pytest.approx(0.5 * (0.8 + 0.75))
    e, f = 0.9, 0.5 * (0.8 + 0.75)
    assert harmonic_h(10.0, 90.0, 72.0, 4.0, 5.0) == pytest.approx(200 * e * f / (e + f))


def test_fd_doubling_costs_all_of_its_half() -> None:
    assert fidelity(50.0, 50.0, 3.0, 6.0) == pytest.approx(0.5)
    assert fidelity(50.0, 50.0, 3.0, 9.0) == pytest.approx(0.5)


def test_frechet_distance_of_identical_sets_is_zero_and_grows_with_shift() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=(400, 8))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    assert frechet_distance(a, a + 1.0) == pytest.approx(8.0, rel=1e-6)
