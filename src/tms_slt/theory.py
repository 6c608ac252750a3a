"""Closed forms that tms-slt is tested against: learning coefficients and k-gon losses.

Everything here is a pure function of integers or of a few floats (plain Python / numpy /
scipy), except :class:`Potential`, whose ``__call__`` is torch so that a sampler can use it
as "loss minus its minimum".

Contents and sources (see ``/work/shared/REFERENCES.md``):

* :func:`regular_learning_coefficient`: regular model, λ = d/2 (Watanabe 2009).
* :func:`rrr_learning_coefficient`: reduced-rank regression, Aoyagi & Watanabe 2005,
  "Stochastic complexities of reduced rank regression in Bayesian estimation",
  Neural Networks 18(7).
* :func:`dln_learning_coefficient`: deep linear networks, Aoyagi 2024, "Consideration on
  the learning efficiency of multiple-layered neural networks with linear units",
  Neural Networks 172, Theorem 1 (as quoted in Lau et al. 2023, arXiv 2308.12108).
* :func:`normal_crossing_learning_coefficient`,
  :func:`sum_of_normal_crossings_learning_coefficient`: monomial potentials (Watanabe
  2009, "Algebraic Geometry and Statistical Learning Theory", the normal-crossing case).
* :class:`Potential`, :func:`quadratic_potential`, :func:`normal_crossing_potential`,
  :func:`sum_of_normal_crossings_potential`: test potentials K ≥ 0, K(0) = 0, with known λ.
* :func:`tms_population_loss`, :func:`tms_population_loss_torch`, :func:`kgon_solution`,
  :func:`kgon_critical_point`, :func:`kgon_loss`: the exact high-sparsity TMS loss and its
  regular k-gon critical points (Chen, Lau, Mendel, Wei, Murfet 2023, "Dynamical versus
  Bayesian phase transitions in a toy model of superposition", arXiv 2310.06301).

There is deliberately no ``kgon_llc``: the local learning coefficients of the k-gons in
Chen et al. could not be checked against the paper's text, and guessed numbers have no place
in a module that tests are held to.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from itertools import combinations
from typing import Any

import numpy as np
import scipy.optimize
import torch
from torch import Tensor

__all__ = [
    "KGonSolution",
    "Potential",
    "dln_learning_coefficient",
    "kgon_critical_point",
    "kgon_loss",
    "kgon_solution",
    "normal_crossing_learning_coefficient",
    "normal_crossing_potential",
    "quadratic_potential",
    "regular_learning_coefficient",
    "rrr_learning_coefficient",
    "sum_of_normal_crossings_learning_coefficient",
    "sum_of_normal_crossings_potential",
    "tms_population_loss",
    "tms_population_loss_torch",
]


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


# ---------------------------------------------------------------------------------------
# Test potentials for samplers
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Potential:
    """A population loss minus its minimum, K(w) ≥ 0 with K(0) = 0, and its known λ.

    ``fn`` maps ``w: Tensor (..., dim)`` to ``K(w): Tensor (...)``; call the potential itself
    (``K(w)``), which checks the trailing dimension. Used by the LLC estimator tests: with K
    as the loss, λ̂ = nβ E[K] under the tempered posterior ∝ exp(−nβ K) tends to
    ``learning_coefficient`` as nβ → ∞ (exactly d/2 for the quadratic).
    """

    dim: int
    learning_coefficient: float
    fn: Callable[[Tensor], Tensor]
    multiplicity: int = 1
    name: str = ""

    def __call__(self, w: Tensor) -> Tensor:
        if w.shape[-1:] != (self.dim,):
            raise ValueError(
                f"potential {self.name!r} expects w of shape (..., {self.dim}), "
                f"got {tuple(w.shape)}"
            )
        return self.fn(w)


def quadratic_potential(d: int, curvature: float = 1.0) -> Potential:
    """K(w) = (curvature/2) ‖w‖², a regular model: λ = d/2, multiplicity 1.

    Under exp(−nβ K) the coordinates are N(0, 1/(nβ·curvature)), so nβ E[K] = d/2 for every
    nβ > 0 (the ideal case for the λ̂ = nβ E[K] estimator).
    """
    d = _check_int("d", d, 1)
    if not (math.isfinite(curvature) and curvature > 0):
        raise ValueError(f"curvature must be positive and finite, got {curvature}")
    c = float(curvature)

    def fn(w: Tensor) -> Tensor:
        return 0.5 * c * (w * w).sum(dim=-1)

    return Potential(
        dim=d,
        learning_coefficient=regular_learning_coefficient(d),
        fn=fn,
        name=f"quadratic(d={d}, curvature={c})",
    )


def normal_crossing_potential(exponents: Sequence[int]) -> Potential:
    """K(w) = Π_i w_i^{2k_i}, λ and multiplicity from :func:`normal_crossing_learning_coefficient`.

    ``dim = len(exponents)``; variables with k_i = 0 are flat directions of K.
    """
    ks = _check_exponents(exponents)
    lam, mult = normal_crossing_learning_coefficient(ks)
    powers = torch.tensor([2 * k for k in ks], dtype=torch.int64)

    def fn(w: Tensor) -> Tensor:
        return torch.pow(w, powers.to(w.device)).prod(dim=-1)

    return Potential(
        dim=len(ks),
        learning_coefficient=lam,
        fn=fn,
        multiplicity=mult,
        name=f"normal_crossing({ks})",
    )


def sum_of_normal_crossings_potential(groups: Sequence[Sequence[int]]) -> Potential:
    """K(w) = Σ_g Π_{i∈g} w_i^{2k_i}, the groups occupying consecutive disjoint coordinates.

    λ from :func:`sum_of_normal_crossings_learning_coefficient` (λ's add). The multiplicity
    is 1 + Σ_g (m_g − 1) (the orders of the groups' largest poles add up in the product).
    """
    checked = [_check_exponents(g) for g in groups]
    if not checked:
        raise ValueError("need at least one group of exponents")
    lam = sum_of_normal_crossings_learning_coefficient(checked)
    mult = 1 + sum(normal_crossing_learning_coefficient(g)[1] - 1 for g in checked)
    sizes = [len(g) for g in checked]
    powers = torch.tensor([2 * k for g in checked for k in g], dtype=torch.int64)

    def fn(w: Tensor) -> Tensor:
        monomials = torch.pow(w, powers.to(w.device))
        return sum(part.prod(dim=-1) for part in torch.split(monomials, sizes, dim=-1))

    return Potential(
        dim=sum(sizes),
        learning_coefficient=lam,
        fn=fn,
        multiplicity=mult,
        name=f"sum_of_normal_crossings({checked})",
    )


# ---------------------------------------------------------------------------------------
# TMS in the high-sparsity limit (Chen et al. 2023)
# ---------------------------------------------------------------------------------------


def _relu_affine_moments(a: Any, b: Any, xp: Any) -> tuple[Any, Any]:
    """Q = ∫_0^1 ReLU(at + b)² dt and P = ∫_0^1 t·ReLU(at + b) dt, elementwise.

    at + b > 0 on an interval [t0, t1] ⊆ [0, 1] split at the kink t = −b/a: [clip(−b/a), 1]
    for a > 0, [0, clip(−b/a)] for a < 0, [0, 1] or ∅ for a = 0 by the sign of b. On it,
    Q = a²(t1³ − t0³)/3 + ab(t1² − t0²) + b²(t1 − t0), P = a(t1³ − t0³)/3 + b(t1² − t0²)/2
    (expanded so that a → 0 is stable; the integrands vanish at the kink, so these are C¹
    and autograd through them is exact).
    """
    zero = a == 0
    a_safe = xp.where(zero, xp.ones_like(a), a)
    s = xp.clip(-b / a_safe, 0.0, 1.0)
    t0 = xp.where(a > 0, s, xp.zeros_like(s))
    t1 = xp.where(a < 0, s, xp.ones_like(s))
    t1 = xp.where(zero, xp.where(b > 0, xp.ones_like(s), xp.zeros_like(s)), t1)
    d1 = t1 - t0
    d2 = t1 * t1 - t0 * t0
    d3 = t1 * t1 * t1 - t0 * t0 * t0
    Q = a * a * d3 / 3 + a * b * d2 + b * b * d1
    P = a * d3 / 3 + b * d2 / 2
    return Q, P


def _population_loss(W: Any, b: Any, xp: Any) -> Any:
    if W.ndim < 2:
        raise ValueError(f"W must have shape (..., m, c), got {tuple(W.shape)}")
    if b.shape[-1:] != W.shape[-1:]:
        raise ValueError(f"b must have shape (..., {W.shape[-1]}), got {tuple(b.shape)}")
    G = xp.einsum("...ki,...kj->...ij", W, W)  # G[i, j] = W_i · W_j
    Q, _ = _relu_affine_moments(G, b[..., None, :], xp)  # input i, output j: ReLU(G_ij t + b_j)
    diag = xp.einsum("...ii->...i", G)
    _, P = _relu_affine_moments(diag, b, xp)
    per_input = 1.0 / 3.0 - 2.0 * P + Q.sum(-1)
    return per_input.mean(-1)


def tms_population_loss_torch(W: Tensor, b: Tensor) -> Tensor:
    """Differentiable, batched torch version of :func:`tms_population_loss`.

    ``W: (..., m, c)``, ``b: (..., c)`` (broadcast over leading dims) → loss ``(...)``.
    """
    return _population_loss(W, b, torch)


def tms_population_loss(W: Any, b: Any) -> float | np.ndarray:
    """Exact TMS loss in the high-sparsity limit (Chen et al. 2023, arXiv 2310.06301).

    L(W, b) = E_x ‖x − ReLU(WᵀWx + b)‖² where x = t e_i, i uniform on {1, …, c} and
    t ~ U[0, 1]. Output j is ReLU(a_ij t + b_j) with a_ij = W_i · W_j, so

        L = (1/c) Σ_i [ 1/3 − 2 ∫_0^1 t ReLU(a_ii t + b_i) dt + Σ_j ∫_0^1 ReLU(a_ij t + b_j)² dt ],

    each integral in closed form (split at the kink t = −b/a; :func:`_relu_affine_moments`).

    Args:
        W: numpy or torch array ``(..., m, c)`` (m hidden dims; m = 2 in Chen et al.).
        b: ``(..., c)``.

    Returns:
        A float for unbatched input, else a float64 numpy array of the leading shape. Use
        :func:`tms_population_loss_torch` for a differentiable tensor.
    """
    if isinstance(W, Tensor) or isinstance(b, Tensor):
        W = torch.as_tensor(W).detach().to(torch.float64).cpu()
        b = torch.as_tensor(b).detach().to(torch.float64).cpu()
        out = np.asarray(tms_population_loss_torch(W, b).numpy())
    else:
        W = np.asarray(W, dtype=np.float64)
        b = np.asarray(b, dtype=np.float64)
        out = np.asarray(_population_loss(W, b, np))
    return float(out) if out.ndim == 0 else out


@dataclass(frozen=True)
class KGonSolution:
    """A regular k-gon critical point of the high-sparsity TMS loss (c features, m = 2).

    Columns i < k are ``length`` · (cos 2πi/k, sin 2πi/k) with bias ``bias`` (b*); columns
    i ≥ k are zero with biases ``unrepresented_biases`` (signs given by ``variant``).
    ``label`` follows :mod:`tms_slt.geometry` (e.g. ``"5+"``, ``"4+-"``, ``"6"``).
    """

    k: int
    c: int
    variant: str
    length: float
    bias: float
    unrepresented_biases: tuple[float, ...]
    loss: float

    @property
    def label(self) -> str:
        return f"{self.k}{self.variant}"


def _kgon_params(
    k: int, c: int, length: Any, bias: Any, unrep: Sequence[float], xp: Any
) -> tuple[Any, Any]:
    theta = 2 * np.pi * np.arange(k) / k
    if xp is torch:
        cs = torch.tensor(np.stack([np.cos(theta), np.sin(theta)]), dtype=torch.float64)
        W = torch.cat([length * cs, torch.zeros(2, c - k, dtype=torch.float64)], dim=1)
        unrep_t = torch.tensor(list(unrep), dtype=torch.float64)
        b = torch.cat([bias * torch.ones(k, dtype=torch.float64), unrep_t])
        return W, b
    cs = np.stack([np.cos(theta), np.sin(theta)])
    W = np.concatenate([length * cs, np.zeros((2, c - k))], axis=1)
    b = np.concatenate([np.full(k, float(bias)), np.asarray(unrep, dtype=np.float64)])
    return W, b


def _parse_variant(variant: str, k: int, c: int) -> str:
    if k == c:
        if variant not in ("", "-", "+"):
            raise ValueError(
                f"k = c = {c} leaves no unrepresented feature, got variant {variant!r}"
            )
        return ""
    if variant in ("-", "+"):
        return variant * (c - k)
    if len(variant) != c - k or any(s not in "+-" for s in variant):
        raise ValueError(
            f"variant must be '-', '+' or {c - k} characters from '+-' (one per unrepresented "
            f"feature), got {variant!r}"
        )
    return "".join(sorted(variant))  # "+" sorts before "-": the geometry label order


@lru_cache(maxsize=256)
def kgon_solution(
    k: int, c: int = 6, bias: float | str = "auto", variant: str = "-"
) -> KGonSolution:
    """The regular k-gon critical point of the high-sparsity TMS (Chen et al. 2023).

    The k represented columns have common length l and bias b*; the c − k others are zero.
    Their biases do not interact with (l, b*): a zero column i with bias β contributes
    (1/c)(1/3 − β⁺ + c(β⁺)²) to the loss (its own reconstruction 1/3 − β⁺ + (β⁺)², plus
    the constant output (β⁺)² on each of the other c − 1 inputs). Hence

    * ``"-"``: β < 0 (we use β = −1/(2c)); the loss is locally constant in β, and
      (W_i, β) = (0, β) is critical for any β < 0 (Chen et al.'s "−" variants);
    * ``"+"``: β = 1/(2c), the minimiser of that term, lowering the loss by 1/(4c²) per
      feature; critical because Σ_i W_i = 0 for a regular k-gon (k ≥ 2).

    (l, b*) minimise :func:`tms_population_loss` over the symmetric family (scipy BFGS on
    the exact loss with autograd gradients; b* constrained to ≤ 0). For k ≤ 4 no two
    represented columns have a positive inner product, reconstruction is exact and
    (l, b*) = (1, 0) exactly. By the dihedral symmetry the gradient at a symmetric point is
    radial in each column and equal across represented biases, so a stationary point of
    the reduced (l, b*) loss is a critical point of the full loss (tested by finite
    differences).

    Args:
        k: number of represented features, 2 ≤ k ≤ c.
        c: number of features.
        bias: ``"auto"`` to optimise b*, or a float to fix b* (then only l is optimised,
            and the point is critical in W but not necessarily in b).
        variant: ``"-"``, ``"+"`` (all unrepresented biases of that sign) or one sign per
            unrepresented feature, e.g. ``"+-"`` for k = 4, c = 6.
    """
    c = _check_int("c", c, 2)
    k = _check_int("k", k, 2)
    if k > c:
        raise ValueError(f"need 2 <= k <= c, got k={k}, c={c}")
    signs = _parse_variant(variant, k, c)
    unrep = tuple(1.0 / (2 * c) if s == "+" else -1.0 / (2 * c) for s in signs)
    fixed_bias = None
    if isinstance(bias, str):
        if bias != "auto":
            raise ValueError(f"bias must be 'auto' or a float, got {bias!r}")
    else:
        fixed_bias = float(bias)
        if not math.isfinite(fixed_bias):
            raise ValueError(f"bias must be finite, got {bias}")

    if math.cos(2 * math.pi / k) <= 1e-12 and (fixed_bias is None or fixed_bias == 0.0):
        length, b_star = 1.0, 0.0
    else:
        length, b_star = _optimise_kgon(k, c, unrep, fixed_bias)
    W, b = _kgon_params(k, c, length, b_star, unrep, np)
    return KGonSolution(
        k=k,
        c=c,
        variant=signs,
        length=length,
        bias=b_star,
        unrepresented_biases=unrep,
        loss=float(tms_population_loss(W, b)),
    )


def _optimise_kgon(
    k: int, c: int, unrep: Sequence[float], fixed_bias: float | None
) -> tuple[float, float]:
    """Minimise the exact loss over (l, b*) (or l alone when b* is fixed), then polish."""

    def reduced(x: Tensor) -> Tensor:
        b_star = x[1] if fixed_bias is None else torch.tensor(fixed_bias, dtype=torch.float64)
        W, b = _kgon_params(k, c, x[0], b_star, unrep, torch)
        return _population_loss(W, b, torch)

    def loss_and_grad(x: np.ndarray) -> tuple[float, np.ndarray]:
        p = torch.tensor(x, dtype=torch.float64, requires_grad=True)
        value = reduced(p)
        (grad,) = torch.autograd.grad(value, p)
        return value.item(), grad.numpy()

    n_free = 2 if fixed_bias is None else 1
    best = None
    for b0 in (0.0, -0.05, -0.2, -0.6):
        x0 = np.array([1.0, b0])[:n_free]
        res = scipy.optimize.minimize(
            loss_and_grad,
            x0,
            jac=True,
            method="L-BFGS-B",
            bounds=[(1e-3, 10.0), (None, 0.0)][:n_free],
            options={"ftol": 1e-16, "gtol": 1e-13, "maxiter": 2000},
        )
        if best is None or res.fun < best.fun:
            best = res
    assert best is not None
    x = np.asarray(best.x, dtype=np.float64)
    # Newton polish on the (C², away from kinks) reduced loss, kept only while it helps and
    # stays in the feasible region b* <= 0.
    for _ in range(20):
        _, g = loss_and_grad(x)
        if np.linalg.norm(g) < 1e-14:
            break
        hess = torch.autograd.functional.hessian(reduced, torch.tensor(x, dtype=torch.float64))
        try:
            step = np.linalg.solve(hess.numpy(), g)
        except np.linalg.LinAlgError:
            break
        x_new = x - step
        if n_free == 2 and x_new[1] > 0:
            break
        if np.linalg.norm(loss_and_grad(x_new)[1]) >= np.linalg.norm(g):
            break
        x = x_new
    length = float(x[0])
    b_star = float(x[1]) if fixed_bias is None else fixed_bias
    return length, b_star


def kgon_critical_point(
    k: int, c: int = 6, bias: float | str = "auto", variant: str = "-"
) -> tuple[np.ndarray, np.ndarray]:
    """``(W, b)`` of the regular k-gon critical point: W ``(2, c)``, b ``(c,)`` (float64).

    Columns 0..k−1 form the k-gon (column i at angle 2πi/k), the rest are zero; see
    :func:`kgon_solution` for the bias conventions and how l and b* are found.
    """
    sol = kgon_solution(k, c, bias, variant)
    return _kgon_params(k, c, sol.length, sol.bias, sol.unrepresented_biases, np)


def kgon_loss(k: int, c: int = 6, bias: float | str = "auto", variant: str = "-") -> float:
    """Exact high-sparsity TMS loss at the regular k-gon critical point (:func:`kgon_solution`).

    For k ≤ 4 and the "−" variant this is (c − k)/(3c): the k features are reconstructed
    exactly and each of the c − k others costs E[t²] = 1/3.
    """
    return kgon_solution(k, c, bias, variant).loss
