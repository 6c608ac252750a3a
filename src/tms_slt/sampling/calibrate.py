"""Choosing ε (and nβ, γ) for the LLC sampler: one batched run over a grid of settings.

Lau et al. 2023 (arXiv 2308.12108) and the devinterp guides select the step size by
its diagnostics: too large an ε makes chains diverge or inflates λ̂ (discretization
bias; the MALA acceptance probability of the SGLD proposal drops), too small an ε
leaves chains unequilibrated (the λ̂ trace is not flat, R-hat is high). `calibrate`
runs every (ε, nβ, γ) of a grid at once, the grid folded into the chain dimension
(each setting gets `num_chains` chains; the kernel takes per-chain ε, nβ, γ tensors),
and reports per setting λ̂, MCSE, R-hat, ESS, divergent fraction, flatness and MALA
acceptance, then recommends the largest ε whose chains are stable and flat.
`calibrate_known` does the same on models with known λ and reports relative errors.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import xarray as xr
from torch import Tensor

from tms_slt.sampling.llc import (
    check_hyperparameters,
    compute_llc,
    default_nbeta,
    problem_for,
    run_chains,
)
from tms_slt.sampling.sgld import SGLD

GRID_DIMS = ("step_size", "nbeta", "localization")
_REPORTED = (
    "llc_mean",
    "mcse",
    "rhat",
    "ess_bulk",
    "ess_tail",
    "divergent_fraction",
    "flat",
    "negative",
    "reliable",
    "mala_accept",
)


def _grid(
    step_sizes: Sequence[float], nbetas: Sequence[float], localizations: Sequence[float]
) -> list[tuple[float, float, float]]:
    for name, values in (
        ("step_sizes", step_sizes),
        ("nbetas", nbetas),
        ("localizations", localizations),
    ):
        if len(values) == 0:
            raise ValueError(f"{name} must not be empty")
        if len(set(values)) != len(values):
            raise ValueError(f"{name} has repeated values: {list(values)}")
    return list(itertools.product(step_sizes, nbetas, localizations))


def recommend_step_size(report: xr.Dataset, *, min_acceptance: float | None = None) -> xr.DataArray:
    """Per (nβ, γ): the largest ε that is `reliable` at every other index (no divergent
    chain, R-hat ≤ threshold, flat trace, λ̂ ≥ 0) and, if given, whose mean MALA
    acceptance is at least `min_acceptance`. NaN where no ε qualifies."""
    ok = report["reliable"] & (report["divergent_fraction"] == 0)
    if min_acceptance is not None:
        if "mala_accept" not in report:
            raise ValueError("min_acceptance needs a report computed with mala=True")
        ok = ok & (report["mala_accept"] >= min_acceptance)
    other = [d for d in ok.dims if d not in GRID_DIMS]
    if other:
        ok = ok.all(other)
    eps = xr.DataArray(report["step_size"].values, dims="step_size", coords=ok["step_size"].coords)
    return eps.where(ok).max("step_size")


def calibrate(
    target: Any,
    loss_fn: Callable[..., Tensor] | None = None,
    dataset: Any = None,
    *,
    step_sizes: Sequence[float],
    nbetas: Sequence[float] | None = None,
    localizations: Sequence[float] = (100.0,),
    num_chains: int = 4,
    num_draws: int = 300,
    num_burnin: int = 100,
    batch_size: int = 100,
    importance: Tensor | None = None,
    activation: str = "relu",
    swish_sharpness: float = 1.0,
    mala: bool = True,
    true_llc: float | None = None,
    min_acceptance: float | None = 0.9,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> xr.Dataset:
    """Run the grid step_sizes × nbetas × localizations as one batched SGLD computation.

    Args:
        target, loss_fn, dataset, batch_size, importance, activation, swish_sharpness:
            as for `estimate_llc` (a TMS checkpoint: pass one checkpoint's (W, b), or a
            Trajectory; every leading index is calibrated at once).
        step_sizes, nbetas, localizations: the grid of ε, nβ (default [n / log n]) and γ.
        num_chains, num_draws, num_burnin: per setting.
        mala: record MALA acceptance probabilities (one extra gradient per step).
        true_llc: a known λ; adds `relative_error` = (λ̂ − λ)/λ (benchmark mode).
        min_acceptance: also require this mean MALA acceptance for the recommendation
            (ignored without `mala`); 0.9 by default: λ̂ of a quadratic is already
            inflated by ~5-10% when the acceptance falls below it.
        generator: one stream for every setting (default seeded with 0).

    Returns:
        xr.Dataset over (step_size, nbeta, localization, *leading dims) with `llc_mean`,
        `llc_std`, `mcse`, `rhat`, `ess_bulk`, `ess_tail`, `divergent_fraction`,
        `flat`, `negative`, `reliable`, `mala_accept` (if recorded), `relative_error`
        (if `true_llc`), and `recommended_step_size` over (nbeta, localization).
    """
    check_hyperparameters(
        step_size=torch.tensor(list(step_sizes) or [math.nan]),
        nbeta=None if nbetas is None else torch.tensor(list(nbetas) or [math.nan]),
        localization=torch.tensor(list(localizations) or [math.nan]),
        num_chains=num_chains,
        num_draws=num_draws,
        num_burnin=num_burnin,
        batch_size=batch_size,
    )
    # The default nβ grid has one value, so the chain count is known before n is.
    num_settings = len(step_sizes) * (1 if nbetas is None else len(nbetas)) * len(localizations)
    K = num_chains
    problem = problem_for(
        target,
        loss_fn,
        dataset,
        importance=importance,
        activation=activation,
        swish_sharpness=swish_sharpness,
        num_chains=max(num_settings, 1) * K,
        batch_size=batch_size,
    )
    if nbetas is None:
        if problem.n is None:
            raise ValueError("a Potential has no training set: pass nbetas explicitly")
        nbetas = [default_nbeta(problem.n)]
    settings = _grid(step_sizes, nbetas, localizations)
    S = len(settings)
    dtype = problem.params[0].dtype
    eps, nb, gam = (
        torch.tensor([s[i] for s in settings], dtype=dtype).repeat_interleave(K) for i in range(3)
    )
    kernel = SGLD(
        problem.loss_and_grad,
        problem.event_ndims,
        step_size=eps,
        nbeta=nb,
        localization=gam,
        mala=mala,
    )
    if generator is None:
        generator = torch.Generator(device=problem.params[0].device).manual_seed(0)
    traces = run_chains(
        kernel, problem.params, problem.sample_batch, num_draws, generator, progress
    )

    def by_setting(t: Tensor) -> Tensor:  # (..., S*K, draw) -> (S, ..., K, draw)
        t = t.reshape(*t.shape[:-2], S, K, t.shape[-1])
        return t.movedim(-3, 0)

    lead_shape = tuple(problem.init_loss.shape)
    nbeta_s = torch.tensor([s[1] for s in settings], dtype=torch.float64)
    result = compute_llc(
        by_setting(traces.loss),
        problem.init_loss.expand(S, *lead_shape),
        nbeta_s.reshape(S, *([1] * len(lead_shape))),
        num_burnin=num_burnin,
        dims=("setting", *problem.dims),
        coords=problem.coords,
        num_params=problem.num_params,
        mala_accept=None if traces.mala_accept is None else by_setting(traces.mala_accept),
    )
    diag = result.diagnostics
    diag["llc_std"] = (("setting", *problem.dims), result.std.numpy())
    grid_shape = (len(step_sizes), len(nbetas), len(localizations))
    lead_dims = list(problem.dims)
    data = {}
    for name in (*_REPORTED, "llc_std"):
        if name in diag:
            values = diag[name].transpose("setting", *lead_dims).values
            data[name] = ([*GRID_DIMS, *lead_dims], values.reshape(*grid_shape, *lead_shape))
    coords = {
        "step_size": np.asarray(step_sizes, dtype=float),
        "nbeta": np.asarray(nbetas, dtype=float),
        "localization": np.asarray(localizations, dtype=float),
        **{d: np.asarray(v) for d, v in problem.coords.items()},
    }
    report = xr.Dataset(
        data,
        coords=coords,
        attrs={"num_chains": K, "num_draws": num_draws, "num_burnin": num_burnin},
    )
    if true_llc is not None:
        report["relative_error"] = (report["llc_mean"] - true_llc) / true_llc
        report.attrs["true_llc"] = float(true_llc)
    report["recommended_step_size"] = recommend_step_size(
        report, min_acceptance=min_acceptance if mala else None
    )
    return report


def known_llc_models() -> dict[str, tuple[Any, float]]:
    """Test potentials with known λ: name -> (Potential, λ)."""
    from tms_slt.theory import (
        normal_crossing_potential,
        quadratic_potential,
        sum_of_normal_crossings_potential,
    )

    models = {
        "quadratic_d8": quadratic_potential(8),
        "crossing_w^4": normal_crossing_potential([2]),
        "crossings_x^2+y^4": sum_of_normal_crossings_potential([[1], [2]]),
    }
    return {name: (pot, pot.learning_coefficient) for name, pot in models.items()}


def calibrate_known(
    *,
    step_sizes: Sequence[float],
    nbeta: float = 1000.0,
    localization: float = 1.0,
    num_chains: int = 4,
    num_draws: int = 2000,
    num_burnin: int = 500,
    generator: torch.Generator | None = None,
) -> xr.Dataset:
    """Benchmark mode: `calibrate` on each of `known_llc_models()` at one (nβ, γ).

    Returns a Dataset over (model, step_size) with λ̂, MCSE, R-hat, MALA acceptance and
    the relative error (λ̂ − λ)/λ, so the ε that `calibrate` would recommend can be
    checked against ground truth.
    """
    reports = []
    names = []
    for name, (pot, _lam) in known_llc_models().items():
        rep = calibrate(
            pot,
            step_sizes=step_sizes,
            nbetas=[nbeta],
            localizations=[localization],
            num_chains=num_chains,
            num_draws=num_draws,
            num_burnin=num_burnin,
            batch_size=1,
            true_llc=pot.learning_coefficient,
            generator=generator,
        )
        reports.append(rep.squeeze(("nbeta", "localization"), drop=True))
        names.append(name)
    return xr.concat(reports, dim=xr.DataArray(names, dims="model", name="model"))
