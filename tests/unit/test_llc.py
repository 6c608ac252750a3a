"""LLC estimation: input validation, stored-trace recomputation, diagnostics, plots."""

from __future__ import annotations

import math

import arviz as az
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from tms_slt.sampling.diagnostics import plot_llc_trace
from tms_slt.sampling.llc import compute_llc, estimate_llc
from tms_slt.theory import quadratic_potential


def _mse(f, batch):
    x, y = batch
    return ((f(x) - y) ** 2).sum(-1).mean()


def _regression(n: int = 64):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 3, generator=g)
    y = torch.randn(n, 2, generator=g)
    return torch.nn.Linear(3, 2), (x, y)


FAST = {"num_chains": 2, "num_draws": 20, "num_burnin": 5, "batch_size": 8, "progress": False}


class _NoParams(torch.nn.Module):
    def forward(self, x):
        return x


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"nbeta": 0.0}, "nbeta"),
        ({"nbeta": -3.0}, "nbeta"),
        ({"step_size": 0.0}, "step_size"),
        ({"step_size": -1e-3}, "step_size"),
        ({"localization": -1.0}, "localization"),
        ({"batch_size": 65}, "larger than the dataset"),
        ({"num_burnin": 20}, "num_burnin"),
        ({"num_chains": 0}, "num_chains"),
    ],
)
def test_module_path_rejects_bad_settings_before_sampling(kwargs, match):
    model, data = _regression()
    calls = []

    def loss_fn(f, batch):
        calls.append(1)
        return _mse(f, batch)

    with pytest.raises(ValueError, match=match):
        estimate_llc(model, loss_fn, data, **{**FAST, **kwargs})
    assert len(calls) <= 1  # at most the probe: nothing was sampled


def test_module_without_parameters_is_rejected():
    with pytest.raises(ValueError, match="no parameters"):
        estimate_llc(_NoParams(), _mse, _regression()[1], **FAST)


def test_loss_that_is_not_a_scalar_is_rejected():
    model, data = _regression()
    with pytest.raises(ValueError, match="scalar"):
        estimate_llc(model, lambda f, b: ((f(b[0]) - b[1]) ** 2).sum(-1), data, **FAST)


def test_missing_loss_and_mismatched_dataset_are_rejected():
    model, (x, y) = _regression()
    with pytest.raises(ValueError, match="loss_fn"):
        estimate_llc(model, None, (x, y), **FAST)
    with pytest.raises(ValueError, match="same first dimension"):
        estimate_llc(model, _mse, (x, y[:-1]), **FAST)
    with pytest.raises(TypeError, match="estimate_llc takes"):
        estimate_llc("model", **FAST)


def test_potential_needs_nbeta():
    with pytest.raises(ValueError, match="pass nbeta"):
        estimate_llc(quadratic_potential(2), **FAST)


def _tms_result(**kw):
    g = torch.Generator().manual_seed(0)
    W = 0.5 * torch.randn(2, 2, 6, generator=g)
    data = torch.rand(300, 6, generator=g)
    settings = {
        "dataset": data,
        "num_chains": 3,
        "num_draws": 80,
        "num_burnin": 20,
        "batch_size": 50,
        "progress": False,
        "generator": torch.Generator().manual_seed(2),
        **kw,
    }
    return estimate_llc((W, torch.zeros(2, 6)), **settings)


def test_compute_llc_recomputes_the_estimate_from_stored_traces():
    result = _tms_result(mala=True)
    stored = result.to_xarray()
    again = compute_llc(
        torch.from_numpy(stored["loss_trace"].values),
        torch.from_numpy(stored["init_loss"].values),
        float(stored["nbeta"].values.flat[0]),
        num_burnin=int(stored.attrs["num_burnin"]),
        num_params=result.num_params,
    )
    torch.testing.assert_close(again.mean, result.mean)
    torch.testing.assert_close(again.per_chain, result.per_chain)
    manual = result.nbeta * (
        result.loss_trace[..., 20:].double().mean((-1, -2)) - result.init_loss.double()
    )
    torch.testing.assert_close(result.mean, manual)
    assert result.num_params == 2 * 6 + 6


def test_inference_data_round_trips_through_netcdf(tmp_path):
    result = _tms_result(mala=True)
    idata = result.to_inference_data()
    path = tmp_path / "llc.nc"
    idata.to_netcdf(str(path))
    back = az.from_netcdf(str(path))
    post = back.posterior["llc"].transpose("dim_0", "chain", "draw").values
    np.testing.assert_allclose(post, result.llc_trace[..., 20:].numpy())
    np.testing.assert_allclose(post.mean(axis=(1, 2)), result.mean.numpy())
    assert back.posterior.sizes["draw"] == 60
    assert "mala_accept" in back.sample_stats
    np.testing.assert_allclose(back.constant_data["init_loss"].values, result.init_loss.numpy())


def test_diagnostics_have_one_value_per_leading_index():
    result = _tms_result(mala=True)
    diag = result.diagnostics
    for name in ("rhat", "ess_bulk", "ess_tail", "mcse", "num_divergent", "reliable"):
        assert diag[name].dims == ("dim_0",), name
    assert bool((diag["mcse"] > 0).all())
    assert bool(((diag["mala_accept"] > 0) & (diag["mala_accept"] <= 1)).all())
    np.testing.assert_allclose(diag["llc_mean"].values, result.mean.numpy())


def test_too_large_step_size_gives_flagged_divergent_chains():
    """ε far above the stable range sends chains off: flagged, counted, excluded."""
    g = torch.Generator().manual_seed(0)
    W = 0.5 * torch.randn(2, 2, 6, generator=g)
    data = torch.rand(300, 6, generator=g)
    eps = torch.tensor([[1e-4], [3e-2]]).expand(2, 4)  # anchor 0 stable, anchor 1 not
    from tms_slt.sampling.llc import problem_for, run_chains
    from tms_slt.sampling.sgld import SGLD

    problem = problem_for(
        (W, torch.zeros(2, 6)),
        None,
        data,
        importance=None,
        activation="relu",
        swish_sharpness=1.0,
        num_chains=4,
        batch_size=50,
    )
    kernel = SGLD(problem.loss_and_grad, problem.event_ndims, step_size=eps, nbeta=100.0)
    traces = run_chains(
        kernel, problem.params, problem.sample_batch, 100, torch.Generator().manual_seed(0)
    )
    result = compute_llc(
        traces.loss, problem.init_loss, 100.0, num_burnin=10, num_params=problem.num_params
    )
    assert result.num_divergent[0] == 0
    assert result.num_divergent[1] >= 1
    diag = result.diagnostics
    assert int(diag["num_divergent"][1]) == int(result.num_divergent[1])
    assert not bool(diag["reliable"][1])
    ok = ~result.divergent[1]
    if ok.any():
        torch.testing.assert_close(result.mean[1], result.per_chain[1][ok].mean())
    else:
        assert math.isnan(float(result.mean[1]))
    assert torch.isnan(result.per_chain[1][result.divergent[1]]).all()


def test_estimate_away_from_a_minimum_is_negative_and_unreliable():
    """Anchored on a slope of K the chains find lower loss: λ̂ < 0 is flagged."""
    pot = quadratic_potential(3)
    result = estimate_llc(
        pot,
        dataset=torch.full((3,), 2.0),
        nbeta=100.0,
        step_size=1e-3,
        localization=1.0,
        num_chains=4,
        num_draws=200,
        num_burnin=50,
        progress=False,
    )
    assert float(result.mean) < 0
    assert bool(result.diagnostics["negative"])
    assert not bool(result.diagnostics["reliable"])


def test_plot_llc_trace_returns_a_figure():
    result = _tms_result()
    fig = plot_llc_trace(result, 1)
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    assert len(ax.lines) == result.num_chains + 1  # chains and the λ̂ line
    with pytest.raises(ValueError, match="leading dim"):
        plot_llc_trace(result, (0, 1))


@pytest.mark.slow
def test_compiled_step_matches_eager():
    pytest.importorskip("torch._inductor")
    eager = _tms_result(num_draws=30, num_burnin=5, backend="torch")
    compiled = _tms_result(num_draws=30, num_burnin=5, backend="compile")
    torch.testing.assert_close(compiled.loss_trace, eager.loss_trace, rtol=1e-4, atol=1e-5)


def test_calibrate_grid_is_one_batched_run_and_recommends_a_stable_step():
    from tms_slt.sampling.calibrate import calibrate

    pot = quadratic_potential(4)
    report = calibrate(
        pot,
        step_sizes=[1e-4, 1e-3, 3e-2],
        nbetas=[100.0, 1000.0],
        localizations=[0.0, 1.0],
        num_chains=4,
        num_draws=400,
        num_burnin=100,
        true_llc=2.0,
        generator=torch.Generator().manual_seed(0),
    )
    assert report["llc_mean"].dims == ("step_size", "nbeta", "localization")
    assert report["llc_mean"].shape == (3, 2, 2)
    for name in ("mcse", "rhat", "divergent_fraction", "mala_accept", "relative_error"):
        assert name in report, name
    # ε = 3e-2 with nβ = 1000: ε·nβ = 30 > 4, the chains blow up.
    assert float(report["divergent_fraction"].sel(step_size=3e-2, nbeta=1000.0).min()) > 0
    rec = report["recommended_step_size"]
    assert rec.dims == ("nbeta", "localization")
    assert float(rec.sel(nbeta=1000.0, localization=0.0)) == 1e-4
    good = report.sel(step_size=1e-4, nbeta=1000.0)  # ε·nβ = 0.1: mixes within 400 draws
    assert bool((abs(good["relative_error"]) < 0.15).all())
    # the accept rate falls with ε at fixed nβ
    acc = report["mala_accept"].sel(nbeta=1000.0, localization=0.0).values
    assert acc[0] > acc[1]


def test_kept_parameter_draws_are_the_points_the_chain_visited():
    """keep_params_every=k returns w_k, w_2k, …: the kernel run by hand with the same stream."""
    from tms_slt.sampling.llc import draw_noise, problem_for
    from tms_slt.sampling.sgld import SGLD

    g = torch.Generator().manual_seed(0)
    W = 0.5 * torch.randn(2, 2, 6, generator=g)
    b = 0.1 * torch.randn(2, 6, generator=g)
    data = torch.rand(300, 6, generator=g)
    settings = {
        "dataset": data,
        "step_size": 1e-3,
        "nbeta": 50.0,
        "localization": 10.0,
        "num_chains": 3,
        "num_draws": 10,
        "num_burnin": 2,
        "batch_size": 20,
        "progress": False,
    }
    plain = estimate_llc((W, b), generator=torch.Generator().manual_seed(5), **settings)
    kept = estimate_llc(
        (W, b), generator=torch.Generator().manual_seed(5), keep_params_every=3, **settings
    )
    assert plain.param_trace is None and "param_0" not in plain.to_xarray()
    torch.testing.assert_close(kept.loss_trace, plain.loss_trace, rtol=0, atol=0)
    W_kept, b_kept = kept.param_trace
    assert W_kept.shape == (2, 3, 3, 2, 6) and b_kept.shape == (2, 3, 3, 6)
    assert kept.param_steps.tolist() == [3, 6, 9]

    problem = problem_for(
        (W, b),
        None,
        data,
        importance=None,
        activation="relu",
        swish_sharpness=1.0,
        num_chains=3,
        batch_size=20,
    )
    kernel = SGLD(
        problem.loss_and_grad, problem.event_ndims, step_size=1e-3, nbeta=50.0, localization=10.0
    )
    gen = torch.Generator().manual_seed(5)
    state = kernel.init(problem.params)
    visited = []
    for _ in range(9):
        batch = problem.sample_batch(gen)
        state, _ = kernel.step(state, batch, draw_noise(state.params, gen))
        visited.append(state.params)
    # Float tolerance, not equality: the default backend may be the fused kernel, whose
    # sums are ordered differently; a kept draw from any other step is far away.
    for j, step in enumerate((3, 6, 9)):
        torch.testing.assert_close(W_kept[:, :, j], visited[step - 1][0], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(b_kept[:, :, j], visited[step - 1][1], rtol=1e-5, atol=1e-6)
    assert not torch.equal(W_kept[:, :, 0], W_kept[:, :, 1])  # the chain moved

    ds = kept.to_xarray()
    assert ds["param_0"].dims == ("dim_0", "chain", "kept_draw", "param_0_axis_0", "param_0_axis_1")
    assert ds["kept_draw"].values.tolist() == [3, 6, 9]
    np.testing.assert_allclose(ds["param_1"].values, b_kept.double().numpy())
    with pytest.raises(ValueError, match="keep_params_every"):
        estimate_llc((W, b), keep_params_every=11, **settings)
    with pytest.raises(ValueError, match="keep_params_every"):
        estimate_llc((W, b), keep_params_every=0, **settings)


def test_thinning_keeps_every_kth_step_and_counts_burnin_in_steps():
    full = _tms_result(num_draws=80, num_burnin=22)
    thinned = _tms_result(num_draws=80, num_burnin=22, thin=5, mala=True)
    torch.testing.assert_close(thinned.loss_trace, full.loss_trace[..., ::5])
    assert thinned.thin == 5 and thinned.loss_trace.shape[-1] == 16
    assert thinned.num_burnin == 5  # steps 0, 5, …, 20 are burn-in; step 25 is the first kept
    assert thinned.mala_accept.shape == thinned.loss_trace.shape
    assert thinned.to_xarray().attrs["thin"] == 5
    # The estimate is the mean of a subset of the same post-burn-in draws.
    expected = full.nbeta * (
        full.loss_trace[..., 25::5].double().mean(-1) - full.init_loss.double().unsqueeze(-1)
    )
    torch.testing.assert_close(thinned.per_chain, expected, rtol=1e-5, atol=1e-6)


def test_thinning_with_kept_parameters_and_bad_values():
    kept = _tms_result(num_draws=40, num_burnin=10, thin=3, keep_params_every=4)
    assert kept.param_trace[0].shape[-3] == 10  # w_4, w_8, …, w_40
    with pytest.raises(ValueError, match="thin must be a positive integer"):
        _tms_result(thin=0)
    with pytest.raises(ValueError, match="keeps no draw after the burn-in"):
        _tms_result(num_draws=10, num_burnin=9, thin=5)
