"""The metric definitions of DESIGN.md section 3, in one place, as plain functions.

H (the seed paper's primary metric) balances erasure and fidelity:
E = 1 − Acc, F = ½ (CLIP / CLIP_orig + max(FID_orig − (FID − FID_orig), 0) / FID_orig),
H = 2EF / (E + F), reported ×100. On the toy world CLIP is prompt adherence and FID is FD_toy.

MACE's variants (Lu et al., "MACE: Mass Concept Erasure in Diffusion Models", CVPR 2024), all
on the erased model, accuracies in %:

- H_o (objects): harmonic mean of efficacy 1 − Acc_target, generality 1 − Acc_synonyms and
  specificity Acc_retained, ×100;
- H_c (celebrities): harmonic mean of efficacy 1 − Acc_target and specificity Acc_retained, ×100;
- H_a (artistic styles): CLIP_s − CLIP_e, the alignment score on retained prompts minus the
  alignment score on the erased concepts' prompts (a difference, not a harmonic mean; higher
  is better; in the alignment metric's own units).

A harmonic mean is 0 as soon as one of its terms is 0 (nothing erased, or nothing kept).
"""

from __future__ import annotations

import math
from collections.abc import Mapping


def fidelity(align_before: float, align_after: float, fd_before: float, fd_after: float) -> float:
    """F in [0, 1]-ish: alignment kept and distribution shift avoided, equally weighted."""
    if align_before <= 0 or fd_before <= 0:
        raise ValueError("alignment and FD before erasure must be positive")
    kept = align_after / align_before
    shift = max(fd_before - (fd_after - fd_before), 0.0) / fd_before
    return 0.5 * (kept + shift)


def harmonic_h(
    acc_after: float, align_before: float, align_after: float, fd_before: float, fd_after: float
) -> float:
    """H ×100 from target Acc after erasure (in %), alignment and FD before/after."""
    erasure = 1.0 - acc_after / 100.0
    fid = fidelity(align_before, align_after, fd_before, fd_after)
    if erasure + fid <= 0:
        return 0.0
    value = 2 * erasure * fid / (erasure + fid) * 100
    return 0.0 if math.isnan(value) else value


def harmonic_mean(*terms: float) -> float:
    """Harmonic mean of terms in [0, 1]; 0 when any term is 0 (its limit)."""
    if not terms:
        raise ValueError("harmonic mean of nothing")
    if any(t < 0 for t in terms):
        raise ValueError(f"harmonic mean needs non-negative terms, got {terms}")
    if any(t == 0 for t in terms):
        return 0.0
    return len(terms) / sum(1.0 / t for t in terms)


def h_objects(acc_target: float, acc_synonyms: float, acc_retained: float) -> float:
    """MACE's H_o ×100: efficacy, generality and specificity from accuracies in %."""
    return 100 * harmonic_mean(1 - acc_target / 100, 1 - acc_synonyms / 100, acc_retained / 100)


def h_celebrities(acc_target: float, acc_retained: float) -> float:
    """MACE's H_c ×100: efficacy and specificity from accuracies in %."""
    return 100 * harmonic_mean(1 - acc_target / 100, acc_retained / 100)


def h_artistic(align_erased: float, align_retained: float) -> float:
    """MACE's H_a: CLIP_s − CLIP_e (alignment on retained minus on erased prompts)."""
    return align_retained - align_erased


def score_value(metrics: Mapping, key: str = "H") -> float | None:
    """The number of score `key` ("H", "H_o", ...) in a metrics.json mapping: a bare number at
    the top level (also read from a ``{"value": ...}`` entry, as the provenance under
    ``scores`` holds it)."""
    entry = metrics.get(key)
    if isinstance(entry, Mapping):
        entry = entry.get("value")
    return float(entry) if isinstance(entry, int | float) else None
