"""The free energy of a Morse–Bott minimum with every O(1) term, and its value at the
c = 6 k-gons of the high-sparsity TMS (Chen, Lau, Mendel, Wei, Murfet 2023, arXiv 2310.06301).

The local free energy of a basin B of the loss L under a prior φ and inverse temperature n,

    F_n(B) = −log Z_n(B),   Z_n(B) = ∫_B exp(−n L(w)) φ(w) dw,

is, when the minimum set M ⊂ B of L is a compact r-dimensional manifold (or a union of them)
on which L = L* and whose normal Hessian has the positive eigenvalues h_1, …, h_{d−r}
(a Morse–Bott minimum), by Laplace's method in the normal directions:

    F_n(B) = n L* + λ log n + ½ Σ_i log(h_i / 2π) − log ∫_M φ dvol_M + O(1/n),   λ = (d − r)/2.

Derivation: in tubular coordinates w = p + v (p ∈ M, v normal to M at p) the volume element is
dvol_M(p) dv (1 + O(|v|)), L(w) = L* + ½ vᵀH_⊥(p)v + O(|v|³) and φ(w) = φ(p)(1 + O(|v|)); the
Gaussian integral over v is (2π/n)^{(d−r)/2} det H_⊥(p)^{−1/2}, and the odd terms vanish, so
the relative error is O(1/n). This is the regular-model expansion of Watanabe 2009
("Algebraic Geometry and Statistical Learning Theory", the case λ = d/2 with an isolated
minimum: M a point, ∫_M φ = φ(w*)) applied fibrewise over M; the leading order n L* + λ log n
is the same as Watanabe's for every λ. Where h_i depends on p the −log ∫ φ · Π(2π/h_i)^{1/2}
must be taken as one integral; at the k-gons below H_⊥ is constant on M, so it separates.

Where M has a boundary (a flat *region*, such as the dead column of 5−, on whose edges L grows
like the cube of the distance), ∫_M φ is the prior mass of the region and the boundary layer
adds a relative correction O(n^{−1/3}) instead of O(1/n).

Chen et al. 2023 use F_n ≈ n L* + λ log n + ½‖w*‖² (their standard normal prior at one point
of M); the terms it leaves out are ½ Σ log h_i (the 6-gon has three more curved directions
than 5−, and soft ones), the length of the rotation orbit, the number of symmetric copies of
M, the normalisation of φ over the flat directions, and, at 5−, the prior mass of the dead
column's flat region in place of the prior density at one of its points.
:func:`morse_bott_free_energy` is the formula, checked against brute-force integration in the
tests; :func:`kgon_free_energy` evaluates every term at a regular k-gon.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.integrate
import scipy.special

from tms_slt.theory.tms import kgon_critical_point, kgon_llc_report, kgon_solution

__all__ = [
    "KGonFreeEnergy",
    "MorseBottFreeEnergy",
    "dead_column_prior_mass",
    "gaussian_log_density",
    "kgon_free_energy",
    "morse_bott_free_energy",
]


def gaussian_log_density(w: np.ndarray | Sequence[float], sigma: float = 1.0) -> float:
    """log φ(w) for the prior φ = N(0, σ² I_d): −(d/2) log(2πσ²) − ‖w‖²/(2σ²)."""
    w = np.asarray(w, dtype=np.float64).ravel()
    _check_sigma(sigma)
    return float(-0.5 * w.size * math.log(2 * math.pi * sigma**2) - (w @ w) / (2 * sigma**2))


def _check_sigma(sigma: float) -> None:
    if not (math.isfinite(sigma) and sigma > 0):
        raise ValueError(f"sigma must be positive and finite, got {sigma}")


@dataclass(frozen=True)
class MorseBottFreeEnergy:
    """F_n = n L* + λ log n + ½ Σ log(h_i/2π) − log ∫_M φ dvol_M (module docstring).

    Attributes:
        loss: L*, the loss on the minimum set M.
        curvatures: the positive Hessian eigenvalues h_i normal to M (of L, not of nL).
        log_prior_measure: log ∫_M φ dvol_M, the prior integrated over the minimum set
            (over every symmetric copy of it that the basin contains).
    """

    loss: float
    curvatures: tuple[float, ...]
    log_prior_measure: float

    def __post_init__(self) -> None:
        h = np.asarray(self.curvatures, dtype=np.float64)
        if h.ndim != 1 or not np.all(np.isfinite(h)) or np.any(h <= 0):
            raise ValueError("curvatures must be positive and finite")
        if not (math.isfinite(self.loss) and math.isfinite(self.log_prior_measure)):
            raise ValueError("loss and log_prior_measure must be finite")

    @property
    def llc(self) -> float:
        """λ = (number of curved directions)/2."""
        return len(self.curvatures) / 2

    @property
    def log_det_term(self) -> float:
        """½ Σ_i log(h_i / 2π)."""
        return float(0.5 * np.log(np.asarray(self.curvatures) / (2 * math.pi)).sum())

    @property
    def constant(self) -> float:
        """The O(1) term: ½ Σ log(h_i/2π) − log ∫_M φ."""
        return self.log_det_term - self.log_prior_measure

    def __call__(self, n: float | np.ndarray) -> float | np.ndarray:
        return morse_bott_free_energy(
            n,
            loss=self.loss,
            curvatures=self.curvatures,
            log_prior_measure=self.log_prior_measure,
        )


def morse_bott_free_energy(
    n: float | np.ndarray,
    *,
    loss: float,
    curvatures: Sequence[float],
    log_prior_measure: float,
) -> float | np.ndarray:
    """F_n = n L* + (k/2) log n + ½ Σ_{i=1}^k log(h_i/2π) − log ∫_M φ dvol_M, k = len(h).

    The Laplace expansion of −log ∫ exp(−nL) φ over the basin of a Morse–Bott minimum set M
    (module docstring; error O(1/n), or O(n^{−1/3}) relative where M is a region whose edges
    are cubic). ``n`` may be an array; returns a float for a scalar ``n``.
    """
    n = np.asarray(n, dtype=np.float64)
    if (n <= 0).any():
        raise ValueError("n must be positive")
    h = np.asarray(curvatures, dtype=np.float64)
    if np.any(h <= 0):
        raise ValueError("curvatures must be positive")
    out = (
        n * float(loss)
        + 0.5 * h.size * np.log(n)
        + 0.5 * np.log(h / (2 * math.pi)).sum()
        - float(log_prior_measure)
    )
    return float(out) if out.ndim == 0 else out


# ---------------------------------------------------------------------------------------
# The TMS k-gons
# ---------------------------------------------------------------------------------------


def dead_column_prior_mass(W_live: np.ndarray, bias: float, sigma: float = 1.0) -> float:
    """Prior mass of the flat region of one dead column (w, β) ∈ R² × R next to a k-gon.

    For one-hot inputs t e_i (t ∈ [0, 1]) a zero column with bias β is "dead" and the loss
    does not depend on (w, β) as long as no output it touches turns on:

    * its own output on its own input, ReLU(‖w‖² t + β): ‖w‖² + β ≤ 0;
    * its output on input i, ReLU((W_i·w) t + β): W_i·w + β ≤ 0 for every live column i;
    * output i on its input, ReLU((W_i·w) t + b*): W_i·w + b* ≤ 0,

    so L = L* exactly on A = {‖w‖² + β ≤ 0, W_i·w ≤ min(−β, −b*) ∀i} (``tests``: the loss
    is constant on A and changes just outside it). With φ = N(0, σ²) on each coordinate,

        ∫_A φ = ∫_{max_i W_i·w ≤ −b*} φ_2(w) Φ(−max(‖w‖², max_i W_i·w)/σ) dw,

    integrated here in polar coordinates (scipy ``quad``, relative error ~1e-10) over one of
    the 2k wedges of the region's dihedral symmetry.

    Args:
        W_live: (2, k) live columns, a regular k-gon with k ≥ 3 (so that the region is
            bounded).
        bias: b* < 0, the bias of the live columns.
        sigma: the prior's standard deviation.
    """
    _check_sigma(sigma)
    W_live = np.asarray(W_live, dtype=np.float64)
    if W_live.ndim != 2 or W_live.shape[0] != 2:
        raise ValueError(f"W_live must have shape (2, k), got {W_live.shape}")
    if not bias < 0:
        raise ValueError(f"the live bias must be negative for a flat region, got {bias}")

    def top(theta: float) -> float:  # max_i W_i · u(θ)
        return float(np.max(W_live[0] * math.cos(theta) + W_live[1] * math.sin(theta)))

    if min(top(t) for t in np.linspace(0, 2 * math.pi, 721)) <= 0:
        raise ValueError("the live columns do not surround 0: the flat region is unbounded")

    def radial(theta: float) -> float:
        m = top(theta)
        rho_max = -bias / m

        def f(rho: float) -> float:
            cap = max(rho * rho, rho * m)
            return math.exp(-(rho**2) / (2 * sigma**2)) * scipy.special.ndtr(-cap / sigma) * rho

        kinks = [x for x in (m,) if 0 < x < rho_max]  # ‖w‖² overtakes W_i·w at ρ = m
        val, _ = scipy.integrate.quad(f, 0, rho_max, points=kinks or None, epsabs=0, epsrel=1e-11)
        return val / (2 * math.pi * sigma**2)

    k = W_live.shape[1]
    angles = np.sort(np.mod(np.arctan2(W_live[1], W_live[0]), 2 * math.pi))
    norms = np.linalg.norm(W_live, axis=0)
    gaps = np.diff(np.concatenate([angles, [angles[0] + 2 * math.pi]]))
    if not (np.allclose(gaps, 2 * math.pi / k, atol=1e-9) and np.allclose(norms, norms[0])):
        raise ValueError("the live columns must form a regular k-gon")
    # 2k copies of the wedge from a vertex to the middle of an edge.
    a0 = float(angles[0])
    val, _ = scipy.integrate.quad(radial, a0, a0 + math.pi / k, epsabs=0, epsrel=1e-10)
    return 2 * k * val


@dataclass(frozen=True)
class KGonFreeEnergy:
    """Every term of F_n at a regular k-gon of the c-feature TMS (m = 2), prior N(0, σ² I).

    F_n = n L* + λ log n + ``log_det_term`` − ``log_prior_measure``, where
    ``log_prior_measure`` = ``log_copies`` + ``log_orbit_length`` + ``log_prior_density`` +
    ``log_flat_mass``:

    * ``log_det_term``: ½ Σ log(h_i/2π) over the 2λ curved Hessian directions;
    * ``log_copies``: log of the number of rotation circles of critical points with this
      label, c!/(k · p! · q!) (the features permuted, modulo the k-gon's dihedral symmetry,
      which O(2) realises, and the p "+" and q "−" dead columns among themselves; the
      reflections of O(2) are permutations of a regular k-gon, k ≥ 3);
    * ``log_orbit_length``: log 2π‖W_live‖_F, the length of one rotation circle;
    * ``log_prior_density``: log φ at the point, over every coordinate except the q dead
      "−" columns (their 3q coordinates are flat);
    * ``log_flat_mass``: q · log of :func:`dead_column_prior_mass` (q ≤ 1 here).

    ``leading_order_constant`` is Chen et al.'s ½‖w*‖²/σ² at the default point (the dead
    bias −1/(2c)); ``prior_quadratic`` the same over the non-flat coordinates only, of which
    there are ``num_prior_coordinates``; ``curvatures`` are the curved eigenvalues of ∇²L.
    """

    label: str
    c: int
    sigma: float
    loss: float
    llc: float
    curvatures: tuple[float, ...]
    log_det_term: float
    log_copies: float
    log_orbit_length: float
    log_prior_density: float
    log_flat_mass: float
    leading_order_constant: float
    prior_quadratic: float
    num_prior_coordinates: int

    @property
    def log_prior_measure(self) -> float:
        return self.log_copies + self.log_orbit_length + self.log_prior_density + self.log_flat_mass

    @property
    def constant(self) -> float:
        """The O(1) term of F_n: ``log_det_term`` − ``log_prior_measure``."""
        return self.log_det_term - self.log_prior_measure

    @property
    def morse_bott(self) -> MorseBottFreeEnergy:
        return MorseBottFreeEnergy(self.loss, self.curvatures, self.log_prior_measure)

    def __call__(self, n: float | np.ndarray) -> float | np.ndarray:
        return self.morse_bott(n)

    def terms(self) -> dict[str, float]:
        """The O(1) terms of F_n by name, each as it enters F_n (with its sign); they add up
        to :attr:`constant`:

        * ``½ Σ log h``: ½ Σ log h_i over the curved directions;
        * ``2π and σ normalisation``: −(2λ/2) log 2π from the Gaussian integrals plus
          (d_φ/2) log 2πσ² from φ's normalisation over its d_φ non-flat coordinates (at
          σ = 1 it is ½(d_φ − 2λ) log 2π = ½ log 2π at every c = 6 k-gon: d_φ − 2λ is the
          one rotation direction);
        * ``½‖w*‖²/σ² (non-flat coordinates)``: the prior's exponent at the point;
        * ``−log flat-set prior mass``, ``−log copies``, ``−log orbit length``.
        """
        k = len(self.curvatures)
        return {
            "½ Σ log h": self.log_det_term + 0.5 * k * math.log(2 * math.pi),
            "2π and σ normalisation": -0.5 * k * math.log(2 * math.pi)
            + 0.5 * self.num_prior_coordinates * math.log(2 * math.pi * self.sigma**2),
            "½‖w*‖²/σ² (non-flat coordinates)": self.prior_quadratic,
            "−log flat-set prior mass": -self.log_flat_mass,
            "−log copies": -self.log_copies,
            "−log orbit length": -self.log_orbit_length,
        }


def kgon_free_energy(
    k: int, c: int = 6, variant: str = "-", *, sigma: float = 1.0
) -> KGonFreeEnergy:
    """The Morse–Bott free energy of the regular k-gon (with every O(1) term) under the prior
    N(0, σ² I) on (W, b), where the k-gon is a Morse–Bott minimum (`theory.kgon_llc_report`).

    The minimum set of one copy is the rotation circle {R_θ W*} (times, for each dead "−"
    column, its flat region A of :func:`dead_column_prior_mass`); the Hessian normal to it is
    the same at every point (L is rotation invariant, and independent of the dead column's
    (w, β) inside A), and (θ, w, β) are orthogonal coordinates on it with volume element
    ‖W_live‖_F dθ dw dβ, so ∫_M φ = copies · 2π‖W_live‖_F · φ_live(w*) · mass(A)^q. The
    basin of a label holds all its copies (the label is invariant under O(2) and relabelling
    of features within each class). See :class:`KGonFreeEnergy` for the terms.

    Raises:
        ValueError: where λ is not known in closed form (not a Morse–Bott minimum), for k < 3,
            or for more than one dead "−" column (their flat regions interact).
    """
    _check_sigma(sigma)
    report = kgon_llc_report(k, c, variant)
    if report.llc is None:
        raise ValueError(f"{report.label}: no Morse–Bott free energy ({report.reason})")
    if k < 3:
        raise ValueError("the symmetry count assumes k ≥ 3")
    sol = kgon_solution(k, c, "auto", variant)
    p, q = sol.variant.count("+"), sol.variant.count("-")
    if q > 1:
        raise NotImplementedError("more than one dead '−' column: their flat regions interact")
    W, b = kgon_critical_point(k, c, "auto", variant)
    ev = np.asarray(report.eigenvalues)
    curved = np.sort(ev[ev > 1e-7 * np.abs(ev).max()])
    if curved.size != 2 * report.llc:
        raise AssertionError("curved eigenvalues do not match λ")
    live = np.ones(c, dtype=bool)
    live[k:] = [s == "+" for s in sol.variant]  # "+" columns: curved, in the density
    coords = np.concatenate([W[:, live].ravel(), b[live]])
    W_live = W[:, :k]
    flat = q * math.log(dead_column_prior_mass(W_live, sol.bias, sigma)) if q else 0.0
    copies = math.factorial(c) / (k * math.factorial(p) * math.factorial(q))
    return KGonFreeEnergy(
        label=sol.label,
        c=c,
        sigma=float(sigma),
        loss=sol.loss,
        llc=float(report.llc),
        curvatures=tuple(float(h) for h in curved),
        log_det_term=float(0.5 * np.log(curved / (2 * math.pi)).sum()),
        log_copies=math.log(copies),
        log_orbit_length=math.log(2 * math.pi * float(np.linalg.norm(W_live))),
        log_prior_density=gaussian_log_density(coords, sigma),
        log_flat_mass=flat,
        leading_order_constant=float((W**2).sum() + (b**2).sum()) / (2 * sigma**2),
        prior_quadratic=float(coords @ coords) / (2 * sigma**2),
        num_prior_coordinates=int(coords.size),
    )
