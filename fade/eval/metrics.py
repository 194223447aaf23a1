"""The metric definitions of DESIGN.md section 3, in one place, as plain functions.

H (the seed paper's primary metric) balances erasure and fidelity:
E = 1 − Acc, F = ½ (CLIP / CLIP_orig + max(FID_orig − (FID − FID_orig), 0) / FID_orig),
H = 2EF / (E + F), reported ×100. On the toy world CLIP is prompt adherence and FID is FD_toy.
"""

from __future__ import annotations

import math


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
