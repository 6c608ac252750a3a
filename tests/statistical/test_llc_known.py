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
    dln_learning_coefficient,
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
    """x ↦ W_M⋯W_1 x with every layer of rank r, W_j = U_{j+1} U_jᵀ (orthonormal U_j of
    shape H_j × r): the product has rank r and singular values 1, and the point is among
    the most singular true parameters, where the local λ equals Aoyagi's global one."""
    g = torch.Generator().manual_seed(seed)
    layers = [nn.Linear(a, b, bias=False) for a, b in itertools.pairwise(widths)]
    bases = [torch.linalg.qr(torch.randn(h, h, generator=g))[0][:, :rank] for h in widths]
    with torch.no_grad():
        for j, layer in enumerate(layers):
            layer.weight.copy_(bases[j + 1] @ bases[j].T)
    return nn.Sequential(*layers)


def _dln_llc(widths: list[int], rank: int, *, seed: int = 0, num_draws: int = 4000) -> LLCResult:
    """Noise-free realizable data y = W₀x, so w* is an exact global minimum (L_n = 0)."""
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
        progress=False,
        generator=torch.Generator().manual_seed(seed + 1),
    )


_UNDER = pytest.mark.xfail(
    reason="deep, narrow DLNs: λ̂ underestimates Aoyagi's λ by 20-30%. Not a burn-in "
    "problem: at ε = 5e-6 and 16000 draws [3,4,4,2] is stationary at -17%. Depth M gives "
    "degree-2M directions of width nβ^(-1/2M), not small against the localization width "
    "γ^(-1/2) at nβ = 1e4, γ = 30, so γ cuts them off; needs nβ ≫ γ^M, out of reach "
    "here. Larger ε (2e-5) passes 2 of 3 only by cancelling this with the upward SGLD "
    "discretization bias, so those settings are not used; kept to track it",
    strict=False,
)
DLNS = [
    ([5, 4, 3, 5], 2),
    ([6, 2, 6], 1),
    ([4, 3, 4], 1),
    ([4, 5, 3], 2),
    ([5, 3, 4], 1),
    ([3, 5, 4], 2),
    pytest.param([5, 3, 5, 4], 1, marks=_UNDER),
    pytest.param([3, 4, 4, 2], 1, marks=_UNDER),
    pytest.param([3, 3, 3, 3, 3], 1, marks=_UNDER),
]


@pytest.mark.parametrize(("widths", "rank"), DLNS)
def test_deep_linear_network_matches_aoyagi(widths, rank):
    lam = dln_learning_coefficient(widths, rank)
    result = _dln_llc(widths, rank)
    rel = _report(f"DLN {widths} r={rank}", result, lam)
    assert int(result.num_divergent) == 0
    assert abs(rel) < 0.15


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
