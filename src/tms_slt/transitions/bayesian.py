"""Bayesian phase transitions in the sample size n (Chen et al. 2023, arXiv 2310.06301).

The free energy of a phase (a neighbourhood of the critical point w_k) is, to leading orders
(Watanabe 2009; the local form of Lau et al. 2023),

    F_n(k) ≈ n L_k + λ_k log n + c_k,

L_k the population loss, λ_k the local learning coefficient and c_k an O(1) term. Chen et al.
2023 take c_k = ½‖w_k‖² (a standard normal prior at one point) and predict the 5 → 6-gon
crossing at c = 6 from it (n ≈ 601; 445 without it); the O(1) term of a Morse–Bott minimum
has more parts (the curved log-det, symmetric copies, the rotation orbit, the prior mass of a
flat set: `theory.free_energy.kgon_free_energy`, which moves that crossing to ≈ 112), and
:func:`pooled_crossing` compares unions of phases with any such free energies. The posterior
concentrates on the phase of least F_n: small n prefers low λ (simple, high loss), large n low
loss. The preferred phase between a and b changes where, in u = log n,
h(u) = e^u ΔL + Δλ u + Δc = 0 (ΔL = L_a − L_b, …), which has at most two roots (h is convex
or concave), found with scipy's brentq on brackets split at h' = 0.

The same competition, measured instead of predicted: :func:`posterior_configurations` classifies
SGLD draws from the tempered posterior ∝ exp(−nβ L_n(w) − (γ/2)‖w − w*‖²) (recorded with
``estimate_llc(..., keep_params_every=k)``) by their k-gon label and returns the posterior
fraction of each configuration class.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import xarray as xr
from scipy.optimize import brentq
from torch import Tensor

from tms_slt.transitions.records import Transition


def free_energy(
    loss: float, llc: float, n: float | np.ndarray, constant: float = 0.0
) -> float | np.ndarray:
    """F_n ≈ n L + λ log n + c (c: an O(1) term such as −log prior(w*), default 0)."""
    n = np.asarray(n, dtype=np.float64)
    if (n <= 0).any():
        raise ValueError("n must be positive")
    out = n * loss + llc * np.log(n) + constant
    return float(out) if out.ndim == 0 else out


def _pair_roots(dl: float, dlam: float, dc: float, u_min: float, u_max: float) -> list[float]:
    """Roots u ∈ (u_min, u_max) of h(u) = e^u dl + dlam u + dc."""

    def h(u: float) -> float:
        return math.exp(u) * dl + dlam * u + dc

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
    constants: Mapping[str, float] | None = None,
    n_min: float = 2.0,
    n_max: float = 1e12,
) -> list[Transition]:
    """Sample sizes n_c in [n_min, n_max] where the phase of least free energy changes.

    Args:
        losses: phase label → L_k (population loss at its critical point).
        llcs: phase label → λ_k (its local learning coefficient); same keys.
        constants: phase label → c_k, the O(1) term of F_n (e.g. ½‖w_k‖² for a standard
            normal prior); default 0 for every phase.
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
    if constants is not None and set(constants) != set(losses):
        raise ValueError(
            f"constants must have the labels {sorted(losses)}, got {sorted(constants)}"
        )
    if not 0 < n_min < n_max:
        raise ValueError(f"need 0 < n_min < n_max, got {n_min}, {n_max}")
    labels = sorted(losses)
    L = {k: float(losses[k]) for k in labels}
    lam = {k: float(llcs[k]) for k in labels}
    const = {k: float((constants or {}).get(k, 0.0)) for k in labels}
    u_min, u_max = math.log(n_min), math.log(n_max)
    candidates = sorted(
        {
            u
            for i, a in enumerate(labels)
            for b in labels[i + 1 :]
            for u in _pair_roots(L[a] - L[b], lam[a] - lam[b], const[a] - const[b], u_min, u_max)
        }
    )

    def best(u: float) -> str:
        n = math.exp(u)
        return min(labels, key=lambda k: (n * L[k] + lam[k] * u + const[k], k))

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


def pooled_crossing(
    after: Sequence[Callable[[float], float]],
    before: Sequence[Callable[[float], float]],
    *,
    n_min: float = 2.0,
    n_max: float = 1e7,
    num_grid: int = 4000,
) -> float:
    """The largest n in [n_min, n_max] where the posterior mass of the union of phases
    ``after`` overtakes that of ``before``: the last + → − sign change in u = log n of

        ΔF(n) = −log Σ_{a ∈ after} e^{−F_a(n)} + log Σ_{b ∈ before} e^{−F_b(n)},

    each F a callable n ↦ F_n (e.g. `theory.kgon_free_energy(...)`, with every O(1) term).
    Bracketed on a log grid of ``num_grid`` points, then brentq. NaN if ΔF never changes sign
    from + to −.
    """
    if not after or not before:
        raise ValueError("need at least one phase on each side")
    if not 0 < n_min < n_max:
        raise ValueError(f"need 0 < n_min < n_max, got {n_min}, {n_max}")

    def delta(u: float) -> float:
        n = math.exp(u)
        fa = -np.logaddexp.reduce([-float(f(n)) for f in after])
        fb = -np.logaddexp.reduce([-float(f(n)) for f in before])
        return float(fa - fb)

    us = np.linspace(math.log(n_min), math.log(n_max), num_grid)
    values = np.array([delta(u) for u in us])
    change = np.flatnonzero((values[:-1] > 0) & (values[1:] <= 0))
    if not change.size:
        return math.nan
    i = int(change[-1])
    return math.exp(brentq(delta, us[i], us[i + 1], xtol=1e-12, rtol=1e-12))


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


def posterior_configurations(
    W_samples: Tensor,
    b_samples: Tensor,
    *,
    num_burnin: int = 0,
    dims: Sequence[str] | None = None,
    coords: Mapping[str, Any] | None = None,
    norm_threshold: float = 0.5,
    bias_tol: float = 1e-3,
) -> xr.Dataset:
    """Posterior fraction of each k-gon configuration class, from kept SGLD draws.

    Every draw w = (W, b) is labelled by :func:`tms_slt.geometry.kgon_labels` (m = 2), and for
    each leading index the fraction of its post-burn-in draws (pooled over chains) in class c is

        p̂_c = #{(chain, j) : label(w_{chain, j}) = c, j ≥ num_burnin} / (chains · kept draws),

    an estimate of the posterior mass Π(c) = ∫_{label(w) = c} p(w | D_n) dw of that class; with
    N effectively independent draws its standard error is √(p̂(1 − p̂)/N) (see
    :func:`posterior_phase_fractions`, which gives the same numbers for one leading index).

    Args:
        W_samples: (..., chain, kept_draw, 2, n), e.g. ``LLCResult.param_trace[0]`` of
            ``estimate_llc((W, b), ..., keep_params_every=k)``.
        b_samples: (..., chain, kept_draw, n), e.g. ``param_trace[1]``; anything broadcastable
            to it, such as a fixed (n,) bias when the bias was not sampled.
        num_burnin: kept draws discarded from the start of every chain.
        dims, coords: names (default ``dim_0``, …) and coordinates of the leading dims ``...``.
        norm_threshold, bias_tol: passed to :func:`~tms_slt.geometry.kgon_labels`.

    Returns:
        Dataset over ``(..., configuration)`` with ``fraction`` (rows sum to 1) and ``count``,
        plus ``label`` over ``(..., chain, kept_draw)`` for the post-burn-in draws. The
        ``configuration`` coordinate lists every class seen, most frequent overall first.

    Bayesian transitions in n (Chen et al. 2023) from samples, the recipe (one run per n, since
    each n has its own D_n; ``nbeta`` defaults to n / log n, ``localization`` kept weak)::

        for n in ns:
            res = estimate_llc((W, b), dataset=q.sample(n, generator=g), localization=1.0,
                               keep_params_every=10, generator=g)
            fractions[n] = posterior_configurations(*res.param_trace, num_burnin=10)
    """
    from tms_slt.geometry import kgon_labels

    if W_samples.ndim < 4:
        raise ValueError(
            f"W_samples must have shape (..., chain, kept_draw, m, n), got {tuple(W_samples.shape)}"
        )
    sample_shape = W_samples.shape[:-2]
    b_samples = torch.broadcast_to(b_samples, (*sample_shape, W_samples.shape[-1]))
    num_kept = sample_shape[-1]
    if not 0 <= num_burnin < num_kept:
        raise ValueError(f"num_burnin must be in [0, {num_kept}), got {num_burnin}")
    lead = tuple(sample_shape[:-2])
    dims = tuple(f"dim_{i}" for i in range(len(lead))) if dims is None else tuple(dims)
    if len(dims) != len(lead):
        raise ValueError(f"dims {dims} do not name the {len(lead)} leading dims")
    labels = kgon_labels(
        W_samples[..., num_burnin:, :, :],
        b_samples[..., num_burnin:, :],
        norm_threshold=norm_threshold,
        bias_tol=bias_tol,
    ).astype(str)  # (..., chain, kept_draw − burn-in)
    classes = list(posterior_phase_fractions(labels))  # most frequent overall first
    flat = labels.reshape(-1, labels.shape[-2] * labels.shape[-1])  # (leading, draws)
    column = {c: i for i, c in enumerate(classes)}
    uniq, inverse = np.unique(flat, return_inverse=True)
    index = np.array([column[u] for u in uniq])[inverse.reshape(flat.shape)]
    counts = np.zeros((flat.shape[0], len(classes)), dtype=np.int64)
    np.add.at(counts, (np.arange(flat.shape[0])[:, None], index), 1)
    counts = counts.reshape(*lead, len(classes))
    out_coords = {d: np.asarray(v) for d, v in dict(coords or {}).items()}
    out_coords["configuration"] = np.asarray(classes)
    return xr.Dataset(
        {
            "fraction": ([*dims, "configuration"], counts / flat.shape[1]),
            "count": ([*dims, "configuration"], counts),
            "label": ([*dims, "chain", "kept_draw"], labels),
        },
        coords=out_coords,
        attrs={"num_burnin": num_burnin, "num_samples": int(flat.shape[1])},
    )
