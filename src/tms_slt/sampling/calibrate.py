"""Choosing ε (and nβ, γ) for the LLC sampler: one batched run over a grid of settings.

Lau et al. 2023 (arXiv 2308.12108) and the devinterp guides select the step size by
its diagnostics: too large an ε makes chains diverge or inflates λ̂ (discretization
bias; the MALA acceptance probability of the SGLD proposal drops), too small an ε
leaves chains unequilibrated (the λ̂ trace is not flat, R-hat is high). `calibrate`
runs every (ε, nβ, γ) of a grid at once, the grid folded into the chain dimension
(each setting gets `num_chains` chains; the kernel takes per-chain ε, nβ, γ tensors),
and reports per setting λ̂, MCSE, R-hat, ESS, divergent fraction, flatness and MALA
acceptance, then recommends the largest ε whose chains are stable and flat; each grid
point is also judged by the curvature's predicted biases (`sampling.settings`).
`calibrate_around_auto` shows the automatic choice of `estimate_llc` inside such a grid
(`tms-slt calibrate RUN_DIR`); `sampling.benchmark` runs the grid on potentials with known
λ (`tms-slt calibrate --benchmark`).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import xarray as xr
from torch import Tensor

from tms_slt.sampling import curvature
from tms_slt.sampling.llc import (
    check_hyperparameters,
    compute_llc,
    default_nbeta,
    problem_for,
    sample,
)
from tms_slt.sampling.noise import gradient_noise
from tms_slt.sampling.settings import choose_settings, predicted_bias
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
    "sound",
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
    """Per (nβ, γ): the largest ε that is `sound` at every other index (reliable but for
    the precision, which is the run length's business: no divergent chain, R-hat ≤
    threshold, flat trace, λ̂ ≥ 0, no predicted bias) and, if given, whose mean MALA
    acceptance is at least `min_acceptance`. NaN where no ε qualifies."""
    ok = report["sound"] & (report["divergent_fraction"] == 0)
    if min_acceptance is not None:
        if "mala_accept" not in report:
            raise ValueError("min_acceptance needs a report computed with mala=True")
        ok = ok & (report["mala_accept"] >= min_acceptance)
    other = [d for d in ok.dims if d not in GRID_DIMS]
    if other:
        ok = ok.all(other)
    eps = xr.DataArray(report["step_size"].values, dims="step_size", coords=ok["step_size"].coords)
    return eps.where(ok).max("step_size")


def _bias_record(
    problem: Any,
    settings: list[tuple[float, float, float]],
    num_burnin: int,
    num_draws: int,
    generator: torch.Generator,
) -> dict[str, Any]:
    """Per (setting, anchor): the quadratic model's predicted biases and the minimum checks
    (`sampling.curvature`), so that the diagnostics judge every grid point as they judge an
    `estimate_llc` result. Empty for a problem without a differentiable loss."""
    if problem.loss_fn is None:
        return {}
    side = curvature.side_stream(generator)  # the grid's chains keep their own stream
    curv = curvature.probe(problem, side)
    curv = dataclasses.replace(curv, gradient_noise=gradient_noise(problem, curv, side))
    lead = curv.h_max.ndim
    eps, nb, gam = (
        torch.tensor([s[i] for s in settings], dtype=torch.float64).reshape(-1, *[1] * lead)
        for i in range(3)
    )
    shape = (len(settings), *curv.h_max.shape)
    bias = predicted_bias(curv, nb, eps, gam, num_burnin, num_draws)
    return {
        "step_size": eps.expand(shape),
        "localization": gam.expand(shape),
        "hessian_max": curv.h_max.expand(shape),
        "hessian_soft": curv.h_soft.expand(shape),
        "hessian_min": curv.h_min.expand(shape),
        "num_curved": curv.num_curved.expand(shape),
        "newton_drop": curv.newton_drop.expand(shape),
        "newton_shift": curvature.newton_shift(curv, nb).expand(shape),
        "saddle": curvature.is_saddle(curv).expand(shape),
        **{f"predicted_bias_{k}": v.expand(shape) for k, v in bias.items()},
    }


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
    backend: str = "auto",
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
        backend: as for `estimate_llc` (the fused kernel takes per-chain ε, nβ, γ).

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
    record = _bias_record(problem, settings, num_burnin, num_draws, generator)
    traces = sample(problem, kernel, num_draws, generator, progress, backend=backend)

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
        calibration=record,
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


#: Default grid of `calibrate_around_auto`, as multiples of the automatic ε and γ.
STEP_FACTORS = (0.25, 0.5, 1.0, 2.0, 4.0)
LOCALIZATION_FACTORS = (0.25, 1.0, 4.0)


def calibrate_around_auto(
    target: Any,
    loss_fn: Callable[..., Tensor] | None = None,
    dataset: Any = None,
    *,
    step_sizes: Sequence[float] | None = None,
    nbeta: float | None = None,
    localizations: Sequence[float] | None = None,
    num_chains: int = 4,
    batch_size: int = 100,
    generator: torch.Generator | None = None,
    progress: bool = False,
    backend: str = "auto",
    **problem_kw: Any,
) -> xr.Dataset:
    """The automatic choice of `estimate_llc` and a grid around it, as one batched run.

    ε and γ are chosen as `estimate_llc(step_size="auto", localization="auto")` would
    (`llc.choose_settings`: the curvature of L_n at w* and pilot runs); the grid is then
    ε* × STEP_FACTORS by γ* × LOCALIZATION_FACTORS (medians over the anchors) unless given,
    with the automatic chain length. A flat λ̂ along ε and γ around the automatic point is
    the evidence that it is neither discretization- nor localization-biased.

    Returns:
        The `calibrate` report over (step_size, localization, *anchor dims), plus
        `auto_step_size` and `auto_localization` per anchor (attrs: nβ, the automatic chain
        length and the median automatic ε, γ).
    """

    if generator is None:
        generator = torch.Generator().manual_seed(0)
    problem = problem_for(
        target,
        loss_fn,
        dataset,
        num_chains=num_chains,
        batch_size=batch_size,
        importance=problem_kw.get("importance"),
        activation=problem_kw.get("activation", "relu"),
        swish_sharpness=problem_kw.get("swish_sharpness", 1.0),
    )
    nb = default_nbeta(problem.n) if nbeta is None else nbeta
    settings, record, _ = choose_settings(
        problem,
        nb,
        step_size="auto",
        localization="auto",
        num_draws="auto",
        num_burnin="auto",
        generator=generator,
        backend=backend,
    )
    eps0 = float(settings.step_size.median())
    gam0 = float(settings.localization.median())
    if step_sizes is None:
        step_sizes = [eps0 * f for f in STEP_FACTORS]
    if localizations is None:
        localizations = [gam0 * f for f in LOCALIZATION_FACTORS]
    report = calibrate(
        target,
        loss_fn,
        dataset,
        step_sizes=step_sizes,
        nbetas=[nb],
        localizations=localizations,
        num_chains=num_chains,
        num_draws=settings.num_draws,
        num_burnin=settings.num_burnin,
        batch_size=batch_size,
        generator=generator,
        progress=progress,
        backend=backend,
        min_acceptance=None,
        **problem_kw,
    ).squeeze("nbeta", drop=True)
    lead = list(problem.dims)
    report["auto_step_size"] = (
        lead,
        settings.step_size.expand(record["hessian_max"].shape).numpy(),
    )
    report["auto_localization"] = (
        lead,
        settings.localization.expand(record["hessian_max"].shape).numpy(),
    )
    report.attrs.update(
        {
            "nbeta": float(nb),
            "num_draws": settings.num_draws,
            "num_burnin": settings.num_burnin,
            "auto_step_size_median": eps0,
            "auto_localization_median": gam0,
        }
    )
    return report


def format_number(x: Any, spec: str, suffix: str = "") -> str:
    """`x` formatted with `spec` (and `suffix`), or "-" where it is not finite."""
    x = float(x)
    return format(x, spec) + suffix if np.isfinite(x) else "-"


def format_calibration(report: xr.Dataset) -> str:
    """A readable table of a `calibrate_around_auto` report: per anchor, λ̂ ± MCSE, R-hat
    and MALA acceptance at every (ε, γ), the automatic setting marked."""
    lead = [d for d in report["llc_mean"].dims if d not in ("step_size", "localization")]
    eps0 = report.attrs["auto_step_size_median"]
    gam0 = report.attrs["auto_localization_median"]
    lines = [
        f"automatic settings (median over anchors): ε = {eps0:.3g}, γ = {gam0:.3g}, "
        f"nβ = {report.attrs['nbeta']:.4g}, {report.attrs['num_draws']} draws "
        f"({report.attrs['num_burnin']} burn-in)",
    ]
    stacked = report.stack(anchor=lead) if lead else report.expand_dims(anchor=[0])
    for a in range(stacked.sizes["anchor"]):
        point = stacked.isel(anchor=a)
        where = ", ".join(f"{d} {point[d].item()}" for d in lead)
        lines += [
            "",
            where or "anchor",
            f"{'ε':>10} {'γ':>8} {'λ̂':>8} {'± MCSE':>7} {'R-hat':>6} {'MALA':>6} {'reliable':>8}",
        ]
        for eps in point["step_size"].values:
            for gam in point["localization"].values:
                r = point.sel(step_size=eps, localization=gam)
                mark = "  <- automatic" if np.isclose(eps, eps0) and np.isclose(gam, gam0) else ""
                lines.append(
                    f"{eps:>10.3g} {gam:>8.3g} {format_number(r['llc_mean'], '.3f'):>8} "
                    f"{format_number(r['mcse'], '.3f'):>7} {format_number(r['rhat'], '.3f'):>6} "
                    f"{format_number(r['mala_accept'], '.3f') if 'mala_accept' in r else '-':>6} "
                    f"{'yes' if bool(r['reliable']) else 'no':>8}{mark}"
                )
    return "\n".join(lines)
