"""Bayesian phase transitions in the sample size n (Chen et al. 2023, arXiv 2310.06301).

The free energy of a phase (a neighbourhood of the critical point w_k) is, to leading orders
(Watanabe 2009; the local form of Lau et al. 2023),

    F_n(k) ≈ n L_k + λ_k log n,

L_k the population loss and λ_k the local learning coefficient. The posterior concentrates on
the phase of least F_n: small n prefers low λ (simple, high loss), large n low loss. The
preferred phase between a and b changes where n (L_a − L_b) = (λ_b − λ_a) log n; in u = log n
this is h(u) = e^u ΔL + Δλ u = 0 (ΔL = L_a − L_b, Δλ = λ_a − λ_b), which has at most two
roots (h is convex or concave), found with scipy's brentq on brackets split at h' = 0.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Iterable, Mapping

import numpy as np
from scipy.optimize import brentq

from tms_slt.transitions.records import Transition


def free_energy(loss: float, llc: float, n: float | np.ndarray) -> float | np.ndarray:
    """F_n ≈ n L + λ log n."""
    n = np.asarray(n, dtype=np.float64)
    if (n <= 0).any():
        raise ValueError("n must be positive")
    out = n * loss + llc * np.log(n)
    return float(out) if out.ndim == 0 else out


def _pair_roots(dl: float, dlam: float, u_min: float, u_max: float) -> list[float]:
    """Roots u ∈ (u_min, u_max) of h(u) = e^u dl + dlam u."""

    def h(u: float) -> float:
        return math.exp(u) * dl + dlam * u

    cuts = [u_min, u_max]
    if dl != 0 and -dlam / dl > 0:
        u_star = math.log(-dlam / dl)
        if u_min < u_star < u_max:
            cuts = [u_min, u_star, u_max]
    roots = []
    for a, b in itertools.pairwise(cuts):
        ha, hb = h(a), h(b)
        if ha == 0.0:
            roots.append(a)
        elif ha * hb < 0:
            roots.append(brentq(h, a, b, xtol=1e-12, rtol=1e-12))
    return roots


def bayesian_crossings(
    losses: Mapping[str, float],
    llcs: Mapping[str, float],
    *,
    n_min: float = 2.0,
    n_max: float = 1e12,
) -> list[Transition]:
    """Sample sizes n_c in [n_min, n_max] where the phase of least free energy changes.

    Args:
        losses: phase label → L_k (population loss at its critical point).
        llcs: phase label → λ_k (its local learning coefficient); same keys.
        n_min, n_max: the range of n searched.

    Returns:
        ``kind="bayesian"`` Transitions along ``axis="n"``, in increasing n, with
        ``before``/``after`` the preferred phases just below/above n_c (the lower envelope
        of the lines F_n(k), so crossings between phases that are never preferred are not
        reported), ``delta_loss = L_after − L_before`` and ``delta_llc = λ_after − λ_before``.
    """
    if set(losses) != set(llcs):
        raise ValueError(
            f"losses and llcs must have the same labels, got {sorted(losses)} and {sorted(llcs)}"
        )
    if not 0 < n_min < n_max:
        raise ValueError(f"need 0 < n_min < n_max, got {n_min}, {n_max}")
    labels = sorted(losses)
    L = {k: float(losses[k]) for k in labels}
    lam = {k: float(llcs[k]) for k in labels}
    u_min, u_max = math.log(n_min), math.log(n_max)
    candidates = sorted(
        {
            u
            for i, a in enumerate(labels)
            for b in labels[i + 1 :]
            for u in _pair_roots(L[a] - L[b], lam[a] - lam[b], u_min, u_max)
        }
    )

    def best(u: float) -> str:
        n = math.exp(u)
        return min(labels, key=lambda k: (n * L[k] + lam[k] * u, k))

    out = []
    for u in candidates:
        eps = 1e-7 * max(1.0, abs(u))
        a, b = best(u - eps), best(u + eps)
        if a != b:
            n_c = math.exp(u)
            out.append(
                Transition(
                    kind="bayesian",
                    axis="n",
                    location=n_c,
                    interval=(n_c, n_c),
                    before=a,
                    after=b,
                    delta_loss=L[b] - L[a],
                    delta_llc=lam[b] - lam[a],
                    signals=("free_energy",),
                    available=("free_energy",),
                    confidence=1.0,
                )
            )
    return out


def posterior_phase_fractions(labels: Iterable[str] | np.ndarray) -> dict[str, float]:
    """Fraction of posterior samples (or trained instances) in each phase, largest first.

    With N samples the standard error of a fraction p is √(p(1 − p)/N) for independent
    samples (larger for autocorrelated chains).
    """
    flat = [str(v) for v in np.asarray(labels, dtype=object).ravel()]
    if not flat:
        raise ValueError("no labels given")
    counts = Counter(flat)
    total = len(flat)
    return {k: c / total for k, c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))}
