"""LLCs that are right by default: known-λ models through the user's path.

Every estimate here calls `estimate_llc` with its defaults (ε, γ, draws and burn-in all
"auto"); nothing is tuned per model. The standard error of λ̂ is max(σ_chains/√K, MCSE),
and tolerances are multiples of it plus a stated bias allowance. Alongside accuracy, the
package's promise is checked: an estimate marked reliable is within 15% of λ.

`benchmarks/llc_accuracy.py` imports the builders below and prints the same cases as a table.
"""

from __future__ import annotations

import statistics

import known_lambda
import numpy as np
import pytest
import torch

from tms_slt.config import ExperimentConfig
from tms_slt.sampling.llc import LLCResult, estimate_llc
from tms_slt.theory import (
    dln_learning_coefficient,
    kgon_llc,
    normal_crossing_potential,
    quadratic_potential,
    sum_of_normal_crossings_potential,
)
from tms_slt.training import train

pytestmark = pytest.mark.statistical

#: The promise: an estimate marked reliable is within this fraction of λ.
RELIABLE_WITHIN = 0.15

KGONS = [(6, "-"), (5, "+"), (5, "-")]


def standard_error(result: LLCResult) -> np.ndarray:
    """max(σ_chains/√K, MCSE) per anchor."""
    k = (~result.divergent).sum(-1).clamp(min=1).numpy()
    spread = result.std.numpy() / np.sqrt(k)
    return np.maximum(np.nan_to_num(spread, nan=np.inf), result.diagnostics["mcse"].values)


def assert_reliable_means_right(result: LLCResult, truth: np.ndarray, name: str) -> None:
    """No estimate off by more than RELIABLE_WITHIN is marked reliable."""
    reliable = np.asarray(result.diagnostics["reliable"].values, dtype=bool)
    error = np.abs(result.mean.numpy() / truth - 1)
    bad = reliable & (error > RELIABLE_WITHIN)
    assert not bad.any(), f"{name}: reliable but off by {error[bad]}"


# ---------------------------------------------------------------------------------------
# The c = 6 k-gons (Chen et al. 2023): exact population loss, refined and trained minima
# ---------------------------------------------------------------------------------------


def refined_kgons(n: int, seed: int = 1) -> tuple[tuple[torch.Tensor, torch.Tensor], torch.Tensor]:
    """(W, b) of the 6-gon, 5+ and 5− refined to minima of L_n (L-BFGS, float64) on one
    training set of n samples of Chen et al.'s distribution, and that set."""
    return known_lambda.refined_kgons(6, n, seed)


def test_population_kgons_match_kgon_llc():
    """At nβ = 1e5 on the exact population loss the tempered posterior is in its asymptotic
    regime: λ̂ with the defaults is within 3 SE + 3% of 17/2, 17/2 and 7."""
    pot, anchors, truth = known_lambda.population_kgons()
    result = estimate_llc(
        pot,
        dataset=anchors,
        nbeta=1e5,
        num_chains=8,
        progress=False,
        generator=torch.Generator().manual_seed(0),
    )
    se = standard_error(result)
    mean = result.mean.numpy()
    print("population k-gons, nβ = 1e5:", mean.round(3), "±", se.round(3), "λ =", truth)
    assert (np.abs(mean - truth) < 3 * se + 0.03 * truth).all()
    assert bool(result.diagnostics["reliable"].all())


def test_refined_kgons_at_n_1e4():
    """Minima of L_n at n = 1e4 (nβ ≈ 1086). The 6-gon is within 10%. For 5+ the tempered
    posterior itself sits above λ at this nβ (its anharmonic soft directions: +5 to +18% on the
    exact population loss at nβ = 1e3–1e4, `benchmarks/llc_accuracy.py --families
    population`), so that bias, 18%, is allowed
    beside 3 standard errors. 5− has flat
    directions (W₆, b₆ < 0) that end where the loss drops to the 5+ basin: its estimate is
    either right or flagged."""
    (W, b), x = refined_kgons(10_000)
    result = estimate_llc(
        (W, b), dataset=x, progress=False, generator=torch.Generator().manual_seed(0)
    )
    truth = np.array([float(kgon_llc(k, 6, v)) for k, v in KGONS])
    mean, se = result.mean.numpy(), standard_error(result)
    print("refined k-gons, n = 1e4:", mean.round(3), "±", se.round(3), "λ =", truth)
    assert abs(mean[0] / truth[0] - 1) < 0.10
    assert abs(mean[1] - truth[1]) < 3 * se[1] + 0.18 * truth[1]
    assert_reliable_means_right(result, truth, "refined k-gons")


def quickstart_final_checkpoint() -> tuple[LLCResult, np.ndarray]:
    """The quickstart's training (the default config: n = 30 000, 6 instances, 1e4 steps)
    and the defaults' LLC at its last checkpoint; λ of each instance's k-gon (NaN if none)."""
    from tms_slt.transitions import track

    config = ExperimentConfig()
    trajectory = train(config, generator=torch.Generator().manual_seed(config.seed), progress=False)
    last = trajectory.take(-1)
    result = estimate_llc(last, progress=False, generator=torch.Generator().manual_seed(1))
    truth = track(last)["llc_theory"].values
    return result, truth


def test_quickstart_final_plateaus_match_kgon_llc():
    result, truth = quickstart_final_checkpoint()
    known = np.isfinite(truth).ravel()
    assert known.sum() >= 4, "the quickstart should end at k-gons with known λ"
    mean = result.mean.numpy().ravel()[known]
    error = np.abs(mean / truth.ravel()[known] - 1)
    print("quickstart final λ̂:", mean.round(3), "λ:", truth.ravel()[known])
    assert statistics.median(error) < 0.10
    assert error.max() < 0.15
    assert_reliable_means_right(result, truth, "quickstart")


# ---------------------------------------------------------------------------------------
# Deep linear networks fitted by the user (Aoyagi 2024)
# ---------------------------------------------------------------------------------------


def dln_estimates() -> list[tuple[tuple[int, ...], int, float, LLCResult]]:
    """The benchmark's fitted DLNs of depth 2–4 (`known_lambda.fitted_linear_network`: a
    rank-r teacher, noisy data, Adam then L-BFGS on every row, as a user would fit one),
    each estimated with the defaults."""
    out = []
    for widths, rank in known_lambda.DLNS[:7]:
        model, data = known_lambda.fitted_linear_network(widths, rank, 0.1)
        result = estimate_llc(
            model,
            known_lambda.squared_error,
            data,
            progress=False,
            generator=torch.Generator().manual_seed(1),
        )
        out.append((widths, rank, dln_learning_coefficient(widths, rank), result))
    return out


@pytest.mark.slow
def test_fitted_dlns_with_defaults():
    """Seven DLNs of depth 2–4: median |error| ≤ 10%, none worse than 25%, and every
    estimate marked reliable within 15%."""
    errors = []
    for widths, rank, lam, result in dln_estimates():
        rel = float(result.mean) / lam - 1
        print(f"DLN {widths} r={rank}: λ̂ = {float(result.mean):.3f}, λ = {lam}, {rel:+.1%}")
        errors.append(abs(rel))
        assert_reliable_means_right(result, np.array(lam), f"DLN {widths}")
    assert statistics.median(errors) <= 0.10
    assert max(errors) < 0.25


# ---------------------------------------------------------------------------------------
# Regular models and normal crossings (Watanabe 2009)
# ---------------------------------------------------------------------------------------

POTENTIALS = {
    "quadratic d=10": lambda: quadratic_potential(10),
    "w^4": lambda: normal_crossing_potential([2]),
    "x^2+y^4": lambda: sum_of_normal_crossings_potential([[1], [2]]),
    "x^4+y^4": lambda: sum_of_normal_crossings_potential([[2], [2]]),
}


@pytest.mark.parametrize("name", list(POTENTIALS))
def test_potentials_with_defaults(name):
    """nβ = 1000, 64 chains: within 3 SE + 5% (the localization and the finite chain length
    of a flat potential pull λ̂ down by a few percent)."""
    pot = POTENTIALS[name]()
    result = estimate_llc(
        pot, nbeta=1000.0, num_chains=64, progress=False, generator=torch.Generator().manual_seed(2)
    )
    lam = pot.learning_coefficient
    se = float(standard_error(result))
    print(f"{name}: λ̂ = {float(result.mean):.3f} ± {se:.3f}, λ = {lam}")
    assert abs(float(result.mean) - lam) < 3 * se + 0.05 * lam
    assert_reliable_means_right(result, np.array(lam), name)
