"""The exact population loss of the high-sparsity TMS and its regular k-gon critical points
(Chen, Lau, Mendel, Wei, Murfet 2023, arXiv 2310.06301)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from typing import Any

import numpy as np
import scipy.optimize
import torch
from torch import Tensor

from tms_slt.theory.coefficients import _check_int

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


def kgon_variants(k: int, c: int) -> list[str]:
    """Every sign pattern of the c − k unrepresented biases, up to the order of the features
    (which is a relabelling), most positive first: Chen et al.'s 4++, 4+−, 4−− for k = 4,
    c = 6; [""] for k = c."""
    if k == c:
        return [""]
    return ["+" * p + "-" * (c - k - p) for p in range(c - k, -1, -1)]


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
    k: int,
    c: int = 6,
    bias: float | str = "auto",
    variant: str = "-",
    dead_bias: float | None = None,
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
        dead_bias: β of every ``"-"`` feature, < 0 (default −1/(2c)). Every β < 0 is on the
            same flat family (same loss, same λ); a β far from 0 keeps a sampler inside the
            family's basin, where at −1/(2c) its chains reach β ≥ 0 and the lower loss beyond.
    """
    c = _check_int("c", c, 2)
    k = _check_int("k", k, 2)
    if k > c:
        raise ValueError(f"need 2 <= k <= c, got k={k}, c={c}")
    signs = _parse_variant(variant, k, c)
    minus = -1.0 / (2 * c) if dead_bias is None else float(dead_bias)
    if not minus < 0:
        raise ValueError(f"dead_bias must be negative, got {dead_bias}")
    unrep = tuple(1.0 / (2 * c) if s == "+" else minus for s in signs)
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
    k: int,
    c: int = 6,
    bias: float | str = "auto",
    variant: str = "-",
    dead_bias: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``(W, b)`` of the regular k-gon critical point: W ``(2, c)``, b ``(c,)`` (float64).

    Columns 0..k−1 form the k-gon (column i at angle 2πi/k), the rest are zero; see
    :func:`kgon_solution` for the bias conventions and how l and b* are found.
    """
    sol = kgon_solution(k, c, bias, variant, dead_bias)
    return _kgon_params(k, c, sol.length, sol.bias, sol.unrepresented_biases, np)


def kgon_loss(k: int, c: int = 6, bias: float | str = "auto", variant: str = "-") -> float:
    """Exact high-sparsity TMS loss at the regular k-gon critical point (:func:`kgon_solution`).

    For k ≤ 4 and the "−" variant this is (c − k)/(3c): the k features are reconstructed
    exactly and each of the c − k others costs E[t²] = 1/3.
    """
    return kgon_solution(k, c, bias, variant).loss


@dataclass(frozen=True)
class KGonLLC:
    """What :func:`kgon_llc_report` finds at a regular k-gon critical point.

    ``llc`` is λ = rank(∇²L)/2 as an exact fraction where the point is a Morse–Bott minimum,
    else None with ``reason``. ``eigenvalues`` is the exact-loss Hessian spectrum (ascending),
    ``index`` the number of negative and ``nullity`` the number of zero eigenvalues.
    """

    k: int
    c: int
    variant: str
    loss: float
    grad_norm: float
    eigenvalues: tuple[float, ...]
    index: int
    nullity: int
    llc: Fraction | None
    reason: str

    @property
    def label(self) -> str:
        return f"{self.k}{self.variant}"


#: Eigenvalues within this of zero (relative to the largest) count as null.
_NULL_TOL = 1e-7
#: Displacements along a null direction at which the flat family is checked.
_FLAT_STEPS = (1e-3, 3e-3)


def _flat_vector(W: np.ndarray, b: np.ndarray) -> Tensor:
    return torch.tensor(np.concatenate([W.ravel(), b]), dtype=torch.float64)


def _loss_of(x: Tensor, m: int, c: int) -> Tensor:
    return _population_loss(x[: m * c].reshape(m, c), x[m * c :], torch)


def _on_kink(W: np.ndarray, b: np.ndarray) -> bool:
    """True where some output's pre-activation a·t + b_j has its kink at an end of [0, 1]
    with a ≠ 0 (the exact loss is C¹ but not C² there: the Hessian argument fails)."""
    G = W.T @ W
    for i in range(G.shape[0]):
        for j in range(G.shape[1]):
            a, bj = G[i, j], b[j]
            if abs(a) > 1e-12 and (abs(bj) < 1e-12 or abs(a + bj) < 1e-12):
                return True
    return False


def _is_flat_family(x: Tensor, direction: Tensor, curved: Tensor, m: int, c: int) -> bool:
    """Is there a curve of critical points with the same loss through x, tangent to
    `direction`? Minimise the loss over x + s·direction + span(`curved`, the Hessian's
    non-null eigenvectors at x) (Newton, strongly convex there) for small s and check that
    the minimum is critical and at the loss of x."""
    L0 = float(_loss_of(x, m, c))
    for s in _FLAT_STEPS:
        y = x + s * direction
        for _ in range(30):
            y_req = y.clone().requires_grad_(True)
            (g,) = torch.autograd.grad(_loss_of(y_req, m, c), y_req)
            Hy = torch.autograd.functional.hessian(lambda z: _loss_of(z, m, c), y)
            gc = curved.T @ g
            if float(gc.norm()) < 1e-14:
                break
            step = torch.linalg.solve(curved.T @ Hy @ curved, gc)
            y = y - curved @ step
        y_req = y.clone().requires_grad_(True)
        value = _loss_of(y_req, m, c)
        (g,) = torch.autograd.grad(value, y_req)
        # Critical and at the same loss, to far better than the O(s²)·h a curved or O(s³)
        # a cubic direction would give.
        if abs(value.item() - L0) > 1e-6 * s**2 or float(g.norm()) > 1e-3 * s**2:
            return False
    return True


@lru_cache(maxsize=256)
def kgon_llc_report(k: int, c: int = 6, variant: str = "-") -> KGonLLC:
    """The learning coefficient of the regular k-gon critical point, with the evidence.

    At a Morse–Bott minimum of the exact population loss L (Chen et al. 2023's
    high-sparsity TMS, m = 2, d = 3c parameters): ∇L = 0, ∇²L ⪰ 0, and the null space of
    ∇²L is the tangent space of a manifold of minima through the point. There λ is half the
    rank of the Hessian, (d − dim of the flat set)/2 (Watanabe 2009; a Morse–Bott function
    is locally a sum of squares of rank(∇²L) coordinates). Checked numerically, in float64:

    1. the gradient vanishes (‖∇L‖ < 1e-9);
    2. the point is not on a ReLU kink (k ≤ 4 has b* = 0 with the kink at t = 0: L is C¹
       but not C² there, and the Hessian says nothing about λ);
    3. no eigenvalue is negative (else a saddle: index > 0);
    4. every null eigenvector is tangent to a family of critical points at the same loss
       (`_is_flat_family`: minimise over the curved directions at small displacements).

    Returns:
        `KGonLLC` with ``llc`` = Fraction(rank, 2), or None and the failed condition.
    """
    sol = kgon_solution(k, c, "auto", variant)
    # `kgon_critical_point`'s (W, b) from this solution: calling it would solve again (its
    # call of the cached `kgon_solution` has another argument list).
    W, b = _kgon_params(k, c, sol.length, sol.bias, sol.unrepresented_biases, np)
    m = W.shape[0]
    x = _flat_vector(W, b)
    x_req = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(_loss_of(x_req, m, c), x_req)
    H = torch.autograd.functional.hessian(lambda y: _loss_of(y, m, c), x)
    ev, vec = torch.linalg.eigh(H)
    tol = _NULL_TOL * float(ev.abs().max())
    index = int((ev < -tol).sum())
    null = ev.abs() <= tol
    nullity = int(null.sum())
    rank = len(ev) - nullity - index

    def report(llc: Fraction | None, reason: str) -> KGonLLC:
        return KGonLLC(
            k=k,
            c=c,
            variant=sol.variant,
            loss=sol.loss,
            grad_norm=float(g.norm()),
            eigenvalues=tuple(float(e) for e in ev),
            index=index,
            nullity=nullity,
            llc=llc,
            reason=reason,
        )

    if float(g.norm()) > 1e-9:
        return report(None, f"not a critical point (‖∇L‖ = {float(g.norm()):.1e})")
    if _on_kink(W, b):
        return report(None, "on a ReLU kink (b* = 0): L is not C² here")
    if index:
        return report(None, f"saddle (index {index})")
    basis, curved = vec[:, null], vec[:, ~null]
    for j in range(nullity):
        if not _is_flat_family(x, basis[:, j], curved, m, c):
            return report(None, "degenerate, not Morse–Bott (a null direction is not flat)")
    return report(Fraction(rank, 2), "Morse–Bott minimum: λ = rank(∇²L)/2")


def kgon_llc(k: int, c: int = 6, variant: str = "-") -> Fraction | None:
    """λ of the regular k-gon critical point, where known in closed form; else None.

    λ = rank(∇²L)/2 at a Morse–Bott minimum of the exact population loss (see
    :func:`kgon_llc_report` for the conditions checked and the reason when None). At c = 6:
    the 6-gon and 5+ have λ = 17/2 (the rotation of the plane is their only flat
    direction), 5− has λ = 7 (rotation, the dead column W₆ and its negative bias b₆);
    the k ≤ 4 gons sit on the ReLU kink (None).

    =====  ======  ======  ======  ======  ======
    c      k = c   c−1 +   c−1 −   ≤ 4 (any)
    =====  ======  ======  ======  ======  ======
    5      7       —       —       None
    6      17/2    17/2    7       None
    =====  ======  ======  ======  ======  ======

    The full table for k ≤ c ≤ 8 and every variant is ``paper/tables/kgon_llc.md``
    (``python experiments/chen2023/kgon_llc_table.py``).
    """
    return kgon_llc_report(k, c, variant).llc


def kgon_llc_of_label(label: str, c: int = 6) -> Fraction | None:
    """:func:`kgon_llc` for a `geometry` configuration label such as ``"5+"``, ``"6"`` or
    ``"4+-"`` (None for labels that are not a k-gon with 2 ≤ k ≤ c, and where unknown)."""
    digits = "".join(ch for ch in label if ch.isdigit())
    variant = label[len(digits) :]
    if not digits or not label.startswith(digits) or any(ch not in "+-" for ch in variant):
        return None
    k = int(digits)
    if not 2 <= k <= c or len(variant) != c - k:
        return None
    return kgon_llc(k, c, variant or "-")
