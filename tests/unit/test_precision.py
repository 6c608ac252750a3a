"""Longer chains where λ̂ is imprecise (`sampling.precision`): a continued chain is the
same chain, block means keep λ̂, and the decision follows the standard error."""

from __future__ import annotations

import pytest
import torch

from tms_slt.sampling import native
from tms_slt.sampling.llc import estimate_llc, problem_for, sample
from tms_slt.sampling.precision import (
    MAX_EXTENSION,
    MAX_RELATIVE_ERROR,
    TARGET_RELATIVE_ERROR,
    _block_means,
    needed_factors,
    standard_error,
    within_budget,
)
from tms_slt.sampling.problems import select_anchors
from tms_slt.sampling.sgld import SGLD
from tms_slt.theory import quadratic_potential


def _tms_problem(lead=(3,), num_chains=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    W = 0.6 * torch.randn(*lead, 2, 6, generator=g)
    b = -0.1 * torch.rand(*lead, 6, generator=g)
    x = torch.rand(300, 6, generator=g)
    data = x * (torch.rand(300, 6, generator=g) < 0.3)
    return problem_for(
        (W, b),
        None,
        data,
        importance=None,
        activation="relu",
        swish_sharpness=1.0,
        num_chains=num_chains,
        batch_size=20,
    )


def _kernel(problem, eps=1e-3):
    return SGLD(problem.loss_and_grad, problem.event_ndims, step_size=eps, nbeta=50.0)


BACKENDS = ["torch"] + (["native"] if native.available() else [])


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_continued_chain_is_the_same_chain(backend):
    problem = _tms_problem()
    kernel = _kernel(problem)
    whole = sample(problem, kernel, 40, torch.Generator().manual_seed(3), backend=backend)
    g = torch.Generator().manual_seed(3)
    first = sample(problem, kernel, 25, g, backend=backend)
    rest = sample(problem, kernel, 15, g, backend=backend, start=first.last)
    joined = torch.cat([first.loss, rest.loss], dim=-1)
    torch.testing.assert_close(joined, whole.loss, rtol=0, atol=0)
    for a, b in zip(rest.last, whole.last, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_selected_anchors_run_as_in_the_whole_problem():
    """A sub-problem of some anchors gives those anchors the whole problem's loss (its own
    training-set copies, the same L_n(w*)) and starts where they were."""
    problem = _tms_problem(lead=(4,))
    index = torch.tensor([1, 3])
    sub = select_anchors(problem, index)
    torch.testing.assert_close(sub.init_loss, problem.init_loss[index])
    params = tuple(p[index] for p in problem.params)
    x = problem.tms.data.expand(2, *problem.tms.data.shape).unsqueeze(-3)[..., :50, :]
    loss_sub, _ = sub.loss_and_grad(params, x)
    loss_all, _ = problem.loss_and_grad(problem.params, x[:1].expand(4, *x.shape[1:]))
    torch.testing.assert_close(loss_sub, loss_all[index])


def test_block_means_keep_the_mean_and_the_burn_in():
    g = torch.Generator().manual_seed(0)
    head = torch.randn(2, 3, 30, generator=g)
    tail = torch.randn(2, 3, 40, generator=g)  # (f − 1) · 20 post-burn-in draws, f = 3
    out = _block_means(head, tail, 10, 3)
    assert out.shape == head.shape
    torch.testing.assert_close(out[..., :10], head[..., :10])
    whole = torch.cat([head[..., 10:], tail], dim=-1)
    torch.testing.assert_close(out[..., 10:].mean(-1), whole.mean(-1))


def test_the_standard_error_is_the_diagnostics_one():
    """max(ArviZ's MCSE of the mean, the chains' spread / √K), per anchor."""
    import arviz as az

    g = torch.Generator().manual_seed(0)
    x = torch.zeros(3, 4, 400, dtype=torch.float64)
    noise = torch.randn(3, 4, 400, generator=g, dtype=torch.float64)
    for t in range(1, 400):  # AR(1) chains, and anchor 2's chains apart: the spread decides
        x[..., t] = 0.9 * x[..., t - 1] + noise[..., t]
    x[2] += torch.tensor([0.0, 3.0, -3.0, 6.0])[:, None]
    se = standard_error(x)
    for a in range(3):
        mcse = float(az.mcse(x[a].numpy()))
        spread = float(x[a].mean(-1).std()) / 2.0
        assert float(se[a]) == pytest.approx(max(mcse, spread), rel=1e-8)
    assert float(se[2]) > float(az.mcse(x[2].numpy()))


def test_the_factors_follow_the_error_and_the_budget():
    estimate = torch.full((5,), 10.0)
    target = TARGET_RELATIVE_ERROR * 10.0
    error = torch.tensor([0.5, 1.3, 1.9, 2.3, 10.0]) * target
    current = torch.ones(5, dtype=torch.int64)
    f = needed_factors(estimate, error, current)
    # ⌈1.69⌉ = 2, ⌈3.61⌉ = 4; 5.29 > MAX_EXTENSION = 4 but 4 still meets the bound (4 ≥
    # 5.29 · 0.8²); 100 is beyond reach: untouched.
    assert MAX_EXTENSION == 4
    assert f.tolist() == [1, 2, 4, 4, 1]
    # a second round counts from where the anchor is
    assert needed_factors(estimate[:1], 1.3 * target * torch.ones(1), 2 * current[:1]).item() == 4
    assert within_budget(current, f, budget=10.0).tolist() == [1, 2, 4, 4, 1]
    assert within_budget(current, f, budget=4.0).tolist() == [1, 2, 4, 1, 1]  # cheapest first


def test_an_imprecise_estimate_gets_longer_chains():
    """On a quadratic potential the automatic length (the minimum, 500 draws) leaves λ̂'s
    error above the bound; the continuation brings it below, and λ̂ stays right (λ = d/2)."""
    d = 10
    common = {"nbeta": 1000.0, "progress": False}
    result = estimate_llc(
        quadratic_potential(d), generator=torch.Generator().manual_seed(0), **common
    )
    factor = int(result.calibration["extension"])
    assert factor >= 2
    se = float(result.diagnostics["standard_error"])
    assert se <= MAX_RELATIVE_ERROR * float(result.mean)
    assert abs(float(result.mean) - d / 2) <= 3 * se
    fixed = estimate_llc(
        quadratic_potential(d),
        generator=torch.Generator().manual_seed(0),
        num_draws=result.num_draws,
        **common,
    )
    assert "extension" not in fixed.calibration  # a given length is kept
