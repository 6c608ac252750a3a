"""transitions.thermodynamic: confined-MALA thermodynamic integration of basin free energies,
and the crossing of two (unions of) basins."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tms_slt.transitions import pooled_crossing
from tms_slt.transitions.thermodynamic import BasinFreeEnergy, basin_free_energy, ti_crossing


def test_confined_mala_excess_tends_to_the_llc_and_stays_in_the_basin() -> None:
    """At n = 1e5, 1e6 the confined chains' λ_eff = n(E[L] − L*) is within 4 SE of the exact
    λ (17/2 for the 6-gon, 7 for 5−: Morse–Bott, where E[L] − L* = λ/n + O(1/n²)); no proposal
    leaves the basin there; the prior-mass anchor is within 4 SE of the Monte Carlo truth
    e^{−6/8} for the 6-gon (each column is longer than 0.5 with prior probability e^{−1/8})."""
    g = torch.Generator().manual_seed(0)
    for k, v, lam in ((6, "-", 8.5), (5, "-", 7.0)):
        r = basin_free_energy(
            k,
            v,
            ns=[1e4, 1e5, 1e6],
            num_chains=16,
            num_burnin=300,
            num_draws=300,
            num_prior_draws=40_000,
            generator=g,
        )
        assert np.all(np.abs(r.excess[1:] - lam) < 4 * r.excess_se[1:] + 0.05), r.excess
        assert np.all(r.left_basin[1:] == 0)
        assert np.all((r.acceptance > 0.4) & (r.acceptance < 0.8))
        if k == 6:
            se = math.sqrt(r.prior_mass * (1 - r.prior_mass) / 40_000)
            assert abs(r.prior_mass - math.exp(-6 / 8)) < 4 * se
        # F from the top (Laplace) and the integral agree with dF/du = n E[L] on the ladder.
        dF = np.diff(r.free_energy_laplace)
        assert np.all(dF > 0)


def _synthetic(label: str, F: np.ndarray, n: np.ndarray, se: float) -> BasinFreeEnergy:
    z = np.zeros_like(n)
    return BasinFreeEnergy(label, n, F, np.full_like(n, se), F, z, 0.0, 0.0, 0.5, z, z, z, z, z)


def test_ti_crossing_on_known_free_energies() -> None:
    """ΔF = F_a − F_b linear in u = log n with root at n = 100: the crossing is at 100, and
    the ± 2 SE interval is where ΔF = ∓ 2·SE·√2 (two basins' SEs in quadrature). Pooling a
    second 'before' basin of equal F moves the crossing to where ΔF = log 2."""
    n = np.geomspace(1, 1e4, 41)
    u = np.log(n)
    slope, se = -0.5, 0.1
    a = _synthetic("6", slope * (u - math.log(100)), n, se)
    b = _synthetic("5-", np.zeros_like(n), n, se)
    c, (lo, hi) = ti_crossing([a], [b])
    assert c == pytest.approx(100, rel=1e-9)
    s = 2 * se * math.sqrt(2)
    assert lo == pytest.approx(100 * math.exp(-s / -slope), rel=1e-6)
    assert hi == pytest.approx(100 * math.exp(s / -slope), rel=1e-6)
    pooled, _ = ti_crossing([a], [b, _synthetic("5+", np.zeros_like(n), n, se)])
    assert pooled == pytest.approx(100 * math.exp(math.log(2) / -slope), rel=1e-6)
    with pytest.raises(ValueError, match="ladder"):
        ti_crossing([a], [_synthetic("5-", np.zeros(3), np.array([1.0, 2.0, 3.0]), se)])


def test_pooled_crossing_of_callables() -> None:
    """Two phases with F = nL + λ log n: the crossing solves nΔL + Δλ log n = 0; pooling two
    identical 'before' phases shifts it to nΔL + Δλ log n = log 2."""

    def F(L: float, lam: float):
        return lambda n: n * L + lam * math.log(n)

    n_c = pooled_crossing([F(0.01, 2.0)], [F(0.02, 1.0)])
    assert -0.01 * n_c + math.log(n_c) == pytest.approx(0, abs=1e-9)
    n_2 = pooled_crossing([F(0.01, 2.0)], [F(0.02, 1.0), F(0.02, 1.0)])
    assert -0.01 * n_2 + math.log(n_2) == pytest.approx(-math.log(2), abs=1e-9)
    assert math.isnan(pooled_crossing([F(0.0, 1.0)], [F(0.0, 1.0)]))
