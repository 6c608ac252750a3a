"""Automatic settings of `estimate_llc` and the diagnostics that catch biased ones."""

from __future__ import annotations

import math

import pytest
import torch

from tms_slt.sampling.llc import estimate_llc
from tms_slt.theory import Potential, quadratic_potential


def _run(target, **kw):
    kw.setdefault("progress", False)
    kw.setdefault("generator", torch.Generator().manual_seed(0))
    return estimate_llc(target, **kw)


def _reasons(result) -> str:
    return str(result.diagnostics["reasons"].values.item())


def test_auto_records_its_choice_and_evidence():
    d, nbeta = 6, 1000.0
    result = _run(quadratic_potential(d), nbeta=nbeta)
    cal = result.calibration
    # K = ‖w‖²/2: h_max = h_soft = 1, so γ = min(0.05·nβ, 0.1·√nβ) and ε = 0.1/(nβ + γ).
    gamma = min(0.05 * nbeta, 0.1 * math.sqrt(nbeta))
    assert float(cal["localization"]) == pytest.approx(gamma, rel=1e-3)
    assert float(cal["step_size"]) == pytest.approx(0.1 / (nbeta + gamma), rel=1e-3)
    assert int(cal["num_curved"]) == d
    assert cal["mode"] == "step_size=auto, localization=auto, num_draws=auto, num_burnin=auto"
    ds = result.to_xarray()
    assert "step_size" in ds and "predicted_bias_total" in ds
    assert ds.attrs["calibration_mode"] == cal["mode"]
    assert bool(result.diagnostics["sound"])


def test_given_settings_are_kept():
    result = _run(
        quadratic_potential(3),
        nbeta=100.0,
        step_size=1e-3,
        localization=2.0,
        num_draws=300,
        num_burnin=50,
    )
    assert float(result.calibration["step_size"]) == pytest.approx(1e-3)
    assert float(result.calibration["localization"]) == 2.0
    assert result.num_draws == 300 and result.num_burnin == 50
    assert "step_size=given" in result.calibration["mode"]


def test_strong_localization_is_flagged():
    """γ = 10·nβ·h: every direction keeps 1/11 of its variance; λ̂ ≈ λ/11."""
    result = _run(quadratic_potential(4), nbeta=100.0, localization=1000.0)
    assert not bool(result.diagnostics["reliable"])
    assert "localization dominates" in _reasons(result)
    assert float(result.calibration["predicted_bias_localization"]) < -0.8


def test_large_step_is_flagged():
    """ε·nβ·h = 0.6: the Euler chain inflates each variance by 1/(1 − 0.15)."""
    result = _run(quadratic_potential(4), nbeta=100.0, step_size=6e-3, localization=0.0)
    assert "step size too large" in _reasons(result)
    assert float(result.calibration["predicted_bias_discretization"]) == pytest.approx(
        1 / (1 - 0.6 / 4) - 1, rel=1e-3
    )


def test_anchor_away_from_the_minimum_is_flagged():
    pot = quadratic_potential(4)
    result = _run(pot, nbeta=1000.0, dataset=torch.full((4,), 0.3))
    assert "not a local minimum" in _reasons(result)
    # ½ gᵀH⁻¹g = ½ · 4 · 0.3² at K = ‖w‖²/2, as a fraction of λ = 2 times nβ:
    assert float(result.calibration["newton_shift"]) == pytest.approx(
        1000 * 0.5 * 4 * 0.09 / 2, rel=1e-3
    )


def test_saddle_is_flagged():
    saddle = Potential(
        dim=2,
        learning_coefficient=math.nan,
        fn=lambda w: w[..., 0] ** 2 - w[..., 1] ** 2 + w[..., 1] ** 4,
        multiplicity=None,
        name="saddle",
    )
    result = _run(saddle, nbeta=100.0, num_draws=400)
    assert "saddle" in _reasons(result)
    assert not bool(result.diagnostics["reliable"])


def test_every_chain_diverged_is_a_reason():
    result = _run(quadratic_potential(2), nbeta=100.0, step_size=1.0, num_draws=200)
    assert bool((result.num_divergent == result.num_chains).all())
    assert "all chains diverged" in _reasons(result)


def test_non_finite_loss_at_the_anchor_is_one_line():
    with pytest.raises(ValueError, match="not finite"):
        _run(quadratic_potential(2), nbeta=100.0, dataset=torch.tensor([math.inf, 0.0]))


@pytest.mark.parametrize(
    ("name", "value"),
    [("step_size", "fast"), ("localization", "none"), ("num_draws", "many")],
)
def test_bad_auto_strings_are_rejected(name, value):
    with pytest.raises(ValueError, match=f"{name} must be a number or 'auto'"):
        _run(quadratic_potential(2), nbeta=100.0, **{name: value})


def test_same_seed_same_result_in_auto_mode():
    a = _run(quadratic_potential(3), nbeta=500.0)
    b = _run(quadratic_potential(3), nbeta=500.0)
    torch.testing.assert_close(a.loss_trace, b.loss_trace, rtol=0, atol=0)
    assert float(a.calibration["step_size"]) == float(b.calibration["step_size"])


def test_devinterp_style_inputs_give_the_same_estimate():
    """A DataLoader (or TensorDataset) and an `evaluate(model, batch) -> (loss, outputs)`
    are accepted as devinterp users pass them, and give the same chains as tensors."""
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    g = torch.Generator().manual_seed(0)
    x = torch.randn(500, 3, generator=g)
    y = x @ torch.randn(3, 2, generator=g)
    model = nn.Linear(3, 2, bias=False)

    def loss_fn(f, batch):
        return ((f(batch[0]) - batch[1]) ** 2).sum(-1).mean()

    def evaluate(f, batch):
        out = f(batch[0])
        return ((out - batch[1]) ** 2).sum(-1).mean(), out

    kw = {"step_size": 1e-4, "localization": 1.0, "num_draws": 50, "num_burnin": 10}
    plain = _run(model, loss_fn=loss_fn, dataset=(x, y), **kw)
    loader = DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True)
    devinterp = _run(model, loss_fn=evaluate, dataset=loader, **kw)
    torch.testing.assert_close(plain.loss_trace, devinterp.loss_trace)
    ds = devinterp.dataset
    assert {"llc_mean", "llc_per_chain", "loss_trace", "init_loss", "reliable"} <= set(ds)


def _noisy_regression(n: int = 2000, d: int = 5, sigma: float = 1.0):
    g = torch.Generator().manual_seed(4)
    x = torch.randn(n, d, generator=g)
    y = x @ torch.randn(d, 1, generator=g) + sigma * torch.randn(n, 1, generator=g)
    model = torch.nn.Linear(d, 1, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.linalg.lstsq(x, y).solution.T)

    def loss(f, batch):
        return ((f(batch[0]) - batch[1]) ** 2).sum(-1).mean()

    return model, loss, (x, y)


def test_minibatch_noise_beyond_its_correction_names_the_batch_size():
    """What the noise correction cannot take out is one reason, with the predicted bias and
    the batch size that would fix it (the issue's 'bad input': never a silent number)."""
    from tms_slt.sampling.result import compute_llc

    model, loss, data = _noisy_regression()
    result = estimate_llc(model, loss, data, batch_size=10, progress=False)
    assert "gradient_noise" in result.calibration and "batch_size_needed" in result.calibration
    assert abs(float(result.calibration["predicted_bias_noise"])) <= 0.03
    calibration = dict(result.calibration)
    calibration["predicted_bias_noise"] = torch.tensor(0.2, dtype=torch.float64)
    calibration["batch_size_needed"] = torch.tensor(40)
    flagged = compute_llc(
        result.loss_trace,
        result.init_loss,
        result.nbeta,
        num_burnin=result.num_burnin,
        num_params=result.num_params,
        calibration=calibration,
    )
    reasons = str(flagged.diagnostics["reasons"].values)
    assert "minibatch gradient noise (predicted bias +20%, beyond ±3%): batch_size ≥ 40" in reasons
    assert not bool(flagged.diagnostics["reliable"])


def test_the_anchors_batch_loss_is_a_control_variate():
    """The loss trace of a module is L_B(w_t) − L_B(w*) + L_n(w*): the same random stream
    gives the same chain, each draw differs from the raw minibatch loss by exactly the
    anchor's deviation on that batch, and the trace's variance falls by far."""
    from tms_slt.sampling.chains import run_chains
    from tms_slt.sampling.problems import module_problem
    from tms_slt.sampling.sgld import SGLD

    model, loss, data = _noisy_regression()
    problem = module_problem(model, loss, data, num_chains=2, batch_size=10)
    kernel = SGLD(problem.loss_and_grad, problem.event_ndims, step_size=1e-5, nbeta=100.0)
    seen = []

    def control(batch):
        seen.append(problem.anchor_batch_loss(batch) - problem.init_loss)
        return seen[-1]

    def run(with_control):
        gen = torch.Generator().manual_seed(0)
        return run_chains(
            kernel,
            problem.params,
            problem.sample_batch,
            300,
            gen,
            control=control if with_control else None,
        ).loss

    raw, controlled = run(False), run(True)
    torch.testing.assert_close(controlled, raw - torch.stack(seen, -1))
    assert float(controlled.var()) < 0.05 * float(raw.var())
