"""Test potentials K ≥ 0 with K(0) = 0 and a known learning coefficient, for samplers."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from tms_slt.theory.coefficients import (
    _check_exponents,
    _check_int,
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
