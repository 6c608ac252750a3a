"""Cross-checks against devinterp's SGLD (`SGMCMC.sgld`) on TMS parameters."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("devinterp")

from tms_slt.models import get_activation, loss_and_grad
from tms_slt.sampling.llc import estimate_llc
from tms_slt.sampling.reference import devinterp_llc, devinterp_noise, devinterp_sgld_chain
from tms_slt.sampling.sgld import SGLD

pytestmark = pytest.mark.reference


def _checkpoint(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    W = 0.6 * torch.randn(2, 6, generator=g, dtype=torch.float64)
    b = -0.05 * torch.rand(6, generator=g, dtype=torch.float64)
    data = torch.rand(400, 6, generator=g, dtype=torch.float64)
    data = data * (torch.rand(400, 6, generator=g, dtype=torch.float64) < 0.3)
    return W, b, data


@pytest.mark.parametrize("activation", ["relu", "gelu"])
@pytest.mark.parametrize(("gamma", "delta"), [(0.0, 0.0), (100.0, 0.0), (30.0, 0.5)])
def test_k_steps_agree_with_devinterp_on_identical_batches_and_noise(activation, gamma, delta):
    W, b, data = _checkpoint()
    importance = 0.8 ** torch.arange(6, dtype=torch.float64)
    steps, eps, nbeta = 25, 1e-3, 50.0
    batches = data[torch.randint(400, (steps, 32), generator=torch.Generator().manual_seed(1))]
    ref_losses, (W_ref, b_ref) = devinterp_sgld_chain(
        W,
        b,
        batches,
        steps,
        step_size=eps,
        nbeta=nbeta,
        localization=gamma,
        weight_decay=delta,
        importance=importance,
        activation=activation,
        noise_generator=torch.Generator().manual_seed(2),
    )
    act = get_activation(activation)

    def grad_fn(params, x):
        loss, dW, db = loss_and_grad(params[0], params[1], x, importance, act)
        return loss, (dW, db)

    kernel = SGLD(
        grad_fn, (2, 1), step_size=eps, nbeta=nbeta, localization=gamma, weight_decay=delta
    )
    state = kernel.init((W, b))
    noise_gen = torch.Generator().manual_seed(2)
    losses = []
    for t in range(steps):
        noise = devinterp_noise([W.shape, b.shape], noise_gen)
        noise = tuple(z.to(torch.float64) for z in noise)
        state, info = kernel.step(state, batches[t], noise)
        losses.append(info.loss)
    torch.testing.assert_close(torch.stack(losses).float(), ref_losses, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(state.params[0], W_ref, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(state.params[1], b_ref, rtol=1e-9, atol=1e-10)


def test_llc_agrees_with_devinterp_within_mcse():
    """λ̂ on a trained TMS checkpoint: ours vs devinterp's, |Δ| < 3·√(MCSE₁² + MCSE₂²)."""
    from tms_slt.config import ExperimentConfig, config_from_dict
    from tms_slt.training import train

    config = config_from_dict(
        {
            "seed": 0,
            "data": {"n_features": 6, "n_train": 1000},
            "model": {"n_hidden": 2},
            "train": {"num_instances": 1, "num_steps": 3000, "num_checkpoints": 2},
        }
    )
    assert isinstance(config, ExperimentConfig)
    traj = train(config, progress=False)
    W, b, data = traj.W[-1, 0], traj.b[-1, 0], traj.train_data[0]
    settings = {
        "num_chains": 4,
        "num_draws": 400,
        "num_burnin": 100,
        "batch_size": 100,
        "step_size": 1e-3,
        "nbeta": 100.0,
        "localization": 100.0,
    }
    ours = estimate_llc(
        (W, b),
        dataset=data,
        importance=traj.importance,
        progress=False,
        generator=torch.Generator().manual_seed(3),
        **settings,
    )
    ref = devinterp_llc(
        W,
        b,
        data,
        importance=traj.importance,
        generator=torch.Generator().manual_seed(4),
        **settings,
    )
    se = (float(ours.diagnostics["mcse"]) ** 2 + float(ref.diagnostics["mcse"]) ** 2) ** 0.5
    diff = abs(float(ours.mean) - float(ref.mean))
    print(f"ours {float(ours.mean):.3f}, devinterp {float(ref.mean):.3f}, 3 SE {3 * se:.3f}")
    assert int(ours.num_divergent.sum()) == 0 and int(ref.num_divergent.sum()) == 0
    assert diff < 3 * se
