"""Test potentials K ≥ 0 with K(0) = 0 and a known learning coefficient, for samplers."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from tms_slt.theory.coefficients import (
    _check_exponents,
    _check_int,
    dln_learning_coefficient,
    normal_crossing_learning_coefficient,
    regular_learning_coefficient,
    sum_of_normal_crossings_learning_coefficient,
)

# ---------------------------------------------------------------------------------------
# Test potentials for samplers
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Potential:
    """A population loss minus its minimum, K(w) ≥ 0 with K(0) = 0, and its known λ.

    ``fn`` maps ``w: Tensor (..., dim)`` to ``K(w): Tensor (...)``; call the potential itself
    (``K(w)``), which checks the trailing dimension. Used by the LLC estimator tests: with K
    as the loss, λ̂ = nβ E[K] under the tempered posterior ∝ exp(−nβ K) tends to
    ``learning_coefficient`` as nβ → ∞ (exactly d/2 for the quadratic); ``multiplicity`` is
    the order m of the zeta function's pole at −λ, or None where it is not known.
    """

    dim: int
    learning_coefficient: float
    fn: Callable[[Tensor], Tensor]
    multiplicity: int | None = 1
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


def dln_anchor(widths: Sequence[int], rank: int, seed: int = 0) -> list[Tensor]:
    """Layers W*_j = U_{j+1} U_jᵀ (j = 1, …, M) of a deep linear network with true rank r.

    U_j is an H_j × r matrix with orthonormal columns (the first r columns of the Q factor
    of a seeded Gaussian H_j × H_j matrix). Every layer has rank r and (for r ≥ 1) operator
    norm 1, the product W₀ = W*_M ⋯ W*_1 = U_{M+1}U_1ᵀ has rank r and all singular values 1,
    and no layer carries anything outside the r-dimensional signal: the point is among the
    most singular true parameters, where the local learning coefficient equals Aoyagi's
    global one (Aoyagi 2024, Theorem 1). Returns the M layers, layer j of shape
    (H_{j+1}, H_j), in float32.
    """
    widths = [_check_int(f"widths[{j}]", h, 1) for j, h in enumerate(widths)]
    if len(widths) < 2:
        raise ValueError(f"a linear network needs at least 2 widths (input, output), got {widths}")
    rank = _check_int("rank", rank, 0)
    if rank > min(widths):
        raise ValueError(f"true rank {rank} exceeds the smallest width {min(widths)}")
    g = torch.Generator().manual_seed(seed)
    bases = [torch.linalg.qr(torch.randn(h, h, generator=g))[0][:, :rank] for h in widths]
    return [bases[j + 1] @ bases[j].T for j in range(len(widths) - 1)]


def dln_potential(widths: Sequence[int], rank: int, seed: int = 0) -> Potential:
    """Population loss of a realizable deep linear network around its most singular true
    parameter; λ = :func:`dln_learning_coefficient` (Aoyagi 2024, Theorem 1).

    The network x ↦ W_M ⋯ W_1 x (widths H_1 input, …, H_{M+1} output) is fitted to noise-free
    y = W₀x with x ~ N(0, I), so the population squared error is
    E‖(W_M⋯W_1 − W₀)x‖² = ‖W_M⋯W_1 − W₀‖²_F. The coordinates w = (vec V_1, …, vec V_M)
    (row-major, layer by layer; ``dim`` = Σ_j H_{j+1}H_j) are the displacement from the
    anchor W*_j of :func:`dln_anchor` (same widths, rank and seed), so that the sampler's
    anchor is w = 0 as for every potential:

        K(w) = ‖(W*_M + V_M) ⋯ (W*_1 + V_1) − W₀‖²_F,   W₀ = W*_M ⋯ W*_1,

    so K ≥ 0 and K(0) = 0, and K is the expected loss of ``nn.Sequential`` bias-free
    ``nn.Linear`` layers minus its minimum. For r ≥ 1 its Hessian at 0 has largest
    eigenvalue 2M (scaling every layer together), the scale for a step size. λ is that of
    the regression model (K is its Kullback-Leibler divergence up to a factor): Aoyagi
    2024, "Consideration on the learning efficiency of multiple-layered neural networks with
    linear units", Neural Networks 172, Theorem 1; deep linear networks are the LLC ground
    truth of Lau et al. 2023 (arXiv 2308.12108). The multiplicity is not known in closed form
    here: ``multiplicity`` is None.
    """
    lam = dln_learning_coefficient(widths, rank)  # also validates widths and rank
    anchor = dln_anchor(widths, rank, seed)
    target = functools.reduce(lambda acc, layer: layer @ acc, anchor)
    shapes = [tuple(layer.shape) for layer in anchor]
    sizes = [a * b for a, b in shapes]

    def fn(w: Tensor) -> Tensor:
        lead = w.shape[:-1]
        product = None
        for part, layer, shape in zip(torch.split(w, sizes, dim=-1), anchor, shapes, strict=True):
            wj = layer.to(w) + part.reshape(*lead, *shape)
            product = wj if product is None else wj @ product
        diff = product - target.to(w)
        return (diff * diff).sum(dim=(-2, -1))

    return Potential(
        dim=sum(sizes),
        learning_coefficient=lam,
        fn=fn,
        multiplicity=None,
        name=f"dln(widths={list(widths)}, rank={rank}, seed={seed})",
    )
