"""Susceptibilities of the local posterior (`tms_slt.sampling.susceptibility`)."""

from __future__ import annotations

import pytest
import torch

from tms_slt.sampling.susceptibility import coupled_sparsity_samples, posterior_response


def test_gaussian_posterior_matches_the_closed_form():
    # L_θ(w) = θ w²/2 in one dimension: the posterior is N(0, 1/(nβθ)), so
    # Var(L) = 1/(2 nβ²), ∂_θ L = L/θ and χ = −nβ Var(L)/θ = −1/(2 nβ θ); λ̂ = nβ E[L] = 1/2
    # for every θ, so dλ̂/dθ = 0.
    nbeta, theta = 50.0, 2.0
    g = torch.Generator().manual_seed(0)
    w = torch.randn(3, 8, 20_000, generator=g, dtype=torch.float64) / (nbeta * theta) ** 0.5
    loss = theta * w**2 / 2
    r = posterior_response(loss, loss / theta, torch.zeros(3), nbeta)
    expected = -1 / (2 * nbeta * theta)
    assert torch.all((r.chi - expected).abs() < 4 * r.chi_se)
    assert torch.all(r.dllc.abs() < 4 * r.dllc_se)
    assert torch.all(r.chi_se < 0.1 * abs(expected))  # the test can tell χ from 0


def test_response_needs_chains_and_matching_shapes():
    with pytest.raises(ValueError, match="2 chains"):
        posterior_response(torch.zeros(1, 5), torch.zeros(1, 5), torch.zeros(()), 1.0)
    with pytest.raises(ValueError, match="share"):
        posterior_response(torch.zeros(2, 5), torch.zeros(2, 4), torch.zeros(()), 1.0)


def test_coupled_samples_have_the_right_marginals_and_nest():
    s = torch.tensor([0.5, 0.9])
    x = coupled_sparsity_samples(4, 20_000, s, generator=torch.Generator().manual_seed(1))
    assert x.shape == (2, 20_000, 4)
    density = (x > 0).double().mean((-1, -2))
    se = (s * (1 - s) / 80_000) ** 0.5
    assert torch.all((density - (1 - s)).abs() < 5 * se)
    # Active at the larger sparsity ⇒ active, with the same value, at the smaller one.
    on = x[1] > 0
    assert torch.equal(x[0][on], x[1][on])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        coupled_sparsity_samples(4, 10, torch.tensor([1.5]))
