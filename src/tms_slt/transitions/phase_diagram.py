"""Elhage et al.'s two-feature, one-dimension phase diagram in closed form.

Toy Models of Superposition (Elhage et al. 2022), section 4: n = 2 features, m = 1 hidden
dimension, x_i = 0 with probability S, else U[0, 1] independently (feature density p = 1 − S),
importances I = (1, r) (r the relative importance of feature 2), model
x' = ReLU(WᵀW x + b), W = (w_1, w_2) ∈ ℝ^{1×2}, loss L = E Σ_i I_i (x_i − x'_i)². The phases
are the three candidate optima:

* ``"feature_1"`` (feature 2 not represented): W = (1, 0), b = (0, E x_2):
  L = r·Var(x_2) = r (p/3 − p²/4);
* ``"feature_2"`` (feature 2 gets the dimension): L = Var(x_1) = p/3 − p²/4;
* ``"antipodal"`` (both, in superposition): W = (a, −c), a, c > 0, biases b_1, b_2, and
  L = L_1 + r L_2 minimised over (a, c, b_1, b_2), where with α = a², β = ac

    L_1 = (1−p)² ReLU(b_1)² + p(1−p)[1/3 − 2P(α, b_1) + Q(α, b_1)] + p(1−p) Q(−β, b_1)
          + p² ∫_0^1 [1/3 − 2P(α, b_1 − βu) + Q(α, b_1 − βu)] du,

  P(α, β₀) = ∫_0^1 t ReLU(αt + β₀) dt and Q(α, β₀) = ∫_0^1 ReLU(αt + β₀)² dt in closed form, and
  L_2 the same with (c², b_2). The u-integrand is a polynomial of degree ≤ 3 between the
  points where b_1 − βu crosses 0 and −α, so Gauss–Legendre quadrature on those pieces is
  exact (up to rounding).

The phase at (r, p) is the candidate of least loss; :func:`two_feature_boundary` bisects it.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
from torch import Tensor

from tms_slt.transitions.records import Transition
from tms_slt.transitions.sweep import refine_boundary

TWO_FEATURE_PHASES = ("feature_1", "feature_2", "antipodal")
_GL_X, _GL_W = np.polynomial.legendre.leggauss(8)


def _moments(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """(P, Q) = (∫_0^1 t ReLU(at + b) dt, ∫_0^1 ReLU(at + b)² dt), elementwise.

    at + b > 0 on [t0, t1] ⊆ [0, 1] split at the kink t = −b/a, and there
    P = a(t1³ − t0³)/3 + b(t1² − t0²)/2, Q = a²(t1³ − t0³)/3 + ab(t1² − t0²) + b²(t1 − t0).
    """
    a, b = torch.broadcast_tensors(a, b)
    zero = a == 0
    s = (-b / torch.where(zero, torch.ones_like(a), a)).clamp(0.0, 1.0)
    t0 = torch.where(a > 0, s, torch.zeros_like(s))
    t1 = torch.where(a < 0, s, torch.ones_like(s))
    t1 = torch.where(zero, (b > 0).to(s.dtype), t1)
    d1, d2, d3 = t1 - t0, t1**2 - t0**2, t1**3 - t0**3
    return a * d3 / 3 + b * d2 / 2, a * a * d3 / 3 + a * b * d2 + b * b * d1


def _recon(alpha: Tensor, b: Tensor) -> Tensor:
    """∫_0^1 (t − ReLU(αt + b))² dt, elementwise."""
    P, Q = _moments(alpha, b)
    return 1.0 / 3.0 - 2.0 * P + Q


def _both_active(alpha: Tensor, beta: Tensor, b: Tensor) -> Tensor:
    """∫_0^1 ∫_0^1 (t − ReLU(αt + b − βu))² dt du, exactly (piecewise Gauss–Legendre)."""
    safe = torch.where(beta == 0, torch.ones_like(beta), beta)
    c1 = torch.where(beta == 0, torch.zeros_like(b), (b / safe).clamp(0.0, 1.0))
    c2 = torch.where(beta == 0, torch.zeros_like(b), ((b + alpha) / safe).clamp(0.0, 1.0))
    edges, _ = torch.sort(
        torch.stack([torch.zeros_like(b), c1, c2, torch.ones_like(b)], dim=-1), dim=-1
    )
    lo, hi = edges[..., :-1, None], edges[..., 1:, None]  # (..., 3, 1)
    x = torch.as_tensor(_GL_X, dtype=b.dtype)
    w = torch.as_tensor(_GL_W, dtype=b.dtype)
    u = 0.5 * (hi - lo) * x + 0.5 * (hi + lo)  # (..., 3, nodes)
    vals = _recon(alpha[..., None, None], b[..., None, None] - beta[..., None, None] * u)
    return (0.5 * (hi - lo)[..., 0] * (vals * w).sum(-1)).sum(-1)


def _feature_loss(own: Tensor, cross: Tensor, b: Tensor, p: Tensor) -> Tensor:
    """E (x_i − ReLU(own·x_i − cross·x_j + b))² for independent sparse uniform x_i, x_j."""
    q = 1.0 - p
    return (
        q * q * b.clamp(min=0.0) ** 2
        + p * q * _recon(own, b)
        + p * q * _moments(-cross, b)[1]
        + p * p * _both_active(own, cross, b)
    )


def antipodal_loss(params: Tensor, r: Tensor | float, p: Tensor | float) -> Tensor:
    """L(W = (a, −c), b) for ``params = (..., 4)`` = (a, c, b_1, b_2), batched."""
    params = torch.as_tensor(params, dtype=torch.float64)
    r = torch.as_tensor(r, dtype=torch.float64)
    p = torch.as_tensor(p, dtype=torch.float64)
    a, c, b1, b2 = params.unbind(-1)
    return _feature_loss(a * a, a * c, b1, p) + r * _feature_loss(c * c, a * c, b2, p)


def antipodal_optimum(relative_importance: np.ndarray, density: np.ndarray) -> np.ndarray:
    """Least antipodal loss at each (r, p) (broadcast), batched L-BFGS from three starts."""
    r = torch.tensor(np.array(relative_importance, dtype=np.float64))
    p = torch.tensor(np.array(density, dtype=np.float64))
    r, p = torch.broadcast_tensors(r, p)
    starts = torch.tensor(
        [[0.0, 0.0, 0.0, 0.0], [0.0, -0.2, -0.1, -0.1], [-0.2, 0.0, -0.1, -0.1]],
        dtype=torch.float64,
    )
    x = starts.expand(*r.shape, 3, 4).clone().requires_grad_(True)
    rr, pp = r[..., None], p[..., None]

    def losses(x: Tensor) -> Tensor:  # log-lengths for (a, c), raw biases
        return antipodal_loss(torch.cat([x[..., :2].exp(), x[..., 2:]], -1), rr, pp)

    opt = torch.optim.LBFGS(
        [x],
        lr=1.0,
        max_iter=300,
        tolerance_grad=1e-12,
        tolerance_change=1e-15,
        history_size=20,
        line_search_fn="strong_wolfe",
    )

    def closure() -> Tensor:
        opt.zero_grad()
        total = losses(x).sum()
        total.backward()
        return total

    opt.step(closure)
    with torch.no_grad():
        return losses(x).amin(-1).numpy()


#: The antipodal candidate must beat the best single-feature one by this much (its optimum
#: degenerates to a single feature as c → 0, where the two tie up to rounding).
TIE_MARGIN = 1e-9


def two_feature_losses(
    relative_importance: float | np.ndarray, density: float | np.ndarray
) -> dict[str, np.ndarray]:
    """Loss of each candidate phase at relative importance r and feature density p = 1 − S.

    Broadcasts over arrays of r and p (the antipodal optimisation is batched).
    """
    r = np.asarray(relative_importance, dtype=np.float64)
    p = np.asarray(density, dtype=np.float64)
    if not (np.isfinite(r).all() and (r > 0).all()):
        raise ValueError(f"relative_importance must be positive and finite, got {r}")
    if not ((p > 0) & (p <= 1)).all():
        raise ValueError(f"density must lie in (0, 1], got {p}")
    var = p / 3.0 - p * p / 4.0
    r, var = np.broadcast_arrays(r, var)
    return {"feature_1": r * var, "feature_2": var + 0 * r, "antipodal": antipodal_optimum(r, p)}


def two_feature_phase(
    relative_importance: float | np.ndarray, density: float | np.ndarray
) -> np.ndarray | str:
    """The candidate of least loss at each (r, p): a str for scalars, else a str array."""
    losses = two_feature_losses(relative_importance, density)
    single = np.where(losses["feature_2"] < losses["feature_1"], "feature_2", "feature_1")
    best_single = np.minimum(losses["feature_1"], losses["feature_2"])
    out = np.where(losses["antipodal"] < best_single - TIE_MARGIN, "antipodal", single)
    return str(out) if out.ndim == 0 else out.astype(str)


def two_feature_labels(W: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Phase labels of trained m = 1, n = 2 models ``W: (..., 1, 2)``.

    Feature i is represented when |w_i| > ``threshold``: both with opposite signs is
    ``"antipodal"``, both with the same sign ``"both_same_sign"``, one of them
    ``"feature_1"``/``"feature_2"``, neither ``"none"``.
    """
    W = np.asarray(W, dtype=np.float64)
    if W.shape[-2:] != (1, 2):
        raise ValueError(f"W must have shape (..., 1, 2), got {W.shape}")
    w1, w2 = W[..., 0, 0], W[..., 0, 1]
    r1, r2 = np.abs(w1) > threshold, np.abs(w2) > threshold
    both = np.where(w1 * w2 < 0, "antipodal", "both_same_sign")
    return np.where(
        r1 & r2, both, np.where(r1, "feature_1", np.where(r2, "feature_2", "none"))
    ).astype(str)


def two_feature_boundary(
    axis: str, fixed: float, lo: float, hi: float, *, tol: float = 1e-3
) -> Transition:
    """The analytic boundary between ``lo`` and ``hi`` along one axis, by bisection.

    ``axis="density"`` varies p at relative importance ``fixed``; ``axis=
    "relative_importance"`` varies r (geometrically, ``tol`` in decades) at density
    ``fixed``. The fixed coordinate is recorded in ``coords``.
    """
    if axis == "density":
        t = refine_boundary(lambda p: two_feature_phase(fixed, p), lo, hi, tol=tol, axis=axis)
        return replace(t, coords=(("relative_importance", fixed),))
    if axis == "relative_importance":
        t = refine_boundary(
            lambda r: two_feature_phase(r, fixed), lo, hi, tol=tol, log=True, axis=axis
        )
        return replace(t, coords=(("density", fixed),))
    raise ValueError(f"axis must be 'density' or 'relative_importance', got {axis!r}")


def superposition_onset_density(
    relative_importance: np.ndarray, lo: np.ndarray, hi: np.ndarray, *, tol: float = 0.01
) -> np.ndarray:
    """Per r, the density p in [lo, hi] where the exact phase changes between "antipodal"
    (superposition) and not: bisection in log p, all rows at once (one batched antipodal
    optimisation per step), until log10(hi/lo) ≤ `tol` decades; the geometric midpoint."""
    r = np.asarray(relative_importance, dtype=np.float64)
    lo, hi = np.array(lo, dtype=np.float64), np.array(hi, dtype=np.float64)
    at_lo = np.asarray(two_feature_phase(r, lo)) == "antipodal"
    if (at_lo == (np.asarray(two_feature_phase(r, hi)) == "antipodal")).any():
        raise ValueError("every row needs superposition at exactly one end of [lo, hi]")
    while np.log10(hi / lo).max() > tol:
        mid = np.sqrt(lo * hi)
        same = (np.asarray(two_feature_phase(r, mid)) == "antipodal") == at_lo
        lo, hi = np.where(same, mid, lo), np.where(same, hi, mid)
    return np.sqrt(lo * hi)
