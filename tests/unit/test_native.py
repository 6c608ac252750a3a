"""The fused C kernel (`sampling.native`) follows the eager torch trajectory.

Same generator ⇒ same minibatches and noise, so the loss and MALA traces of
`backend="native"` and `backend="torch"` agree to float rounding, over every option the
kernel implements. Skipped where no C compiler is available (the torch path is then what
`backend="auto"` runs, and the rest of the suite covers it).
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from tms_slt.native_build import MAX_SPECIALIZED_WEIGHTS
from tms_slt.sampling import native
from tms_slt.sampling.llc import estimate_llc, problem_for, resolve_backend, sample
from tms_slt.sampling.sgld import SGLD
from tms_slt.training import train

needs_compiler = pytest.mark.skipif(not native.available(), reason="no C compiler")


def _params(lead=(3,), m=2, n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    W = 0.6 * torch.randn(*lead, m, n, generator=g)
    b = -0.1 * torch.rand(*lead, n, generator=g)
    return W, b


def _data(n=6, rows=200, lead=(), seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(*lead, rows, n, generator=g)
    return x * (torch.rand(*lead, rows, n, generator=g) < 0.3)  # sparse features


def _relu_problem(W, b, data, *, num_chains, batch_size):
    return problem_for(
        (W, b),
        None,
        data,
        importance=None,
        activation="relu",
        swish_sharpness=1.0,
        num_chains=num_chains,
        batch_size=batch_size,
    )


def _both(target, **kw):
    settings = {
        "num_chains": 3,
        "num_draws": 60,
        "num_burnin": 10,
        "batch_size": 50,
        "step_size": 1e-3,
        "nbeta": 50.0,
        "progress": False,
        **kw,
    }
    return tuple(
        estimate_llc(target, backend=be, generator=torch.Generator().manual_seed(7), **settings)
        for be in ("torch", "native")
    )


def _assert_same(eager, fused):
    torch.testing.assert_close(fused.loss_trace, eager.loss_trace, rtol=1e-4, atol=1e-6)
    if eager.mala_accept is not None:
        torch.testing.assert_close(fused.mala_accept, eager.mala_accept, rtol=0, atol=1e-4)
    torch.testing.assert_close(fused.mean, eager.mean, rtol=1e-4, atol=1e-4)


@needs_compiler
@pytest.mark.parametrize("activation", ["relu", "linear", "swish", "gelu"])
def test_native_matches_torch_for_every_activation(activation):
    W, b = _params()
    eager, fused = _both((W, b), dataset=_data(), activation=activation, swish_sharpness=3.0)
    _assert_same(eager, fused)


@needs_compiler
@pytest.mark.parametrize("batch_size", [1, 8, 13, 50])
def test_native_matches_torch_for_batches_that_are_not_whole_blocks(batch_size):
    """The kernel works on blocks of 8 samples; padded lanes must not contribute."""
    W, b = _params(lead=(2,))
    eager, fused = _both((W, b), dataset=_data(), batch_size=batch_size, mala=True)
    _assert_same(eager, fused)


@needs_compiler
def test_native_matches_torch_with_mala_box_decay_and_per_anchor_data():
    """One dataset per anchor (no sharing), per-anchor importance, every kernel option."""
    W, b = _params(lead=(2, 3))
    eager, fused = _both(
        (W, b),
        dataset=_data(lead=(2, 3)),
        importance=0.8 ** torch.arange(6.0),
        mala=True,
        bounding_box=0.05,
        weight_decay=0.3,
        localization=20.0,
    )
    _assert_same(eager, fused)


@needs_compiler
def test_native_matches_torch_for_a_large_model_on_the_generic_build():
    """m·n above MAX_SPECIALIZED_WEIGHTS runs the generic (unspecialized) loops."""
    m, n = 5, 20
    assert m * n > MAX_SPECIALIZED_WEIGHTS
    W, b = _params(lead=(2,), m=m, n=n)
    eager, fused = _both((W, b), dataset=_data(n=n), mala=True, nbeta=20.0)
    _assert_same(eager, fused)


@needs_compiler
def test_native_matches_torch_on_a_trajectory_without_bias_and_keeps_params(tiny_config):
    """A bias-free run samples W only; kept parameter draws agree too."""
    config = dataclasses.replace(
        tiny_config, model=dataclasses.replace(tiny_config.model, bias=False)
    )
    traj = train(config, progress=False)
    eager, fused = _both(traj, keep_params_every=7, num_draws=40)
    _assert_same(eager, fused)
    assert len(fused.param_trace) == len(eager.param_trace) == 1
    torch.testing.assert_close(fused.param_trace[0], eager.param_trace[0], rtol=1e-4, atol=1e-5)


@needs_compiler
def test_native_takes_per_chain_coefficients():
    """ε, nβ, γ as tensors over chains (a calibration grid) broadcast per chain."""
    W, b = _params(lead=(2,))
    problem = _relu_problem(W, b, _data(), num_chains=3, batch_size=20)
    kernel = SGLD(
        problem.loss_and_grad,
        problem.event_ndims,
        step_size=torch.tensor([1e-4, 1e-3, 3e-3]),
        nbeta=torch.tensor([10.0, 50.0, 80.0]),
        localization=torch.tensor([0.0, 10.0, 100.0]),
        mala=True,
    )
    eager, fused = (
        sample(problem, kernel, 40, torch.Generator().manual_seed(3), backend=be)
        for be in ("torch", "native")
    )
    torch.testing.assert_close(fused.loss, eager.loss, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(fused.mala_accept, eager.mala_accept, rtol=0, atol=1e-4)


@needs_compiler
def test_native_flags_diverging_chains_like_torch():
    """A NaN in the weights must reach the loss (no select that turns NaN into 0)."""
    W, b = _params(lead=(1,))
    eager, fused = _both((W, b), dataset=_data(), step_size=5.0, nbeta=1e4, num_draws=30)
    assert bool(eager.divergent.all())
    assert torch.equal(fused.divergent, eager.divergent)
    assert not bool(torch.isfinite(fused.loss_trace[..., -1]).any())


@needs_compiler
def test_anchors_sharing_a_dataset_share_the_minibatch_stream():
    """Common random numbers: the batch has the dataset's leading dims, not the anchors'."""
    W, b = _params(lead=(4, 3))  # (checkpoint, instance), one training set per instance
    data = _data(lead=(3,))
    problem = _relu_problem(W, b, data, num_chains=2, batch_size=5)
    batch = problem.sample_batch(torch.Generator().manual_seed(0))
    assert batch.shape == (3, 2, 5, 6)


def _kernel(problem, **kw):
    return SGLD(problem.loss_and_grad, problem.event_ndims, step_size=1e-3, nbeta=1.0, **kw)


def test_backend_resolution_explains_why_native_cannot_run():
    W, b = _params()
    problem = _relu_problem(W.double(), b.double(), _data().double(), num_chains=2, batch_size=4)
    with pytest.raises(ValueError, match="float32"):
        resolve_backend("native", problem, _kernel(problem))
    assert resolve_backend("auto", problem, _kernel(problem)) == "torch"
    with pytest.raises(ValueError, match="backend must be one of"):
        resolve_backend("cuda", problem, _kernel(problem))
    module = torch.nn.Linear(3, 1)
    with pytest.raises(ValueError, match="TMS targets only"):
        estimate_llc(
            module,
            lambda f, batch: ((f(batch[0]) - batch[1]) ** 2).mean(),
            (torch.randn(20, 3), torch.randn(20, 1)),
            batch_size=10,
            backend="native",
            progress=False,
        )


def test_missing_compiler_falls_back_to_torch(monkeypatch, tmp_path):
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    monkeypatch.setenv("TMS_SLT_CACHE", str(tmp_path / "cache"))
    with pytest.raises(native.NativeUnavailableError, match="no C compiler"):
        native.load_library(2, 6)
    assert not native.available()
    W, b = _params()
    problem = _relu_problem(W, b, _data(), num_chains=2, batch_size=4)
    assert resolve_backend("auto", problem, _kernel(problem)) == "torch"
    with pytest.raises(ValueError, match="no C compiler"):
        resolve_backend("native", problem, _kernel(problem))


@needs_compiler
def test_native_matches_torch_with_per_instance_importance():
    """Importance (instance, n) broadcast over checkpoints, as a Trajectory may carry it."""
    W, b = _params(lead=(2, 3))
    importance = torch.rand(3, 6, generator=torch.Generator().manual_seed(4)) + 0.5
    eager, fused = _both((W, b), dataset=_data(lead=(3,)), importance=importance, mala=True)
    _assert_same(eager, fused)
