from __future__ import annotations

import math

import pytest
import torch

from tms_slt.data import SparsityRamp, TMSDistribution


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.9, 1.0])
def test_fraction_of_zeros_matches_sparsity(sparsity):
    num, n = 20_000, 5
    x = TMSDistribution(n, sparsity).sample(num, generator=_gen())
    assert x.shape == (num, n)
    frac = (x == 0).double().mean().item()
    se = math.sqrt(max(sparsity * (1 - sparsity), 1e-12) / (num * n))
    assert abs(frac - sparsity) <= 5 * se + 1e-12


def test_values_are_uniform_on_unit_interval():
    x = TMSDistribution(4, 0.0).sample(50_000, generator=_gen(1))
    assert x.min() >= 0 and x.max() <= 1
    # U[0,1]: mean 1/2 with standard error sqrt(1/12 / N)
    se = math.sqrt(1 / 12 / x.numel())
    assert abs(x.mean().item() - 0.5) < 5 * se


def test_per_feature_sparsity():
    s = torch.tensor([0.0, 0.5, 0.95])
    x = TMSDistribution(3, s).sample(40_000, generator=_gen(2))
    frac = (x == 0).double().mean(0)
    se = (s * (1 - s) / 40_000).sqrt().double() + 1e-12
    assert ((frac - s.double()).abs() <= 5 * se).all()


@pytest.mark.parametrize("k", [1, 2, 4])
def test_exactly_k_active(k):
    dist = TMSDistribution(6, active_features=k)
    x = dist.sample(5_000, generator=_gen(3))
    assert ((x > 0).sum(-1) == k).all()
    # each feature equally likely to be active: k/n
    frac = (x > 0).double().mean(0)
    se = math.sqrt(k / 6 * (1 - k / 6) / 5_000)
    assert ((frac - k / 6).abs() < 5 * se).all()


def test_batched_distributions_have_per_instance_sparsity():
    s = torch.tensor([[0.1], [0.9]])
    x = TMSDistribution(4, s).sample(10_000, generator=_gen(4))
    assert x.shape == (2, 10_000, 4)
    frac = (x == 0).double().mean((1, 2))
    assert abs(frac[0] - 0.1) < 0.02 and abs(frac[1] - 0.9) < 0.02


def test_same_generator_same_samples():
    dist = TMSDistribution(6, active_features=1)
    assert torch.equal(dist.sample(100, generator=_gen(5)), dist.sample(100, generator=_gen(5)))
    assert not torch.equal(dist.sample(100, generator=_gen(5)), dist.sample(100, generator=_gen(6)))


def test_importance_decay():
    dist = TMSDistribution(4, 0.5, importance_decay=0.7)
    torch.testing.assert_close(dist.importance, torch.tensor([1.0, 0.7, 0.49, 0.343]))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n_features": 3, "sparsity": 1.2},
        {"n_features": 3, "sparsity": [0.1, 0.2]},
        {"n_features": 0, "sparsity": 0.5},
        {"n_features": 3},
        {"n_features": 3, "sparsity": 0.5, "active_features": 1},
        {"n_features": 3, "active_features": 4},
        {"n_features": 3, "sparsity": float("nan")},
    ],
)
def test_bad_input(kwargs):
    with pytest.raises(ValueError):
        TMSDistribution(**kwargs)


def test_sparsity_ramp():
    ramp = SparsityRamp(n_features=3, start=0.0, end=0.8, begin=10, finish=20)
    assert ramp.sparsity_at(0) == 0.0 and ramp.sparsity_at(15) == pytest.approx(0.4)
    assert ramp.sparsity_at(100) == 0.8
    assert ramp(15).sparsity.item() == pytest.approx(0.4)
    with pytest.raises(ValueError):
        SparsityRamp(n_features=3, start=0.0, end=1.5, begin=0, finish=1)
