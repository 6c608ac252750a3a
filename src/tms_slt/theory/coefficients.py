"""Closed-form learning coefficients: regular models, reduced-rank regression, deep linear
networks (Aoyagi) and normal crossings. Pure functions of integers, in exact arithmetic
where the formula allows it."""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from itertools import combinations
from typing import Any

import numpy as np


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


# ---------------------------------------------------------------------------------------
# Regular models, reduced-rank regression, deep linear networks
# ---------------------------------------------------------------------------------------


def regular_learning_coefficient(d: int) -> float:
    """Learning coefficient of a regular model with ``d`` parameters: λ = d/2.

    Regular (identifiable, non-degenerate Fisher information) models have λ = d/2 and
    multiplicity 1 (Watanabe 2009, "Algebraic Geometry and Statistical Learning Theory").
    """
    return _check_int("d", d, 1) / 2


def rrr_learning_coefficient(M: int, H: int, N: int, r: int) -> float:
    """Learning coefficient of reduced-rank regression y = BAx (Aoyagi & Watanabe 2005).

    A is H × M, B is N × H (input M, hidden H, output N), the true map has rank
    r ≤ min(M, H, N). Main theorem of Aoyagi & Watanabe 2005 (Neural Networks 18(7)):

    * if N + r ≤ M + H, M + r ≤ N + H and H + r ≤ M + N:
      λ = [2(H + r)(M + N) − (M − N)² − (H + r)²]/8, plus 1/8 when M + H + N + r is odd;
    * else if M + H < N + r: λ = (HM − Hr + Nr)/2;
    * else if N + H < M + r: λ = (HN − Hr + Mr)/2;
    * else (M + N < H + r): λ = MN/2.

    Raises:
        ValueError: a non-positive dimension, negative r, or r > min(M, H, N).
    """
    M, H, N = (_check_int(name, v, 1) for name, v in (("M", M), ("H", H), ("N", N)))
    r = _check_int("r", r, 0)
    if r > min(M, H, N):
        raise ValueError(f"true rank r={r} exceeds min(M, H, N)={min(M, H, N)}")
    if N + r <= M + H and M + r <= N + H and H + r <= M + N:
        num = 2 * (H + r) * (M + N) - (M - N) ** 2 - (H + r) ** 2
        if (M + H + N + r) % 2 == 1:
            num += 1
        return num / 8
    if M + H < N + r:
        return (H * M - H * r + N * r) / 2
    if N + H < M + r:
        return (H * N - H * r + M * r) / 2
    return M * N / 2


def _sigma_conditions(deltas: Sequence[int], sigma: Sequence[int]) -> bool:
    """The three conditions of Aoyagi 2024, Theorem 1, for the index set ``sigma``.

    With l + 1 = |Σ| ≥ 2, S = Σ_{j∈Σ} Δ_j: (i) max_Σ Δ < min_{∉Σ} Δ, (ii) S ≥ l·max_Σ Δ,
    (iii) S < l·min_{∉Σ} Δ; (i) and (iii) hold vacuously when Σ is every index.
    """
    inside = [deltas[j] for j in sigma]
    outside = [deltas[j] for j in range(len(deltas)) if j not in set(sigma)]
    ell = len(inside) - 1
    if ell < 1:
        return False
    total = sum(inside)
    if total < ell * max(inside):
        return False
    if outside:
        if not max(inside) < min(outside):
            return False
        if not total < ell * min(outside):
            return False
    return True


def _aoyagi_sigma(deltas: Sequence[int]) -> list[int]:
    """The index set Σ of Aoyagi 2024, Theorem 1, found by a linear scan.

    Condition (i) forces Σ to be the l + 1 smallest Δ's (and forbids cutting through a tie),
    so it suffices to try, for l + 1 = 2, …, len(Δ), the l + 1 smallest. Raises
    ``RuntimeError`` if no candidate satisfies all three conditions (never silently returns).
    """
    order = sorted(range(len(deltas)), key=lambda j: deltas[j])
    for size in range(2, len(deltas) + 1):
        sigma = order[:size]
        if _sigma_conditions(deltas, sigma):
            return sorted(sigma)
    raise RuntimeError(
        f"no index set Σ satisfies the conditions of Aoyagi 2024, Theorem 1, for Δ={list(deltas)}"
    )


def _aoyagi_lambda(widths: Sequence[int], rank: int, sigma: Sequence[int]) -> Fraction:
    """λ of Aoyagi 2024, Theorem 1, for a given valid Σ, in exact rational arithmetic."""
    deltas = [h - rank for h in widths]
    inside = [deltas[j] for j in sigma]
    ell = len(inside) - 1
    S = sum(inside)
    a = S - ell * (-(-S // ell) - 1)  # a = S − l(⌈S/l⌉ − 1), so 0 < a ≤ l
    pair_sum = sum(x * y for x, y in combinations(inside, 2))
    return (
        Fraction(-(rank**2) + rank * (widths[0] + widths[-1]), 2)
        + Fraction(a * (ell - a), 4 * ell)
        - Fraction(ell * (ell - 1), 4) * Fraction(S, ell) ** 2
        + Fraction(pair_sum, 2)
    )


def dln_learning_coefficient(widths: Sequence[int], rank: int) -> float:
    """Learning coefficient of a deep linear network (Aoyagi 2024, Theorem 1).

    The network is x ↦ W_M ⋯ W_1 x with widths H_1 (input), …, H_{M+1} (output); the true
    map has rank r ≤ min_j H_j. With Δ_j = H_j − r, let Σ be the set of l + 1 ≥ 2 indices
    with max_Σ Δ < min_{∉Σ} Δ, S = Σ_{σ∈Σ} Δ_σ ≥ l·max_Σ Δ and S < l·min_{∉Σ} Δ (the
    conditions on indices outside Σ hold vacuously when Σ is everything). With
    a = S − l(⌈S/l⌉ − 1):

        λ = (−r² + r(H_1 + H_{M+1}))/2 + a(l − a)/(4l) − l(l − 1)/4 · (S/l)²
            + ½ Σ_{i<j in Σ} Δ_i Δ_j.

    Σ is found by a linear scan over the l + 1 smallest Δ's (:func:`_aoyagi_sigma`); a
    singleton is never accepted. Checks (tested): a single layer (two widths) gives
    H_1 H_2 / 2 for every rank (a regular model), and three widths [M, H, N] agree with
    :func:`rrr_learning_coefficient` (M, H, N, r).

    Raises:
        ValueError: fewer than two widths, a non-positive width, a negative rank or a rank
            above the smallest width.
        RuntimeError: no valid Σ (cannot happen for valid input; never silently ignored).
    """
    widths = list(widths)
    if len(widths) < 2:
        raise ValueError(f"a linear network needs at least 2 widths (input, output), got {widths}")
    for j, h in enumerate(widths):
        _check_int(f"widths[{j}]", h, 1)
    widths = [int(h) for h in widths]
    rank = _check_int("rank", rank, 0)
    if rank > min(widths):
        raise ValueError(f"true rank {rank} exceeds the smallest width {min(widths)}")
    deltas = [h - rank for h in widths]
    sigma = _aoyagi_sigma(deltas)
    return float(_aoyagi_lambda(widths, rank, sigma))


# ---------------------------------------------------------------------------------------
# Normal crossings
# ---------------------------------------------------------------------------------------


def _check_exponents(exponents: Sequence[int]) -> list[int]:
    ks = list(exponents)
    if not ks:
        raise ValueError("need at least one exponent")
    for i, k in enumerate(ks):
        _check_int(f"exponents[{i}]", k, 0)
    ks = [int(k) for k in ks]
    if all(k == 0 for k in ks):
        raise ValueError(
            "all exponents are zero: K ≡ 1 has no zero set, so it has no learning coefficient"
        )
    return ks


def normal_crossing_learning_coefficient(exponents: Sequence[int]) -> tuple[float, int]:
    """λ and multiplicity m of the normal crossing K(w) = Π_i w_i^{2k_i} at w = 0.

    The zeta function ∫ K(w)^z φ(w) dw (φ > 0 near 0) has its largest pole at
    z = −λ with λ = min_{i: k_i>0} 1/(2k_i), of order m = #{i : 1/(2k_i) = λ}
    (Watanabe 2009, "Algebraic Geometry and Statistical Learning Theory", §2.4).

    A variable with k_i = 0 does not appear in K: it is a flat direction that contributes a
    finite factor ∫ φ dw_i and no pole, so it changes neither λ nor m (it is ignored here;
    the λ returned is the RLCT of K alone, the quantity an estimator localized at w* = 0
    recovers).

    Raises:
        ValueError: an empty list, a negative or non-integer exponent, or all exponents 0.
    """
    ks = [k for k in _check_exponents(exponents) if k > 0]
    lam = Fraction(1, 2 * max(ks))  # min_i 1/(2k_i): the largest exponent wins
    mult = sum(1 for k in ks if Fraction(1, 2 * k) == lam)
    return float(lam), mult


def sum_of_normal_crossings_learning_coefficient(groups: Sequence[Sequence[int]]) -> float:
    """λ of K(w) = Σ_g Π_{i∈g} w_i^{2k_i} over disjoint groups g of variables.

    The groups share no variable, so near 0 the sub-level set {K < ε} is, up to constants,
    the product of the groups' sub-level sets and λ = Σ_g λ_g, with λ_g from
    :func:`normal_crossing_learning_coefficient` (REFERENCES.md: "sums over disjoint
    variables add"; Watanabe 2009).

    Raises:
        ValueError: no groups, or a group that is invalid for
            :func:`normal_crossing_learning_coefficient`.
    """
    groups = list(groups)
    if not groups:
        raise ValueError("need at least one group of exponents")
    return float(sum(normal_crossing_learning_coefficient(g)[0] for g in groups))
