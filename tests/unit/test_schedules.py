"""Schedules of the true distribution (`tms_slt.schedules`)."""

from __future__ import annotations

import pytest
import torch

from tms_slt.schedules import DistributionSchedule, Ramp, schedule_value


def test_linear_log_step_and_cyclic_shapes():
    lin = Ramp("sparsity", 0.5, 0.9, begin=100, finish=300)
    assert float(lin.value_at(0)) == 0.5 and float(lin.value_at(1000)) == pytest.approx(0.9)
    assert float(lin.value_at(200)) == pytest.approx(0.7)
    log = Ramp("sparsity", 0.9, 0.999, begin=0, finish=100, shape="log")
    # Geometric in the density: half way, 1 − S = √(0.1 · 0.001) = 0.01.
    assert float(log.value_at(50)) == pytest.approx(0.99)
    step = Ramp("importance_decay", 1.0, 0.8, begin=50, finish=999, shape="step")
    assert float(step.value_at(49)) == 1.0 and float(step.value_at(50)) == pytest.approx(0.8)
    assert step.change_points() == [(50, 50)]
    cyc = Ramp("sparsity", 0.6, 0.9, begin=0, finish=400, shape="cyclic", cycles=2)
    values = [float(cyc.value_at(t)) for t in (0, 100, 200, 300, 400)]
    assert values == pytest.approx([0.6, 0.9, 0.6, 0.9, 0.6])


def test_per_instance_ramps_give_batched_distributions():
    sched = DistributionSchedule(
        5, (Ramp("sparsity", torch.tensor([[0.1], [0.5]]), 0.9, begin=0, finish=10),)
    )
    q = sched(5)
    assert tuple(q.batch_shape) == (2,)
    assert q.sparsity.squeeze(-1).tolist() == pytest.approx([0.5, 0.7])
    x = q.sample(1000, generator=torch.Generator().manual_seed(0))
    assert x.shape == (2, 1000, 5)
    density = (x > 0).float().mean((-1, -2))
    assert density.tolist() == pytest.approx([0.5, 0.3], abs=0.03)  # 3σ of 5000 Bernoullis


def test_composition_and_round_trip_through_a_dict():
    sched = DistributionSchedule(6, sparsity=0.9) + Ramp(
        "importance_decay", 1.0, 0.7, begin=10, finish=20
    )
    sched = sched + Ramp("sparsity", 0.9, 0.99, begin=0, finish=30, shape="log")
    q = sched(15)
    assert q.importance_decay == pytest.approx(0.85)
    assert sched.change_points() == [(0, 30), (10, 20)]
    again = DistributionSchedule.from_dict(sched.to_dict())
    assert torch.equal(again(15).importance, q.importance)
    assert schedule_value(again, [0, 30], "sparsity").tolist() == pytest.approx([0.9, 0.99])


def test_per_instance_importance_ramp_with_one_active_feature():
    # Chen et al.'s c = 6 setting (exactly one active feature) with two decays ramped at once.
    decays = torch.tensor([[1.0], [0.5]])
    sched = DistributionSchedule(
        6, (Ramp("importance_decay", 1.0, decays, begin=0, finish=10),), active_features=1
    )
    q = sched(10)
    assert tuple(q.batch_shape) == (2,) and q.active_features == 1
    assert q.importance[1].tolist() == pytest.approx([0.5**i for i in range(6)])
    assert q.importance[0].tolist() == pytest.approx([1.0] * 6)
    x = q.sample(50, generator=torch.Generator().manual_seed(0))
    assert x.shape == (2, 50, 6) and ((x > 0).sum(-1) == 1).all()


def test_active_feature_ramp_rounds_to_integers():
    sched = DistributionSchedule(6, (Ramp("active_features", 1, 3, begin=0, finish=10),))
    assert [sched(t).active_features for t in (0, 5, 10)] == [1, 2, 3]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"parameter": "noise"}, "parameter"),
        ({"shape": "sine"}, "shape"),
        ({"begin": 5, "finish": 1}, "begin"),
        ({"end": 1.5}, r"\[0, 1\]"),
    ],
)
def test_bad_ramps_are_one_line_errors(kwargs, match):
    base = {"parameter": "sparsity", "start": 0.5, "end": 0.9, "begin": 0, "finish": 10}
    with pytest.raises(ValueError, match=match):
        Ramp(**{**base, **kwargs})


def test_two_ramps_of_one_parameter_are_refused():
    r = Ramp("sparsity", 0.5, 0.9, begin=0, finish=10)
    with pytest.raises(ValueError, match="one ramp per parameter"):
        DistributionSchedule(5, (r, r))
