"""Known-λ accuracy of the LLC estimator (Lau et al. 2023, arXiv 2308.12108).

Fixed seeds; every tolerance is stated against the chains' own spread: the standard
error of λ̂ is max(σ_chains/√K, MCSE) and a test fails when the truth is further than
3 standard errors plus an explicit, documented bias allowance.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

from tms_slt.sampling.llc import LLCResult, estimate_llc
from tms_slt.theory import (
    dln_anchor,
    dln_learning_coefficient,
    dln_potential,
    normal_crossing_potential,
    quadratic_potential,
    sum_of_normal_crossings_potential,
)

pytestmark = pytest.mark.statistical


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models: OpenMP threads only contend on a shared 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _standard_error(result: LLCResult) -> float:
    k = int((~result.divergent).sum())
    return max(float(result.std) / math.sqrt(k), float(result.diagnostics["mcse"]))


def _report(name: str, result: LLCResult, truth: float) -> float:
    rel = float(result.mean) / truth - 1
    print(
        f"{name}: λ̂ = {float(result.mean):.3f} ± {_standard_error(result):.3f}, "
        f"λ = {truth:.3f}, relative error {rel:+.1%}"
    )
    return rel


def test_quadratic_potential_is_d_over_2():
    """K = ‖w‖²/2 in d = 10: λ = d/2. SGLD with h = εnβ/2 has the exact stationary
    variance 1/(nβ(1 − h/2)) per coordinate, so E[λ̂] = (d/2)/(1 − h/2): the truth
    for the 3-SE test, and within 10% of d/2 (h = 0.05: +2.6%)."""
    d, nbeta, eps = 10, 1000.0, 1e-4
    result = estimate_llc(
        quadratic_potential(d),
        nbeta=nbeta,
        step_size=eps,
        localization=0.0,
        num_chains=8,
        num_draws=3000,
        num_burnin=300,
        progress=False,
        generator=torch.Generator().manual_seed(0),
    )
    rel = _report("quadratic d=10", result, d / 2)
    h = eps * nbeta / 2
    expected = (d / 2) / (1 - h / 2)
    assert abs(float(result.mean) - expected) < 3 * _standard_error(result)
    assert abs(rel) < 0.10
    assert bool(result.diagnostics["reliable"])


def test_linear_regression_module_is_d_over_2():
    """nn.Linear(4, 3) with bias (d = 15) at its least-squares fit: λ = d/2 = 7.5."""
    g = torch.Generator().manual_seed(0)
    n = 2000
    x = torch.randn(n, 4, generator=g)
    y = x @ torch.randn(4, 3, generator=g) + 0.5 + 0.3 * torch.randn(n, 3, generator=g)
    model = nn.Linear(4, 3)
    with torch.no_grad():  # fit first: estimate at the minimum of L_n
        X = torch.cat([x, torch.ones(n, 1)], dim=1)
        coef = torch.linalg.lstsq(X.double(), y.double()).solution.float()
        model.weight.copy_(coef[:4].T)
        model.bias.copy_(coef[4])

    def loss_fn(f, batch):
        return ((f(batch[0]) - batch[1]) ** 2).sum(-1).mean()

    result = estimate_llc(
        model,
        loss_fn,
        (x, y),
        step_size=2e-5,
        localization=1.0,
        num_chains=8,
        num_draws=1500,
        num_burnin=300,
        batch_size=200,
        progress=False,
        generator=torch.Generator().manual_seed(1),
    )
    d = 15
    rel = _report("linear regression d=15", result, d / 2)
    # Bias allowance: discretization (h ≈ ε·nβ·2/2 ≈ 0.005) and minibatch noise ≈ 2%.
    assert abs(float(result.mean) - d / 2) < 3 * _standard_error(result) + 0.03 * d / 2
    assert abs(rel) < 0.10


@pytest.mark.parametrize(
    ("groups", "nbeta", "step_size"),
    [([[2]], 1e4, 5e-5), ([[3]], 1e3, 5e-4), ([[1], [2]], 1e4, 1e-5), ([[2], [2]], 1e4, 5e-5)],
    ids=["w^4", "w^6", "x^2+y^4", "x^4+y^4"],
)
def test_normal_crossings(groups, nbeta, step_size):
    """K = Σ_g Π w_i^{2k_i}: λ = Σ_g min 1/(2k_i), within 15% (and 3 SE + 10%).

    ε is set per potential so that ε·nβ·K'' stays ≲ 0.1 where the posterior lives (the
    MALA acceptance is ≥ 0.99 for all four); 256 chains because nβK of a flat potential
    has a heavy-tailed, slowly mixing trace.
    """
    pot = (
        normal_crossing_potential(groups[0])
        if len(groups) == 1
        else sum_of_normal_crossings_potential(groups)
    )
    result = estimate_llc(
        pot,
        nbeta=nbeta,
        step_size=step_size,
        localization=1.0,
        num_chains=256,
        num_draws=2000,
        num_burnin=400,
        progress=False,
        generator=torch.Generator().manual_seed(2),
    )
    lam = pot.learning_coefficient
    rel = _report(f"normal crossing {groups}", result, lam)
    assert abs(rel) < 0.15
    assert abs(float(result.mean) - lam) < 3 * _standard_error(result) + 0.10 * lam


def _dln(widths: list[int], rank: int, seed: int) -> nn.Sequential:
    """x ↦ W_M⋯W_1 x at the anchor of `dln_anchor`: every layer of rank r, W_j = U_{j+1}U_jᵀ
    (orthonormal U_j of shape H_j × r), so the product has rank r and singular values 1, and
    the point is among the most singular true parameters, where the local λ equals Aoyagi's
    global one."""
    layers = [nn.Linear(a, b, bias=False) for a, b in itertools.pairwise(widths)]
    with torch.no_grad():
        for layer, weight in zip(layers, dln_anchor(widths, rank, seed), strict=True):
            layer.weight.copy_(weight)
    return nn.Sequential(*layers)


def _dln_llc(
    widths: list[int], rank: int, *, seed: int = 0, num_draws: int = 4000, mala: bool = False
) -> LLCResult:
    """Noise-free realizable data y = W₀x, so w* is an exact global minimum (L_n = 0).

    ``mala`` only adds the acceptance record (benchmarks/dln_accuracy.py); the chains are the
    same."""
    model = _dln(widths, rank, seed)
    x = torch.randn(5000, widths[0], generator=torch.Generator().manual_seed(seed + 100))
    with torch.no_grad():
        y = model(x)

    def loss_fn(f, batch):
        return ((f(batch[0]) - batch[1]) ** 2).sum(-1).mean()

    return estimate_llc(
        model,
        loss_fn,
        (x, y),
        nbeta=1e4,
        step_size=1e-5,
        localization=30.0,
        num_chains=16,
        num_draws=num_draws,
        num_burnin=num_draws // 4,
        batch_size=100,
        mala=mala,
        progress=False,
        generator=torch.Generator().manual_seed(seed + 1),
    )


# Three-layer networks through the data path (nn.Module, minibatches of a 5000-sample set).
# Deeper ones are tested on the population loss below: at this γ = 30 the localization cuts
# them off (the exact tempered posterior at nβ = 1e4, γ = 30 is 15-34% below λ for
# [3, 4, 4, 2], [5, 3, 5, 4], [3, 3, 3, 3, 3]), and the γ = 3 they need takes ≈ 3e4 steps
# even at nβ = 300: about 35 s a network at the data path's ≈ 1.2 ms a step.
DLNS = [
    ([5, 4, 3, 5], 2),
    ([6, 2, 6], 1),
    ([4, 3, 4], 1),
    ([4, 5, 3], 2),
    ([5, 3, 4], 1),
    ([3, 5, 4], 2),
]


@pytest.mark.parametrize(("widths", "rank"), DLNS)
def test_deep_linear_network_matches_aoyagi(widths, rank):
    lam = dln_learning_coefficient(widths, rank)
    result = _dln_llc(widths, rank)
    rel = _report(f"DLN {widths} r={rank}", result, lam)
    assert int(result.num_divergent) == 0
    assert abs(rel) < 0.15


# Deep networks (4 and 5 widths) on `dln_potential`, K(w) = ‖W_M⋯W_1 − W₀‖²_F: the
# population loss of the same regression (x ~ N(0, I)), with the same λ, and no data, so a
# step is cheap and has no minibatch noise. Why these settings (numbers from
# `benchmarks/dln_accuracy.py`, which also samples the tempered posterior exactly, by
# Metropolis-corrected HMC, to separate its own finite-nβ bias from the sampler's):
# * γ = 3, not 30. A rank-r point of an M-layer network has directions where K grows like
#   t^(2M); a strong localization cuts them off, and λ̂ is low even with exact sampling:
#   for [3, 4, 4, 2], [5, 3, 5, 4], [4, 3, 3, 3, 4] the exact nβE[K] is −15%, −20%, −7% at
#   (nβ, γ) = (1e4, 30) and −6%, −10%, −4% at (300, 3). γ = 1 gains little (−5%, −7%, −4%)
#   for 3× the burn-in: the flat directions relax in an ε-time ≈ 3/γ.
# * nβ = 300. At γ = 3, nβ = 1e4 improves the exact values only to −1%, −6%, −3%, for 33×
#   the steps (ε must shrink like 1/nβ).
# * ε = h/(M·nβ) with h = 0.05, i.e. ε times the largest eigenvalue 2M·nβ of nβ∇²K(w*) is
#   0.1: MALA acceptance 0.96-0.98. Halving ε (twice the draws) moves the mean over 4 seeds
#   by −2.5%, −0.9%, −1.6%, onto the exact values within 0.3-1.6 SE: what is left of the
#   discretization bias is ≲ +3%, and the cases pass at ε/2 too.
# * burn-in ε-time 0.8 (the localization alone relaxes the variance by e^(−γ·0.8) ≈ 0.09;
#   the λ̂ trace is flat after ≈ 0.6), then ε-time 0.4 of draws in 16 chains: 22k steps
#   (3 layers) and 29k (4 layers), 10-17 s and 15-22 s on the shared 2-core machine.
_DEEP_NBETA = 300.0
_DEEP_GAMMA = 3.0
_DEEP_H = 0.05
_DEEP_BURNIN_TIME = 0.8
_DEEP_DRAWS_TIME = 0.4


def _dln_potential_llc(
    widths: list[int],
    rank: int,
    *,
    seed: int = 0,
    step_factor: float = 1.0,
    mala: bool = False,
) -> LLCResult:
    """SGLD on `dln_potential(widths, rank, seed)` at the settings above; ``step_factor``
    scales ε (and the number of draws inversely, keeping the ε-time) for the ε check in
    benchmarks/dln_accuracy.py."""
    pot = dln_potential(widths, rank, seed)
    eps = step_factor * _DEEP_H / ((len(widths) - 1) * _DEEP_NBETA)
    num_burnin = round(_DEEP_BURNIN_TIME / eps)
    return estimate_llc(
        pot,
        nbeta=_DEEP_NBETA,
        step_size=eps,
        localization=_DEEP_GAMMA,
        num_chains=16,
        num_draws=num_burnin + round(_DEEP_DRAWS_TIME / eps),
        num_burnin=num_burnin,
        mala=mala,
        progress=False,
        generator=torch.Generator().manual_seed(seed + 1),
    )


_HIGH_MULTIPLICITY = pytest.mark.xfail(
    run=False,
    reason="[3,3,3,3,3] r=1: the tempered posterior itself is too low. Exact (HMC) nβE[K] "
    "is −22% at (nβ, γ) = (300, 3), −15% at (300, 1), −14% at (1e4, 3); SGLD at the settings "
    "here: −19% (4 seeds). The bias shrinks only slowly with nβ (like 1/log nβ for a "
    "high-order pole), so no CI-affordable setting reaches 15% honestly. Not run: 20 s for a "
    "known outcome; benchmarks/dln_accuracy.py reproduces the numbers",
)
DEEP_DLNS = [
    ([3, 4, 4, 2], 1),
    ([5, 3, 5, 4], 1),
    ([4, 3, 3, 3, 4], 2),
    pytest.param([3, 3, 3, 3, 3], 1, marks=_HIGH_MULTIPLICITY),
]


@pytest.mark.parametrize(("widths", "rank"), DEEP_DLNS)
def test_deep_linear_network_potential_matches_aoyagi(widths, rank):
    """Within 15% of Aoyagi's λ, and within 3 SE + 10%: the exact tempered posterior at these
    settings is 4-10% low (finite nβ), and the discretization adds ≲ 3%."""
    lam = dln_learning_coefficient(widths, rank)
    result = _dln_potential_llc(widths, rank)
    rel = _report(f"DLN potential {widths} r={rank}", result, lam)
    assert int(result.num_divergent) == 0
    assert abs(rel) < 0.15
    assert abs(float(result.mean) - lam) < 3 * _standard_error(result) + 0.10 * lam


def test_more_singular_point_has_smaller_llc():
    """Same architecture [4, 3, 4]; true rank 1 (λ = 6) < rank 2 (7) < rank 3 (7.5)."""
    results = [_dln_llc([4, 3, 4], r, num_draws=2000) for r in (1, 2, 3)]
    lams = [dln_learning_coefficient([4, 3, 4], r) for r in (1, 2, 3)]
    assert lams[0] < lams[1] < lams[2]
    for r, res, lam in zip((1, 2, 3), results, lams, strict=True):
        _report(f"DLN [4,3,4] r={r}", res, lam)
    for lo, hi in itertools.pairwise(results):
        se = math.hypot(_standard_error(lo), _standard_error(hi))
        assert float(hi.mean) - float(lo.mean) > 2 * se
