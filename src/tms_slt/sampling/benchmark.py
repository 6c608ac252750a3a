"""`tms-slt calibrate --benchmark`: the ε (× nβ × γ) grid of `calibrate` on potentials whose
learning coefficient is known exactly, with λ̂'s relative error per setting and whether the ε
recommended from the diagnostics alone lands within the tolerance."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import xarray as xr

from tms_slt.sampling.calibrate import calibrate
from tms_slt.sampling.calibrate import format_number as _fmt

#: Benchmark defaults. The known models are data-free potentials (no n, so no n / log n):
#: nβ = 1000 and γ = 1 keep the localization's pull on λ̂ at γ/(nβ + γ) ≈ 0.1% while the
#: ε grid still spans converged, biased and divergent regimes.
BENCHMARK_NBETA = 1000.0
BENCHMARK_STEP_SIZES = (1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3)
BENCHMARK_LOCALIZATION = 1.0
#: |relative error| below which the recommended ε counts as trustworthy on a known model.
BENCHMARK_TOLERANCE = 0.1


def known_llc_models() -> dict[str, tuple[Any, float]]:
    """Test potentials with known λ: name -> (Potential, λ).

    A regular model (λ = d/2), a one-variable normal crossing w⁴ (λ = 1/4) and two sums of
    crossings over disjoint variables (λ's add): x² + y⁴ (3/4) and x⁴ + y⁴ (1/2).
    """
    from tms_slt.theory import (
        normal_crossing_potential,
        quadratic_potential,
        sum_of_normal_crossings_potential,
    )

    models = {
        "quadratic_d8": quadratic_potential(8),
        "crossing_w^4": normal_crossing_potential([2]),
        "crossings_x^2+y^4": sum_of_normal_crossings_potential([[1], [2]]),
        "crossings_x^4+y^4": sum_of_normal_crossings_potential([[2], [2]]),
    }
    return {name: (pot, pot.learning_coefficient) for name, pot in models.items()}


def calibrate_known(
    *,
    step_sizes: Sequence[float],
    nbetas: Sequence[float] = (BENCHMARK_NBETA,),
    localizations: Sequence[float] = (BENCHMARK_LOCALIZATION,),
    num_chains: int = 4,
    num_draws: int = 2000,
    num_burnin: int = 500,
    models: Sequence[str] | None = None,
    tolerance: float = BENCHMARK_TOLERANCE,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> xr.Dataset:
    """Benchmark mode: `calibrate` on each of `known_llc_models()` over the same grid.

    Args:
        step_sizes, nbetas, localizations: the grid of ε, nβ and γ (as for `calibrate`;
            nβ has no n / log n default here, the potentials have no data).
        num_chains, num_draws, num_burnin: per setting and model (draws include burn-in).
        models: names from `known_llc_models()` to run (default: all).
        tolerance: the recommended ε is `trustworthy` on a model if the |relative error|
            of λ̂ there is below this.
        generator: one stream for all models in turn (default: each model seeded with 0).

    Returns:
        xr.Dataset over (model, step_size, nbeta, localization) with everything `calibrate`
        reports, `relative_error` = (λ̂ − λ)/λ, `true_llc` (λ per model), and over
        (model, nbeta, localization) the `recommended_step_size` (chosen by
        `recommend_step_size` from the diagnostics alone, blind to λ), its
        `recommended_relative_error` and `trustworthy` (|error| < tolerance; False where
        no ε is recommended).
    """
    known = known_llc_models()
    names = list(known) if models is None else list(models)
    unknown = [m for m in names if m not in known]
    if unknown or not names:
        raise ValueError(f"models must be a non-empty subset of {list(known)}, got {names}")
    if not (math.isfinite(tolerance) and tolerance > 0):
        raise ValueError(f"tolerance must be positive, got {tolerance}")
    reports = []
    for name in names:
        pot, lam = known[name]
        rep = calibrate(
            pot,
            step_sizes=step_sizes,
            nbetas=nbetas,
            localizations=localizations,
            num_chains=num_chains,
            num_draws=num_draws,
            num_burnin=num_burnin,
            batch_size=1,
            true_llc=lam,
            generator=generator,
            progress=progress,
        )
        rep["true_llc"] = lam
        rep.attrs.pop("true_llc", None)
        reports.append(rep)
    report = xr.concat(reports, dim=xr.DataArray(names, dims="model", name="model"))
    rec = report["recommended_step_size"]
    at_rec = report["step_size"] == rec
    err = report["relative_error"].where(at_rec).sum("step_size", min_count=1)
    report["recommended_relative_error"] = err
    report["trustworthy"] = abs(err) < tolerance  # NaN (nothing recommended) -> False
    report.attrs["tolerance"] = float(tolerance)
    return report


#: Columns of `format_benchmark`: (header, width).
_BENCHMARK_COLUMNS = (
    ("model", 18),
    ("eps", 7),
    ("nbeta", 7),
    ("gamma", 6),
    ("llc_hat", 8),
    ("llc", 6),
    ("rel_err", 8),
    ("mcse", 7),
    ("rhat", 6),
    ("div_frac", 8),
    ("mala_acc", 8),
)


def _row(cells: Sequence[str]) -> str:
    first, *rest = (
        c.ljust(w) if i == 0 else c.rjust(w)
        for i, (c, (_, w)) in enumerate(zip(cells, _BENCHMARK_COLUMNS, strict=True))
    )
    return " ".join([first, *rest])


def format_benchmark(report: xr.Dataset) -> str:
    """A text table of a `calibrate_known` report: one row per (model, ε, nβ, γ) with λ̂, λ,
    relative error, MCSE, R-hat, divergent fraction and MALA acceptance, the recommended ε
    marked; then per model and (nβ, γ) whether that ε is within the tolerance."""
    tol = report.attrs.get("tolerance", BENCHMARK_TOLERANCE)
    lines = []
    for model in report["model"].values:
        m = report.sel(model=model)
        lam = float(m["true_llc"])
        lines += [f"{model}  (true λ = {lam:g})", _row([h for h, _ in _BENCHMARK_COLUMNS])]
        verdicts = []
        for nb in m["nbeta"].values:
            for gam in m["localization"].values:
                s = m.sel(nbeta=nb, localization=gam)
                rec = float(s["recommended_step_size"])
                for eps in s["step_size"].values:
                    r = s.sel(step_size=eps)
                    cells = [
                        str(model),
                        f"{eps:.0e}",
                        f"{nb:g}",
                        f"{gam:g}",
                        _fmt(r["llc_mean"], ".4f"),
                        f"{lam:g}",
                        _fmt(100 * r["relative_error"], "+.1f", "%"),
                        _fmt(r["mcse"], ".4f"),
                        _fmt(r["rhat"], ".3f"),
                        _fmt(r["divergent_fraction"], ".2f"),
                        _fmt(r["mala_accept"], ".3f") if "mala_accept" in r else "-",
                    ]
                    lines.append(_row(cells) + ("  <- recommended" if eps == rec else ""))
                where = f"  nβ={nb:g}, γ={gam:g}: "
                if np.isfinite(rec):
                    err = float(s["recommended_relative_error"])
                    ok = "yes" if bool(s["trustworthy"]) else "NO"
                    verdicts.append(
                        f"{where}recommended ε = {rec:.0e}, relative error {100 * err:+.1f}%, "
                        f"|error| < {100 * tol:g}%: {ok}"
                    )
                else:
                    verdicts.append(f"{where}no ε in the grid is stable and flat")
        lines += [*verdicts, ""]
    return "\n".join(lines).rstrip("\n")
