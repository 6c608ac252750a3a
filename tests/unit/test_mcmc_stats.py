"""sampling.mcmc_stats against ArviZ 0.23 (`az.rhat`, `az.ess` bulk/tail/mean, `az.mcse`),
trace by trace: the same values to 1e-8 relative, the same NaN and inf."""

from __future__ import annotations

import logging
import warnings

import numpy as np
import pytest
import torch
import xarray as xr

with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)
    import arviz as az

from tms_slt.sampling import mcmc_stats
from tms_slt.sampling.result import LLCResult

RTOL = 1e-8


@pytest.fixture(autouse=True)
def _quiet_arviz():
    """ArviZ logs a warning for every NaN or too-short trace it is given."""
    logger = getattr(az, "_log", None) or logging.getLogger("arviz")
    level = logger.level
    logger.setLevel(logging.ERROR)
    yield
    logger.setLevel(level)


def _arviz(x: np.ndarray) -> dict[str, np.ndarray]:
    """ArviZ's statistics of (..., chain, draw) draws, one trace at a time."""
    lead = x.shape[:-2]
    flat = x.reshape(-1, *x.shape[-2:])
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        out = {
            "rhat": [az.rhat(a) for a in flat],
            "ess_bulk": [az.ess(a, method="bulk") for a in flat],
            "ess_tail": [az.ess(a, method="tail") for a in flat],
            "ess_mean": [az.ess(a, method="mean") for a in flat],
            "mcse": [az.mcse(a) for a in flat],
        }
    return {k: np.asarray(v, dtype=float).reshape(lead) for k, v in out.items()}


def _ar1(rng: np.random.Generator, shape: tuple[int, ...], phi: float) -> np.ndarray:
    noise = rng.standard_normal(shape)
    x = np.empty(shape)
    x[..., 0] = noise[..., 0]
    for t in range(1, shape[-1]):
        x[..., t] = phi * x[..., t - 1] + noise[..., t]
    return x


def _cases() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1234)
    constant = np.ones((4, 4, 30))
    constant[1] *= -2.5
    constant[2] = np.arange(4.0)[:, None]  # each chain constant, at its own level
    constant[3, :2] = rng.standard_normal((2, 30))  # two chains constant, two not
    return {
        "normal": rng.standard_normal((12, 4, 200)),
        "normal, odd draws": rng.standard_normal((12, 3, 201)),
        "AR(1) 0.95": _ar1(rng, (8, 4, 1000), 0.95),
        "AR(1) 0.995": _ar1(rng, (6, 4, 1500), 0.995),
        "AR(1) -0.7 (antithetic)": _ar1(rng, (8, 4, 300), -0.7),
        "different means": rng.standard_normal((8, 4, 150)) + np.arange(4.0)[:, None],
        "one stuck chain": np.concatenate(
            [rng.standard_normal((6, 3, 100)), 5 + 0.01 * rng.standard_normal((6, 1, 100))], 1
        ),
        "constant": constant,
        "ties": rng.integers(0, 3, (10, 4, 60)).astype(float),
        "few values, heavy ties": rng.choice([0.0, 1.0], p=[0.97, 0.03], size=(10, 4, 80)),
        "one chain": rng.standard_normal((6, 1, 120)),
        "4 draws": rng.standard_normal((10, 4, 4)),
        "5 draws": rng.standard_normal((10, 4, 5)),
        "7 draws": rng.standard_normal((10, 4, 7)),
        "10 draws": rng.standard_normal((10, 2, 10)),
        "large offset": 1e6 + rng.standard_normal((6, 4, 100)),
        "several leading dims": _ar1(rng, (2, 3, 4, 4, 90), 0.8),
    }


CASES = _cases()


@pytest.mark.parametrize("name", list(CASES))
def test_convergence_equals_arviz(name: str):
    x = CASES[name]
    ref = _arviz(x)
    got = mcmc_stats.convergence(x)
    for stat in ("rhat", "ess_bulk", "ess_tail", "mcse"):
        assert got[stat].shape == x.shape[:-2]
        np.testing.assert_allclose(got[stat], ref[stat], rtol=RTOL, atol=0, err_msg=stat)


@pytest.mark.parametrize("name", ["normal", "AR(1) 0.95", "ties", "one chain", "7 draws"])
def test_each_function_equals_arviz(name: str):
    x = CASES[name]
    ref = _arviz(x)
    for stat, fn in [
        ("rhat", mcmc_stats.rhat),
        ("ess_bulk", mcmc_stats.ess_bulk),
        ("ess_tail", mcmc_stats.ess_tail),
        ("ess_mean", mcmc_stats.ess_mean),
        ("mcse", mcmc_stats.mcse_mean),
    ]:
        np.testing.assert_allclose(fn(x), ref[stat], rtol=RTOL, atol=0, err_msg=stat)


def test_the_cases_are_not_all_nan():
    """The comparisons above compare numbers: NaN = NaN would pass them vacuously."""
    got = mcmc_stats.convergence(CASES["normal"])
    assert all(np.isfinite(v).all() for v in got.values())
    got = mcmc_stats.convergence(CASES["AR(1) 0.995"])
    assert (got["ess_bulk"] < 100).all()  # strongly autocorrelated: ESS far below 6000
    assert (mcmc_stats.rhat(CASES["different means"]) > 1.4).all()
    # constant: ESS = all split draws; constant chains at different levels: R-hat huge
    assert mcmc_stats.ess_bulk(CASES["constant"])[0] == 4 * 30
    assert mcmc_stats.rhat(CASES["constant"])[2] > 1e6
    assert np.isnan(mcmc_stats.rhat(CASES["constant"])[0])


def test_small_differences_are_caught():
    """The tolerance is tight enough to see a changed Geyer truncation or a changed split."""
    x = CASES["AR(1) 0.95"]
    ref = _arviz(x)["ess_bulk"]
    with pytest.raises(AssertionError):
        np.testing.assert_allclose(mcmc_stats.ess_bulk(x[..., 1:]), ref, rtol=RTOL)


def test_nan_anywhere_gives_nan_for_that_trace_only():
    """As ArviZ: a trace holding a NaN (here a divergent chain, masked) gets NaN for every
    statistic; the other traces are unaffected."""
    rng = np.random.default_rng(5)
    x = _ar1(rng, (5, 4, 200), 0.6)
    x[1, 2] = np.nan  # one chain excluded
    x[3, :, 17] = np.nan  # one draw
    ref = _arviz(x)
    got = mcmc_stats.convergence(x)
    for stat in ("rhat", "ess_bulk", "ess_tail", "mcse"):
        np.testing.assert_allclose(got[stat], ref[stat], rtol=RTOL, atol=0, err_msg=stat)
        assert np.isnan(got[stat][[1, 3]]).all()
        assert np.isfinite(got[stat][[0, 2, 4]]).all()


@pytest.mark.parametrize("threads", [1, 3])
def test_blocks_and_threads_do_not_change_the_values(monkeypatch, threads):
    x = CASES["AR(1) 0.95"]
    whole = mcmc_stats.convergence(x)
    monkeypatch.setattr(mcmc_stats, "BLOCK_VALUES", 1)  # one trace per block
    monkeypatch.setattr(mcmc_stats, "THREADS", threads)
    for stat, values in mcmc_stats.convergence(x).items():
        np.testing.assert_array_equal(values, whole[stat])


def test_z_scale_equals_arviz():
    from arviz.stats.diagnostics import _z_scale

    for name in ("normal", "ties", "few values, heavy ties"):
        x = CASES[name]
        ref = np.stack([_z_scale(a) for a in x])
        np.testing.assert_array_equal(mcmc_stats.z_scale(x), ref)


def test_shape_errors_and_empty_input():
    with pytest.raises(ValueError, match="chain, draw"):
        mcmc_stats.convergence(np.zeros(10))
    out = mcmc_stats.convergence(np.zeros((0, 4, 50)))
    assert all(v.shape == (0,) for v in out.values())


def test_llc_diagnostics_equal_arviz_on_the_nan_masked_traces():
    """`llc_diagnostics` gives what it gave when it called ArviZ on the chains with the
    divergent ones masked to NaN: NaN statistics for an anchor with a divergent chain."""
    g = torch.Generator().manual_seed(3)
    loss = 1.0 + 0.01 * torch.randn(3, 4, 4, 120, generator=g).cumsum(-1) / 10
    loss[0, 1, 2, 50] = float("inf")  # one divergent chain
    result = LLCResult(
        loss_trace=loss,
        init_loss=torch.ones(3, 4),
        nbeta=100.0,
        num_burnin=20,
        dims=("checkpoint", "instance"),
        coords={"checkpoint": np.arange(3) * 10},
        num_params=6,
    )
    diag = result.diagnostics
    post = xr.DataArray(
        result.llc_trace[..., 20:].numpy(), dims=["checkpoint", "instance", "chain", "draw"]
    ).where(xr.DataArray(~result.divergent.numpy(), dims=["checkpoint", "instance", "chain"]))
    ds = xr.Dataset({"llc": post.transpose("chain", "draw", ...)})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        ref = {
            "rhat": az.rhat(ds)["llc"],
            "ess_bulk": az.ess(ds, method="bulk")["llc"],
            "ess_tail": az.ess(ds, method="tail")["llc"],
            "mcse": az.mcse(ds)["llc"],
        }
    for stat, values in ref.items():
        got = diag[stat].transpose("checkpoint", "instance").values
        np.testing.assert_allclose(got, values.values, rtol=RTOL, atol=0, err_msg=stat)
        assert np.isnan(got[0, 1]) and np.isfinite(np.delete(got.ravel(), 1)).all()
    assert list(diag["rhat"].coords["checkpoint"].values) == [0, 10, 20]
    assert not bool(diag["reliable"][0, 1])
