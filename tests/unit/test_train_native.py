"""The fused training kernel (`training_native`) follows the torch training loop, and sparse
batches have the distribution of dense ones.

Same generator ⇒ same initialization, training set and minibatches, so the checkpoints of
`train(backend="native")` and `train(backend="torch")` agree to float rounding over every
activation, optimizer and data option the kernel implements. Skipped where no C compiler
is available (the torch path is then what `backend="auto"` runs).
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from tms_slt import training_native
from tms_slt.config import (
    ConfigError,
    DataConfig,
    ExperimentConfig,
    ModelConfig,
    TrainConfig,
)
from tms_slt.data import SparseSample, SparsityRamp, TMSDistribution
from tms_slt.training import TrainingDivergedError, resolve_backend, train

needs_compiler = pytest.mark.skipif(not training_native.available(), reason="no C compiler")


def _config(
    *,
    n: int = 6,
    m: int = 2,
    n_train: int = 200,
    sparsity: float | None = None,
    instances: int = 3,
    steps: int = 60,
    batch: int = 50,
    **train_options,
) -> ExperimentConfig:
    return ExperimentConfig(
        seed=5,
        data=DataConfig(
            n_features=n,
            sparsity=sparsity,
            active_features=None if sparsity is not None else 1,
            n_train=n_train,
        ),
        model=ModelConfig(n_hidden=m),
        train=TrainConfig(
            num_steps=steps,
            num_instances=instances,
            num_checkpoints=6,
            batch_size=batch,
            **train_options,
        ),
    )


def _assert_same_trajectory(config: ExperimentConfig, **kw) -> None:
    ours = train(config, backend="native", progress=False, **kw)
    ref = train(config, backend="torch", progress=False, **kw)
    assert torch.equal(ours.steps, ref.steps)
    if ref.train_data is not None:
        assert torch.equal(ours.train_data, ref.train_data)
    torch.testing.assert_close(ours.W, ref.W, rtol=1e-4, atol=2e-6)
    torch.testing.assert_close(ours.b, ref.b, rtol=1e-4, atol=2e-6)
    torch.testing.assert_close(ours.loss, ref.loss, rtol=1e-4, atol=1e-6)
    assert not torch.equal(ref.W[0], ref.W[-1])  # it trained


OPTIMIZERS = {
    "sgd": {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 0.01},
    "adam": {"optimizer": "adam", "lr": 0.01, "weight_decay": 0.01},
    "adamw": {"optimizer": "adamw", "lr": 0.01, "weight_decay": 0.05},
}


@needs_compiler
@pytest.mark.parametrize("activation", ["relu", "linear", "swish", "gelu"])
@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
def test_native_matches_torch(activation, optimizer):
    config = _config(**OPTIMIZERS[optimizer])
    model = ModelConfig(n_hidden=2, activation=activation, swish_sharpness=2.5)
    _assert_same_trajectory(dataclasses.replace(config, model=model))


@needs_compiler
def test_native_matches_torch_without_bias_and_full_batch():
    config = _config(batch=200, optimizer="adam", lr=0.02)
    _assert_same_trajectory(dataclasses.replace(config, model=ModelConfig(n_hidden=2, bias=False)))
    _assert_same_trajectory(_config(batch=200, optimizer="sgd", lr=0.1))


@needs_compiler
def test_native_matches_torch_with_per_instance_sparsity_and_importance():
    config = _config(sparsity=0.5, n_train=0, instances=2, batch=33, optimizer="adam", lr=0.01)
    g = torch.Generator().manual_seed(0)
    dist = TMSDistribution(
        6, torch.tensor([[0.2], [0.9]]), importance=torch.rand(2, 6, generator=g)
    )
    _assert_same_trajectory(config, distribution=dist)
    shared = TMSDistribution(6, torch.tensor([[0.7]]))  # one draw shared by every instance
    _assert_same_trajectory(config, distribution=shared)
    fixed = _config(sparsity=0.5, instances=2, batch=40)  # per-instance training sets
    _assert_same_trajectory(fixed, distribution=dist)


@needs_compiler
def test_native_matches_torch_with_a_schedule():
    config = _config(sparsity=0.5, n_train=0, instances=2, batch=32, steps=80)
    ramp = SparsityRamp(n_features=6, start=0.5, end=0.9, begin=20, finish=60, importance_decay=0.8)
    _assert_same_trajectory(config, distribution=ramp)


@needs_compiler
@pytest.mark.parametrize("m", [3, 4], ids=["specialized", "generic"])
def test_native_matches_torch_on_larger_models(m):
    """n = 20: the shape-specialized build through its transposing copy (m·n = 60), and the
    generic one (m·n = 80) with a partial last tile of samples (B = 70 = 64 + 6)."""
    config = _config(n=20, m=m, sparsity=0.7, n_train=300, steps=40, batch=70, optimizer="sgd")
    _assert_same_trajectory(config)


@needs_compiler
def test_native_matches_torch_on_sparse_batches():
    """n = 64 at S = 0.95: sparse minibatches and evaluation samples (generic kernel)."""
    config = _config(n=64, m=5, sparsity=0.95, n_train=0, steps=30, batch=40, optimizer="adamw")
    _assert_same_trajectory(config)


@needs_compiler
def test_native_sharding_over_threads_changes_nothing():
    g = torch.Generator().manual_seed(1)
    W, b = 0.3 * torch.randn(5, 2, 6, generator=g), torch.zeros(5, 6)
    x = torch.rand(1, 5, 40, 6, generator=g).expand(7, -1, -1, -1)
    out = []
    for threads in (1, 3):
        trainer = training_native.NativeTrainer(
            W,
            b,
            optimizer="adam",
            lr=0.01,
            weight_decay=0.0,
            momentum=0.0,
            activation="relu",
            sharpness=1.0,
            train_bias=True,
            num_threads=threads,
        )
        trainer.steps(0, training_native.Rows(x), torch.ones(6))
        out.append(trainer.W)
    assert torch.equal(out[0], out[1])


@needs_compiler
def test_native_divergence_is_reported_like_torch():
    config = _config(lr=1e6)
    messages = []
    for backend in ("native", "torch"):
        with pytest.raises(TrainingDivergedError, match="diverged at step") as err:
            train(config, backend=backend, progress=False)
        messages.append(str(err.value))
    assert messages[0] == messages[1]


def test_backend_resolution(monkeypatch):
    cpu = _config()
    with pytest.raises(ValueError, match="backend must be one of"):
        resolve_backend("fast", cpu)
    assert resolve_backend("torch", cpu) == "torch"
    gpu = dataclasses.replace(cpu, device="cuda")
    assert resolve_backend("auto", gpu) == "torch"
    with pytest.raises(ValueError, match="runs on the CPU") as err:
        resolve_backend("native", gpu)
    assert "\n" not in str(err.value)
    monkeypatch.setenv("CC", "no-such-compiler")
    assert resolve_backend("auto", cpu) == "torch"
    with pytest.raises(ValueError, match="no C compiler"):
        resolve_backend("native", cpu)
    with pytest.raises(ConfigError, match=r"train\.backend"):
        TrainConfig(backend="fast")


def _moments(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    active = x > 0
    return active.double().mean(-2), active.sum(-1).double(), x[active].double()


@pytest.mark.parametrize(
    "sparsity",
    [0.99, torch.tensor([0.0, 0.5, 0.9, 0.99, 1.0]), torch.tensor([[0.97], [0.6]])],
    ids=["scalar", "per-feature", "per-instance"],
)
def test_sparse_samples_have_the_dense_distribution(sparsity):
    """Densities, active counts per sample and values against their exact laws, to 5 Monte
    Carlo standard errors (fixed seed)."""
    n, num = 5, 40_000
    q = TMSDistribution(n, sparsity)
    x = q.sample_sparse(num, generator=torch.Generator().manual_seed(0)).dense()
    assert x.shape == (*q.batch_shape, num, n)
    density, count, values = _moments(x)
    p = q.feature_density.double()
    assert ((density - p).abs() <= 5 * (p * (1 - p) / num).sqrt() + 1e-12).all()
    mean, var = p.sum(-1), (p * (1 - p)).sum(-1)  # counts: a sum of Bernoullis
    assert ((count.mean(-1) - mean).abs() <= 5 * (var / num).sqrt() + 1e-12).all()
    centered = count - count.mean(-1, keepdim=True)
    var_se = ((centered**4).mean(-1) - count.var(-1) ** 2).clamp(min=0).div(num).sqrt()
    assert ((count.var(-1) - var).abs() <= 5 * var_se + 1e-12).all()
    assert abs(values.mean() - 0.5) < 5 * (1 / 12 / len(values)) ** 0.5
    assert abs(values.var() - 1 / 12) < 0.01 and values.min() >= 0 and values.max() < 1


def test_sparse_sample_views_agree():
    q = TMSDistribution(7, torch.tensor([[0.8], [0.3]]))
    s = q.sample_sparse(9, generator=torch.Generator().manual_seed(2))
    x = s.dense()
    assert torch.equal(s.rows(3, 7), x[:, 3:7])
    ptr, feature = s.csr()
    rebuilt = torch.zeros(2 * 9, 7)
    for r in range(2 * 9):
        rebuilt[r, feature[ptr[r] : ptr[r + 1]]] = s.value[ptr[r] : ptr[r + 1]]
    assert torch.equal(rebuilt.view(2, 9, 7), x)
    again = q.sample_sparse(9, generator=torch.Generator().manual_seed(2))
    assert torch.equal(again.index, s.index) and torch.equal(again.value, s.value)
    empty = TMSDistribution(4, 1.0).sample_sparse(10, generator=torch.Generator())
    assert isinstance(empty, SparseSample) and len(empty.index) == 0
    with pytest.raises(ValueError, match="independent features"):
        TMSDistribution(4, active_features=1).sample_sparse(3)
