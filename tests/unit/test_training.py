from __future__ import annotations

import dataclasses

import pytest
import torch

from tms_slt.config import DataConfig, TrainConfig
from tms_slt.data import SparsityRamp, TMSDistribution
from tms_slt.models import reconstruction_loss
from tms_slt.training import TrainingDivergedError, Trajectory, log_checkpoint_steps, train


def test_log_checkpoint_schedule():
    steps = log_checkpoint_steps(5000, 50)
    assert steps[0] == 0 and steps[-1] == 5000
    assert (steps[1:] > steps[:-1]).all()
    assert 40 <= len(steps) <= 50
    ratios = steps[2:].double() / steps[1:-1].double()
    assert ratios.max() < 2.5  # log-spaced: bounded ratio between neighbours


def test_trajectory_shapes_and_loss_decreases(tiny_config):
    traj = train(tiny_config, progress=False)
    C = len(traj.steps)
    assert traj.W.shape == (C, 2, 2, 6)
    assert traj.b.shape == (C, 2, 6)
    assert traj.loss.shape == (C, 2)
    assert traj.train_data.shape == (2, 200, 6)
    assert (traj.loss[-1] < traj.loss[0]).all()


def test_same_seed_same_trajectory(tiny_config):
    a = train(tiny_config, progress=False)
    b = train(tiny_config, progress=False)
    assert torch.equal(a.W, b.W)
    c = train(dataclasses.replace(tiny_config, seed=4), progress=False)
    assert not torch.equal(a.W, c.W)


def test_instances_are_independent_full_batch_gd(tiny_config):
    """With full-batch SGD each instance's first step is plain gradient descent on
    its own training set: training instances together does not mix gradients."""
    config = dataclasses.replace(
        tiny_config, train=dataclasses.replace(tiny_config.train, batch_size=200)
    )
    traj = train(config, progress=False)
    assert int(traj.steps[1]) == 1
    for i in range(traj.num_instances):
        W = traj.W[0, i].clone().requires_grad_()
        b = traj.b[0, i].clone().requires_grad_()
        loss = reconstruction_loss(W, b, traj.train_data[i], traj.importance)
        gW, gb = torch.autograd.grad(loss, (W, b))
        torch.testing.assert_close(traj.W[1, i], traj.W[0, i] - config.train.lr * gW)
        torch.testing.assert_close(traj.b[1, i], traj.b[0, i] - config.train.lr * gb)


def test_divergence_is_reported(tiny_config):
    config = dataclasses.replace(tiny_config, train=dataclasses.replace(tiny_config.train, lr=1e6))
    with pytest.raises(TrainingDivergedError, match="diverged at step"):
        train(config, progress=False)


def test_trajectory_round_trips_through_xarray(tiny_config):
    traj = train(tiny_config, progress=False)
    back = Trajectory.from_xarray(traj.to_xarray(), tiny_config)
    for name in ("steps", "W", "b", "loss", "train_data", "importance"):
        torch.testing.assert_close(getattr(back, name), getattr(traj, name), check_dtype=False)


def test_online_training_with_a_schedule(tiny_config):
    config = dataclasses.replace(
        tiny_config,
        data=DataConfig(n_features=6, sparsity=0.5, active_features=None, n_train=0),
    )
    ramp = SparsityRamp(n_features=6, start=0.5, end=0.9, begin=50, finish=100)
    traj = train(config, distribution=ramp, progress=False)
    assert traj.train_data is None and torch.isfinite(traj.loss).all()
    with pytest.raises(ValueError, match="online"):
        train(tiny_config, distribution=ramp, progress=False)


def test_per_instance_distributions(tiny_config):
    config = dataclasses.replace(
        tiny_config,
        data=DataConfig(n_features=6, sparsity=0.5, active_features=None, n_train=200),
        train=dataclasses.replace(tiny_config.train, num_instances=2),
    )
    dist = TMSDistribution(6, torch.tensor([[0.0], [0.99]]))
    traj = train(config, distribution=dist, progress=False)
    zeros = (traj.train_data == 0).double().mean((1, 2))
    assert zeros[0] == 0 and zeros[1] > 0.9
    with pytest.raises(ValueError, match="num_instances"):
        train(
            dataclasses.replace(config, train=TrainConfig(num_instances=3, num_steps=5)),
            distribution=dist,
            progress=False,
        )


def test_take_restricts_to_checkpoints(tiny_config):
    traj = train(tiny_config, progress=False)
    last = traj.take(-1)
    assert last.steps.tolist() == [traj.steps[-1].item()]
    assert torch.equal(last.W[0], traj.W[-1]) and torch.equal(last.b[0], traj.b[-1])
    assert last.train_data is traj.train_data
    both = traj.take([0, -1])
    assert both.steps.tolist() == [0, tiny_config.train.num_steps]
    with pytest.raises(IndexError, match="out of range"):
        traj.take(len(traj.steps))
