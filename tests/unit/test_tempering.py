"""Replica exchange over nβ (`sampling.tempering`) and `training.refine_minimum`."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tms_slt.data import TMSDistribution
from tms_slt.models import get_activation, init_params, reconstruction_loss
from tms_slt.sampling.tempering import TemperedSamples, log_ladder, parallel_tempering
from tms_slt.theory import kgon_critical_point
from tms_slt.training import refine_minimum


@pytest.fixture(scope="module")
def tempered() -> TemperedSamples:
    g = torch.Generator().manual_seed(0)
    x = TMSDistribution(6, active_features=1).sample(2000, generator=g)
    nbeta = log_ladder(30, 3000, 6).float()
    W0, b0 = init_params((6, 4), 2, 6, generator=g)
    return parallel_tempering(
        W0, b0, x, nbeta, num_rounds=40, steps_per_round=100, keep_every=50, generator=g
    )


def test_shapes_and_walkers_are_a_permutation_every_round(tempered):
    assert tempered.W.shape == (6, 4, 80, 2, 6) and tempered.b.shape == (6, 4, 80, 6)
    assert tempered.loss.shape == (6, 4, 40)
    for w in tempered.walker:
        assert sorted(w.ravel().tolist()) == list(range(24))
    assert ((tempered.swap_rate > 0) & (tempered.swap_rate <= 1)).all()


def test_mean_loss_falls_with_nbeta(tempered):
    """d/dβ E_β[L] = −Var_β(L) ≤ 0 for any tempered posterior: the rungs' mean full-data loss
    must decrease along the ladder, beyond the Monte Carlo error of the rung means."""
    half = tempered.loss[..., 20:].double()
    mean = half.mean((-1, -2))
    # Standard error from the spread of the 4 walker columns' means (independent starts).
    se = half.mean(-1).std(-1) / 2
    drop = mean[:-1] - mean[1:]
    assert (drop > -3 * torch.sqrt(se[:-1] ** 2 + se[1:] ** 2)).all(), (mean, se)
    assert mean[0] > mean[-1] + 3 * torch.sqrt(se[0] ** 2 + se[-1] ** 2)


def test_round_trips_count_cold_hot_cold():
    # One walker (index 0) goes rung 1 (cold end) → 0 (hot end) → 1: one round trip.
    walker = torch.tensor([[[1], [0]], [[0], [1]], [[1], [0]]])  # (rounds+1, G=2, R=1)
    s = TemperedSamples(
        nbeta=torch.tensor([1.0, 2.0]),
        W=torch.zeros(2, 1, 1, 2, 3),
        b=torch.zeros(2, 1, 1, 3),
        loss=torch.zeros(2, 1, 2),
        swap_rate=torch.ones(1),
        walker=walker,
    )
    assert s.round_trips().tolist() == [1, 0]  # walker 1: hot → cold → hot, half a trip twice


def test_bad_ladders_are_refused():
    W, b = init_params((3, 2), 2, 6)
    x = torch.rand(100, 6)
    with pytest.raises(ValueError, match="increasing"):
        parallel_tempering(W, b, x, [3.0, 2.0, 1.0], num_rounds=1, steps_per_round=10)
    with pytest.raises(ValueError, match="must be"):
        parallel_tempering(W, b, x, [1.0, 2.0], num_rounds=1, steps_per_round=10)
    with pytest.raises(ValueError, match="divide"):
        parallel_tempering(W, b, x, [1.0, 2.0, 3.0], num_rounds=1, steps_per_round=10, keep_every=3)


def test_refine_minimum_zeroes_the_gradient_of_every_anchor():
    g = torch.Generator().manual_seed(1)
    x = TMSDistribution(6, active_features=1).sample(3000, generator=g)
    points = [kgon_critical_point(k, 6, variant=v) for k, v in ((6, "-"), (5, "+"))]
    W0 = torch.tensor(np.stack([W for W, _ in points]))
    b0 = torch.tensor(np.stack([b for _, b in points]))
    W, b = refine_minimum(W0, b0, x)
    assert W.dtype == W0.dtype and W.shape == W0.shape
    Wr, br = W.clone().requires_grad_(True), b.clone().requires_grad_(True)
    reconstruction_loss(Wr, br, x.double(), None, get_activation("relu")).sum().backward()
    assert Wr.grad.abs().max() < 1e-6 and br.grad.abs().max() < 1e-6
    # Each anchor's minimum alone equals its minimum in the batch (they do not interact).
    W1, b1 = refine_minimum(W0[1], b0[1], x)
    assert torch.allclose(W1, W[1], atol=1e-6) and torch.allclose(b1, b[1], atol=1e-6)
