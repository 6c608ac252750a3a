"""Basin free energies of the c = 6 TMS by thermodynamic integration in n: a non-asymptotic
reference for the Bayesian crossings of Chen et al. 2023 (arXiv 2310.06301).

For a basin B (here: the set of points with one k-gon label, `geometry.kgon_labels`) and the
posterior ∝ exp(−n L(w)) φ(w) with the exact population loss L and the prior φ = N(0, σ² I),

    F_n(B) = −log ∫_B exp(−n L) φ,   dF_n(B)/dn = E_{n,B}[L],

the expectation under the posterior confined to B. With u = log n and the excess
λ_eff(n) = n (E_{n,B}[L] − L*) (→ λ as n → ∞ at a Morse–Bott minimum),

    F_{n}(B) = F_{n_a}(B) − L*(n_a − n) − ∫_{log n}^{log n_a} λ_eff du,

anchored at a large n_a by the Laplace formula with every O(1) term
(`theory.kgon_free_energy`, exact to O(1/n_a), O(n_a^{−1/3}) for a flat region with cubic
edges). E_{n,B}[L] comes from Metropolis-adjusted Langevin chains (MALA: proposal
w' = w − ε∇U(w) + √(2ε) ξ, U = nL + ‖w‖²/(2σ²), accepted with the Metropolis–Hastings ratio
and rejected outright when w' leaves B), so each rung samples its confined posterior exactly;
the step size is tuned per rung during burn-in only (towards acceptance 0.6) and then fixed.
The integral is the trapezoid rule on the rungs; its Monte Carlo error is propagated from the
standard errors of the per-chain means (chains independent), and the discretisation error is
estimated by comparing with the integral over every other rung.

Two anchors: at n → 0, F_n(B) → −log Π(B), the prior mass of the basin (Monte Carlo from
the prior: exact up to its sampling error), and at the top of the ladder the Laplace formula.
:attr:`BasinFreeEnergy.free_energy` is integrated up from the first; the second, integrated
down, closes the loop: their difference at the top (``closure``) is the Laplace formula's
error there plus the Monte Carlo and quadrature error of the whole integral.

The posterior fraction of basin B among basins B_j is exp(−F_n(B)) / Σ_j exp(−F_n(B_j)), and
:func:`ti_crossing` finds where two of them (or two unions of them) are equal, with an
interval from ±2 standard errors of ΔF.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import brentq

__all__ = ["BasinFreeEnergy", "basin_free_energy", "ti_crossing"]


@dataclass(frozen=True)
class BasinFreeEnergy:
    """F_n(B) on a ladder of n for one basin, with its Monte Carlo standard error.

    Attributes:
        label: the basin's k-gon label.
        n: (G,) the ladder, increasing.
        free_energy: (G,) F_n(B) integrated up from the n → 0 end, where F = −log Π(B)
            (``prior_mass`` Π(B), the prior mass of the basin, by Monte Carlo): an exact
            anchor. ``standard_error``: (G,) its Monte Carlo SE.
        free_energy_laplace, standard_error_laplace: the same integrated down from the
            Laplace formula with every O(1) term at n[-1] (`theory.kgon_free_energy`).
        closure, closure_se: F at n[-1] from the low end minus the Laplace formula there:
            zero up to the Monte Carlo and quadrature error where both anchors and the
            integrand are right (the Laplace formula's own O(1/n) or, for a flat region
            with cubic edges, O(n^{−1/3}) error at n[-1] shows here).
        excess: (G,) λ_eff(n) = n (E[L] − L*), ``excess_se`` its SE.
        acceptance: (G,) MALA acceptance after burn-in; ``left_basin``: (G,) fraction of
            proposals rejected for leaving the basin.
        discretisation: (G,) |trapezoid over all rungs − over every other rung| from the
            low end (NaN at odd rungs): an estimate of the quadrature error, larger than it.
    """

    label: str
    n: np.ndarray
    free_energy: np.ndarray
    standard_error: np.ndarray
    free_energy_laplace: np.ndarray
    standard_error_laplace: np.ndarray
    closure: float
    closure_se: float
    prior_mass: float
    excess: np.ndarray
    excess_se: np.ndarray
    acceptance: np.ndarray
    left_basin: np.ndarray
    discretisation: np.ndarray

    def at(self, n: float | np.ndarray) -> np.ndarray:
        """F_n by interpolation in log n (linear) between rungs."""
        return np.interp(np.log(n), np.log(self.n), self.free_energy)

    def se_at(self, n: float | np.ndarray) -> np.ndarray:
        return np.interp(np.log(n), np.log(self.n), self.standard_error)


def _labels(x: torch.Tensor, c: int) -> np.ndarray:
    from tms_slt.geometry import kgon_labels

    return kgon_labels(x[..., : 2 * c].reshape(*x.shape[:-1], 2, c), x[..., 2 * c :])


def basin_free_energy(
    k: int,
    variant: str = "-",
    *,
    ns: Sequence[float],
    c: int = 6,
    sigma: float = 1.0,
    num_chains: int = 32,
    num_burnin: int = 1000,
    num_draws: int = 2000,
    init: torch.Tensor | None = None,
    num_prior_draws: int = 1_000_000,
    generator: torch.Generator,
    return_state: bool = False,
) -> BasinFreeEnergy | tuple[BasinFreeEnergy, torch.Tensor]:
    """F_n of the basin labelled like the regular k-gon (``kgon_free_energy(k, c, variant)``)
    at every n of ``ns`` (increasing; the last is the Laplace anchor, e.g. 1e6), by
    thermodynamic integration with confined MALA chains (module docstring).

    Chains start at randomly rotated copies of the k-gon critical point (a dead "−" column at
    w = 0, β = −0.3, inside its flat region), one batch over (rung, chain).

    Args:
        k, variant, c: the k-gon (a Morse–Bott minimum: `theory.kgon_llc` known).
        ns: the ladder of n, increasing, at least 3 rungs.
        sigma: the prior's standard deviation.
        num_chains, num_burnin, num_draws: chains per rung; MALA steps discarded (and used
            to tune ε) and kept.
        init: optional starting points (G, num_chains, 3c) (W flattened, then b), each
            with the basin's label; default: rotated copies of the critical point.
        num_prior_draws: prior draws for the basin's prior mass (the n → 0 anchor).
        generator: the randomness.
        return_state: also return the final (G, num_chains, 3c) states.
    """
    from tms_slt.theory import kgon_critical_point, kgon_free_energy, tms_population_loss_torch

    ns = np.asarray(ns, dtype=np.float64)
    if ns.ndim != 1 or ns.size < 3 or np.any(np.diff(ns) <= 0) or ns[0] <= 0:
        raise ValueError("ns must be an increasing ladder of at least 3 positive values")
    anchor = kgon_free_energy(k, c, variant, sigma=sigma)
    label = anchor.label
    W, b = kgon_critical_point(k, c, "auto", variant)
    if "-" in anchor.label[len(str(k)) :]:
        b = b.copy()
        b[k:] = np.where(b[k:] < 0, -0.3, b[k:])
    G, R = ns.size, num_chains
    theta = torch.rand(G, R, generator=generator, dtype=torch.float64) * 2 * math.pi
    rot = torch.stack(
        [torch.stack([theta.cos(), -theta.sin()], -1), torch.stack([theta.sin(), theta.cos()], -1)],
        -2,
    )  # (G, R, 2, 2)
    W0 = rot @ torch.tensor(W, dtype=torch.float64)
    x = torch.cat([W0.reshape(G, R, -1), torch.tensor(b).expand(G, R, c)], -1)
    if init is not None:
        x = torch.as_tensor(init, dtype=torch.float64).clone()
        if x.shape != (G, R, 3 * c) or not (_labels(x, c) == label).all():
            raise ValueError(f"init must be (G, R, 3c) = {(G, R, 3 * c)} points labelled {label}")
    n_t = torch.tensor(ns, dtype=torch.float64)[:, None]

    def energy_and_grad(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = x.detach().requires_grad_(True)
        L = tms_population_loss_torch(x[..., : 2 * c].reshape(G, R, 2, c), x[..., 2 * c :])
        U = n_t * L + (x * x).sum(-1) / (2 * sigma**2)
        (g,) = torch.autograd.grad(U.sum(), x)
        return U.detach(), g, L.detach()

    h_max = max(anchor.curvatures)
    scale = torch.full((G, 1), 0.5, dtype=torch.float64)
    eps = scale / (n_t * h_max + 1 / sigma**2)
    U, g, L = energy_and_grad(x)
    sum_L = torch.zeros(G, R, dtype=torch.float64)
    accepted = torch.zeros(G, dtype=torch.float64)
    left = torch.zeros(G, dtype=torch.float64)
    window_acc = torch.zeros(G, dtype=torch.float64)
    for t in range(num_burnin + num_draws):
        noise = torch.randn(x.shape, generator=generator, dtype=torch.float64)
        prop = x - eps[..., None] * g + torch.sqrt(2 * eps[..., None]) * noise
        U_p, g_p, L_p = energy_and_grad(prop)
        fwd = ((prop - x + eps[..., None] * g) ** 2).sum(-1) / (4 * eps)
        bwd = ((x - prop + eps[..., None] * g_p) ** 2).sum(-1) / (4 * eps)
        log_ratio = -(U_p - U) - bwd + fwd
        inside = torch.tensor(_labels(prop, c) == label)
        u = torch.rand(G, R, generator=generator, dtype=torch.float64)
        acc = inside & (torch.log(u) < log_ratio)
        x = torch.where(acc[..., None], prop, x)
        U = torch.where(acc, U_p, U)
        g = torch.where(acc[..., None], g_p, g)
        L = torch.where(acc, L_p, L)
        if t < num_burnin:
            window_acc += acc.double().mean(-1)
            if (t + 1) % 50 == 0:  # tune ε towards acceptance 0.6, burn-in only
                rate = window_acc / 50
                scale = scale * torch.exp(rate - 0.6)[:, None].clamp(0.5, 2.0)
                eps = scale / (n_t * h_max + 1 / sigma**2)
                window_acc.zero_()
        else:
            sum_L += L
            accepted += acc.double().mean(-1)
            left += (~inside).double().mean(-1)
    per_chain = (sum_L / num_draws).numpy()  # (G, R)
    excess_chain = ns[:, None] * (per_chain - anchor.loss)
    excess = excess_chain.mean(-1)
    excess_se = excess_chain.std(-1, ddof=1) / math.sqrt(R)
    u = np.log(ns)
    # Trapezoid weights: row g integrates λ_eff over [u_0, u_g] (low) or [u_g, u_G] (high);
    # rungs are independent, so the variance is Σ weight² SE².
    low, high = np.zeros((G, G)), np.zeros((G, G))
    for j in range(G - 1):
        half = (u[j + 1] - u[j]) / 2
        low[j + 1 :, j] += half
        low[j + 1 :, j + 1] += half
        high[: j + 1, j] += half
        high[: j + 1, j + 1] += half
    # The low end: F at n → 0 is −log Π(B), the prior mass of the basin, by Monte Carlo from
    # the prior; F(n_0) = −log Π(B) + ∫_0^{n_0} E_n[L] dn, the integrand taken as the mean of
    # its values at 0 (the prior draws) and at n_0 (the chains).
    prior = torch.randn(num_prior_draws, 3 * c, generator=generator, dtype=torch.float64)
    prior = prior * sigma
    inside = _labels(prior, c) == label
    mass = float(inside.mean())
    if mass == 0:
        raise ValueError(f"no prior draw has the label {label}: raise num_prior_draws")
    with torch.no_grad():
        L_prior = tms_population_loss_torch(
            prior[inside, : 2 * c].reshape(-1, 2, c), prior[inside, 2 * c :]
        )
    mean_L0 = float(L_prior.mean())
    F0 = -math.log(mass) + ns[0] * 0.5 * (mean_L0 + per_chain[0].mean())
    se0 = math.sqrt((1 - mass) / (mass * num_prior_draws))
    F_low = F0 + anchor.loss * (ns - ns[0]) + low @ excess
    se_low = np.sqrt(se0**2 + (low**2) @ (excess_se**2))
    # The high end: the Laplace formula with every O(1) term at n_G.
    F_high = float(anchor(ns[-1])) - anchor.loss * (ns[-1] - ns) - high @ excess
    se_high = np.sqrt((high**2) @ (excess_se**2))
    closure = float(F_low[-1] - F_high[-1])
    closure_se = float(np.sqrt(se0**2 + ((low[-1] ** 2) @ (excess_se**2))))
    # Discretisation: the same integrals over every other rung (from the low end).
    coarse = np.full(G, np.nan)
    for gi in range(2, G, 2):
        coarse[gi] = np.trapezoid(excess[: gi + 1 : 2], u[: gi + 1 : 2])
    disc = np.abs(low @ excess - coarse)
    out = BasinFreeEnergy(
        label=label,
        n=ns,
        free_energy=F_low,
        standard_error=se_low,
        free_energy_laplace=F_high,
        standard_error_laplace=se_high,
        closure=closure,
        closure_se=closure_se,
        prior_mass=mass,
        excess=excess,
        excess_se=excess_se,
        acceptance=(accepted / num_draws).numpy(),
        left_basin=(left / num_draws).numpy(),
        discretisation=disc,
    )
    return (out, x) if return_state else out


def ti_crossing(
    after: Sequence[BasinFreeEnergy], before: Sequence[BasinFreeEnergy], *, z: float = 2.0
) -> tuple[float, tuple[float, float]]:
    """The n where the posterior mass of the union ``after`` equals that of ``before``
    (ΔF(n) = −log Σ_after e^{−F} + log Σ_before e^{−F} = 0), interpolated in log n between
    rungs (the basins must share their ladder), and the interval where |ΔF| ≤ z·SE(ΔF)
    (SEs of independent basins added in quadrature), each from `free_energy` (the n → 0
    anchor). NaN where ΔF (or ΔF ∓ z·SE) does not change sign on the ladder; the latest sign
    change from + to − is taken."""
    n = after[0].n
    for f in (*after, *before):
        if not np.array_equal(f.n, n):
            raise ValueError("the basins must share their ladder of n")

    def pooled(group: Sequence[BasinFreeEnergy]) -> tuple[np.ndarray, np.ndarray]:
        F = np.stack([f.free_energy for f in group])
        se = np.stack([f.standard_error for f in group])
        lse = -np.logaddexp.reduce(-F, axis=0)
        weight = np.exp(-(F - lse))  # d(pooled)/dF_j
        return lse, np.sqrt(((weight * se) ** 2).sum(0))

    Fa, sa = pooled(after)
    Fb, sb = pooled(before)
    d, s = Fa - Fb, np.hypot(sa, sb)
    u = np.log(n)

    def root(values: np.ndarray) -> float:
        sign = np.flatnonzero((values[:-1] > 0) & (values[1:] <= 0))
        if not sign.size:
            return math.nan
        i = int(sign[-1])
        f = lambda x: np.interp(x, u[i : i + 2], values[i : i + 2])  # noqa: E731
        return math.exp(brentq(f, u[i], u[i + 1]))

    # d − z·s reaches 0 first (lower n), d + z·s last; NaN where it never does on the ladder.
    return root(d), (root(d - z * s), root(d + z * s))
