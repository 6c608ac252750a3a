"""RMSProp-preconditioned SGLD (`sgld.RMSPropSGLD`, `estimate_llc(sampler="rmsprop")`).

The torch kernel against a hand-written update, the fused C kernel against the torch one on
the same generator, λ̂ on a quadratic potential against d/2, and the one-line errors.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tms_slt.config import ConfigError, LLCConfig
from tms_slt.models import get_activation
from tms_slt.sampling import native
from tms_slt.sampling.backends import sample
from tms_slt.sampling.chains import run_chains
from tms_slt.sampling.llc import estimate_llc
from tms_slt.sampling.problems import potential_problem, tms_problem
from tms_slt.sampling.result import compute_llc
from tms_slt.sampling.sgld import SGLD, RMSPropSGLD, autograd_loss_and_grad
from tms_slt.theory import quadratic_potential

needs_compiler = pytest.mark.skipif(not native.available(), reason="no C compiler")


# -- the update against a hand-written one ------------------------------------------------


def _regression_loss(params, batch):
    """Mean squared error of x·w against y, one loss per chain: w (C, d), x (C, B, d)."""
    x, y = batch
    return ((x @ params[0].unsqueeze(-1)).squeeze(-1) - y).square().mean(-1)


def _reference(w, anchor, batches, noises, *, eps, nbeta, gamma, delta, alpha, lam):
    """Two RMSProp-SGLD steps of one chain written out with Python floats (the docstring's
    formulas: V ← αV + (1−α)g², G = 1/(λ+√V), w ← w − (ε/2)G∇U + √(εG)ξ)."""
    w, v, out = list(w), [0.0] * len(w), []
    for (xs, ys), z in zip(batches, noises, strict=True):
        B = len(ys)
        r = [sum(a * b for a, b in zip(x, w, strict=True)) - y for x, y in zip(xs, ys, strict=True)]
        g = [2.0 / B * sum(r[s] * xs[s][i] for s in range(B)) for i in range(len(w))]
        new = []
        for i in range(len(w)):
            v[i] = alpha * v[i] + (1.0 - alpha) * g[i] ** 2
            G = 1.0 / (lam + math.sqrt(v[i]))
            grad_u = nbeta * g[i] + gamma * (w[i] - anchor[i]) + delta * w[i]
            new.append(w[i] - eps / 2 * G * grad_u + math.sqrt(eps * G) * z[i])
        w = new
        out.append(list(w))
    return out


def test_two_steps_match_the_hand_written_update():
    g = torch.Generator().manual_seed(0)
    C, B, d = 2, 5, 3
    w0 = torch.randn(C, d, generator=g, dtype=torch.float64)
    anchor = w0 + 0.3 * torch.randn(C, d, generator=g, dtype=torch.float64)
    batches = [
        (
            torch.randn(C, B, d, generator=g, dtype=torch.float64),
            torch.randn(C, B, generator=g, dtype=torch.float64),
        )
        for _ in range(2)
    ]
    noises = [torch.randn(C, d, generator=g, dtype=torch.float64) for _ in range(2)]
    coef = {"eps": 0.05, "nbeta": 7.0, "gamma": 3.0, "delta": 0.2, "alpha": 0.9, "lam": 0.05}
    kernel = RMSPropSGLD(
        autograd_loss_and_grad(_regression_loss),
        (1,),
        step_size=coef["eps"],
        nbeta=coef["nbeta"],
        localization=coef["gamma"],
        weight_decay=coef["delta"],
        alpha=coef["alpha"],
        stability=coef["lam"],
    )
    state = kernel.init((w0,), anchor=(anchor,))
    got = []
    for batch, z in zip(batches, noises, strict=True):
        state, _ = kernel.step(state, batch, (z,))
        got.append(state.params[0])
    assert state.step == 2
    for c in range(C):
        expected = _reference(
            w0[c].tolist(),
            anchor[c].tolist(),
            [(x[c].tolist(), y[c].tolist()) for x, y in batches],
            [z[c].tolist() for z in noises],
            **coef,
        )
        for t in range(2):
            torch.testing.assert_close(
                got[t][c], torch.tensor(expected[t], dtype=torch.float64), rtol=1e-12, atol=1e-12
            )
    # the preconditioner moved the step: plain SGLD at the same ε lands elsewhere
    sgld = SGLD(kernel.loss_and_grad, (1,), step_size=0.05, nbeta=7.0, localization=3.0)
    plain, _ = sgld.update((w0,), (anchor,), batches[0], (noises[0],))
    assert not torch.allclose(plain[0], got[0])


def test_frozen_preconditioner_is_sgld_at_step_over_lambda():
    """α = 1 keeps V = 0, so G = 1/λ: the chain is SGLD's at ε/λ (run_chains, same stream)."""
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(400, 4, generator=g), torch.randn(400, generator=g)

    def sample_batch(gen):
        idx = torch.randint(400, (3, 20), generator=gen)
        return x[idx], y[idx]

    w = torch.zeros(3, 4)
    grads = autograd_loss_and_grad(_regression_loss)
    frozen = RMSPropSGLD(grads, (1,), step_size=1e-3, nbeta=50.0, alpha=1.0, stability=0.5)
    plain = SGLD(grads, (1,), step_size=2e-3, nbeta=50.0)
    a = run_chains(frozen, (w,), sample_batch, 50, torch.Generator().manual_seed(2))
    b = run_chains(plain, (w,), sample_batch, 50, torch.Generator().manual_seed(2))
    torch.testing.assert_close(a.loss, b.loss, rtol=1e-5, atol=1e-6)
    adaptive = RMSPropSGLD(grads, (1,), step_size=1e-3, nbeta=50.0, stability=0.5)
    c = run_chains(adaptive, (w,), sample_batch, 50, torch.Generator().manual_seed(2))
    assert not torch.allclose(c.loss, b.loss, rtol=1e-3)


# -- the fused C kernel follows the torch trajectory --------------------------------------


def _tms(lead=(2, 3), data_lead=(3,), *, sample_bias=True, num_chains=3, batch_size=16):
    g = torch.Generator().manual_seed(0)
    W = 0.6 * torch.randn(*lead, 2, 6, generator=g)
    b = -0.1 * torch.rand(*lead, 6, generator=g)
    x = torch.rand(*data_lead, 200, 6, generator=g)
    x = x * (torch.rand(*data_lead, 200, 6, generator=g) < 0.3)
    return tms_problem(
        W,
        b,
        x,
        None,
        get_activation("relu"),
        sample_bias=sample_bias,
        num_chains=num_chains,
        batch_size=batch_size,
        dims=tuple(f"dim_{i}" for i in range(len(lead))),
        coords={},
    )


def _both(problem, kernel, num_draws=300, **kw):
    return tuple(
        sample(problem, kernel, num_draws, torch.Generator().manual_seed(5), backend=be, **kw)
        for be in ("torch", "native")
    )


@needs_compiler
@pytest.mark.parametrize("sample_bias", [True, False])
@pytest.mark.parametrize("data_lead", [(3,), (2, 3)])
def test_native_matches_torch(sample_bias, data_lead):
    """Several anchors (2 × 3) and chains, a dataset shared or per anchor, with localization;
    300 draws span three of the kernel's chunks, so V is carried across calls."""
    problem = _tms(data_lead=data_lead, sample_bias=sample_bias)
    kernel = RMSPropSGLD(
        problem.loss_and_grad, problem.event_ndims, step_size=2e-4, nbeta=80.0, localization=30.0
    )
    eager, fused = _both(problem, kernel, keep_params_every=100)
    torch.testing.assert_close(fused.loss, eager.loss, rtol=1e-4, atol=1e-6)
    assert len(fused.params) == len(eager.params) == (2 if sample_bias else 1)
    for f, e in zip(fused.params, eager.params, strict=True):
        torch.testing.assert_close(f, e, rtol=1e-4, atol=1e-5)
    # the preconditioner is in play: SGLD at ε/λ (its largest step) gives another trace
    sgld = SGLD(
        problem.loss_and_grad, problem.event_ndims, step_size=2e-3, nbeta=80.0, localization=30.0
    )
    (plain,) = (sample(problem, sgld, 300, torch.Generator().manual_seed(5), backend="torch"),)
    assert not torch.allclose(plain.loss, eager.loss, rtol=1e-2)


@needs_compiler
def test_native_matches_torch_with_box_decay_and_per_chain_coefficients():
    problem = _tms(lead=(2,), data_lead=())
    kernel = RMSPropSGLD(
        problem.loss_and_grad,
        problem.event_ndims,
        step_size=torch.tensor([1e-4, 3e-4, 1e-3]),
        nbeta=torch.tensor([20.0, 50.0, 80.0]),
        localization=torch.tensor([0.0, 10.0, 100.0]),
        weight_decay=0.3,
        bounding_box=0.05,
        alpha=0.95,
        stability=0.02,
    )
    eager, fused = _both(problem, kernel, num_draws=200)
    torch.testing.assert_close(fused.loss, eager.loss, rtol=1e-4, atol=1e-6)


@needs_compiler
def test_estimate_llc_rmsprop_backends_agree():
    """Through `estimate_llc`: the same result on both backends, and auto ε is λ times
    SGLD's rule (recorded), so ε·G_max stays what SGLD would use."""
    problem = _tms(lead=(2,), data_lead=())
    W, b = problem.tms.W[:, 0], problem.tms.b[:, 0]
    results = [
        estimate_llc(
            (W, b),
            dataset=problem.tms.data,
            sampler="rmsprop",
            backend=be,
            num_chains=2,
            num_draws=150,
            num_burnin=20,
            batch_size=16,
            progress=False,
            generator=torch.Generator().manual_seed(3),
        )
        for be in ("torch", "native")
    ]
    eager, fused = results
    torch.testing.assert_close(fused.loss_trace, eager.loss_trace, rtol=1e-4, atol=1e-6)
    cal = fused.calibration
    assert cal["sampler"] == "rmsprop"
    torch.testing.assert_close(cal["rmsprop_step_size"], RMSPropSGLD.stability * cal["step_size"])


# -- λ̂ on a regular model -----------------------------------------------------------------


def _quadratic_lambda(alpha, step, *, d=10, nbeta=1000.0, chains=64, draws=4000, burnin=500):
    """Per-chain λ̂ of RMSProp-SGLD on K = ½‖w‖² (λ = d/2 at every nβ), and its standard
    error over the independent chains; ε·G_max·nβ·K'' = `step`."""
    problem = potential_problem(quadratic_potential(d), None, num_chains=chains)
    kernel = RMSPropSGLD(
        problem.loss_and_grad,
        problem.event_ndims,
        step_size=step * RMSPropSGLD.stability / nbeta,
        nbeta=nbeta,
        alpha=alpha,
    )
    traces = sample(problem, kernel, draws, torch.Generator().manual_seed(11), backend="torch")
    result = compute_llc(traces.loss, problem.init_loss, nbeta, num_burnin=burnin)
    per_chain = result.per_chain.numpy()
    return per_chain.mean(), per_chain.std(ddof=1) / np.sqrt(chains)


def test_quadratic_potential_lambda_is_half_the_dimension():
    """With V averaged over far more steps (α = 0.999: ~1000) than the chain's correlation
    time (~25 steps at ε·G_max·nβ = 0.02), G is constant to first order and the chain targets
    exp(−nβK): λ̂ = d/2 within 4 standard errors (the discretization bias, ~0.5%, is below
    one). A wrong noise scale (√ε or εG instead of √(εG)) or V built from nβ·g would be off by
    tens of standard errors."""
    mean, se = _quadratic_lambda(alpha=0.999, step=0.02)
    assert 0.0 < se < 0.1  # the chains mixed: a test with power
    assert abs(mean - 5.0) < 4 * se, (mean, se)


def test_preconditioner_that_follows_the_chain_inflates_lambda():
    """No Γ correction (devinterp has none): where V follows the chain (α = 0.99, a ~100-step
    window, no shorter than the chain's correlation time at ε·G_max·nβ = 0.01), G = 1/(λ + √V)
    is smaller far from w*, and the chain's stationary law tilts towards it, ∝ exp(−nβK)/G in
    the limit of an instantaneous V: by up to (1 + r·E|u|³)/(1 + r·E|u|) − 1 = 20% here
    (r = √(K''/nβ)/λ = 0.32, u standard normal). Measured: between the two."""
    mean, se = _quadratic_lambda(alpha=0.99, step=0.01)
    assert 5.0 + 4 * se < mean < 1.2 * 5.0, (mean, se)


# -- errors ---------------------------------------------------------------------------------


def test_unknown_sampler_and_mala_are_one_line_errors():
    pot = quadratic_potential(2)
    with pytest.raises(ValueError, match="sampler must be one of") as err:
        estimate_llc(pot, nbeta=10.0, sampler="adam", step_size=1e-3, progress=False)
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="mala") as err:
        estimate_llc(pot, nbeta=10.0, sampler="rmsprop", mala=True, progress=False)
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="mala"):
        RMSPropSGLD(lambda p, x: None, (1,), step_size=1e-3, nbeta=1.0, mala=True)
    with pytest.raises(ConfigError, match="sampler") as err:
        LLCConfig(sampler="adam")
    assert "\n" not in str(err.value)
    assert LLCConfig().sampler == "sgld"
