"""The ArviZ adapter: LLC traces -> InferenceData, R-hat, ESS, MCSE, reliability.

This is the only module that imports arviz. R-hat and ESS are the rank-normalized
versions of Vehtari, Gelman, Simpson, Carpenter, Bürkner 2021 ("Rank-normalization,
folding, and localization: an improved R-hat", Bayesian Analysis 16(2)), computed on
the per-draw λ̂ trace nβ(L_t − L_n(w*)) as in devinterp / Lau et al. 2023
(arXiv 2308.12108).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import arviz as az
import numpy as np
import xarray as xr

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from tms_slt.sampling.llc import LLCResult

#: R-hat above this marks an estimate unreliable (Vehtari et al. 2021 suggest 1.01
#: for final inference; SGLD chains of a few hundred draws rarely reach it).
RHAT_THRESHOLD = 1.1

#: The trace is "flat" when the means of the two halves of the post-burn-in draws
#: differ by at most this many standard errors of that difference.
FLATNESS_Z = 3.0


def _lead_dims(result: LLCResult) -> list[str]:
    return list(result.dims)


def _posterior(result: LLCResult) -> xr.Dataset:
    """The post-burn-in λ̂ trace nβ(L_t − L_n(w*)) with dims (chain, draw, ...)."""
    trace = result.llc_trace[..., result.num_burnin :].numpy()
    lead = _lead_dims(result)
    da = xr.DataArray(trace, dims=[*lead, "chain", "draw"], coords=result.coords)
    return xr.Dataset({"llc": da.transpose("chain", "draw", *lead)})


def to_inference_data(result: LLCResult) -> az.InferenceData:
    """Post-burn-in λ̂ draws as the posterior group; raw losses (and MALA acceptance
    probabilities, when recorded) as sample_stats; L_n(w*) and nβ as constant_data."""
    posterior = _posterior(result)
    lead = _lead_dims(result)
    stats = {
        "loss": xr.DataArray(
            result.loss_trace[..., result.num_burnin :].double().numpy(),
            dims=[*lead, "chain", "draw"],
            coords=result.coords,
        ).transpose("chain", "draw", *lead)
    }
    if result.mala_accept is not None:
        stats["mala_accept"] = xr.DataArray(
            result.mala_accept[..., result.num_burnin :].double().numpy(),
            dims=[*lead, "chain", "draw"],
            coords=result.coords,
        ).transpose("chain", "draw", *lead)
    constant = xr.Dataset(
        {
            "init_loss": xr.DataArray(
                result.init_loss.double().numpy(), dims=lead, coords=result.coords
            ),
            "nbeta": xr.DataArray(result.nbeta_per_index.numpy(), dims=lead, coords=result.coords),
        }
    )
    return az.InferenceData(
        posterior=posterior, sample_stats=xr.Dataset(stats), constant_data=constant
    )


def llc_diagnostics(result: LLCResult) -> xr.Dataset:
    """Per leading index: R-hat, bulk/tail ESS, MCSE of λ̂, divergences, reliability.

    Divergent chains (non-finite loss or nβ(L_t − L_n(w*)) above the bound, see
    `LLCResult.divergent`) are excluded before R-hat/ESS/MCSE are computed. An
    estimate is `reliable` when at least two chains survive, R-hat ≤ RHAT_THRESHOLD,
    λ̂ ≥ 0 (a negative λ̂ means w* is not a local minimum: the chains found lower
    loss), and the trace is flat: the means of the two halves of the post-burn-in
    draws differ by at most FLATNESS_Z standard errors (each half's standard error
    taken as √2 · MCSE of the whole).
    """
    post = _posterior(result)["llc"]
    lead = _lead_dims(result)
    ok = xr.DataArray(~result.divergent.numpy(), dims=[*lead, "chain"], coords=result.coords)
    clean = post.where(ok)
    ds = xr.Dataset({"llc": clean})
    rhat = az.rhat(ds)["llc"]
    ess_bulk = az.ess(ds, method="bulk")["llc"]
    ess_tail = az.ess(ds, method="tail")["llc"]
    mcse = az.mcse(ds)["llc"]
    half = clean.sizes["draw"] // 2
    first, last = clean.isel(draw=slice(0, half)), clean.isel(draw=slice(half, None))
    drift = last.mean(("chain", "draw")) - first.mean(("chain", "draw"))
    drift_se = 2.0 * mcse  # sqrt(se_1² + se_2²) with se_half = √2·mcse
    flat = np.abs(drift) <= FLATNESS_Z * drift_se
    surviving = ok.sum("chain")
    mean = clean.mean(("chain", "draw"))
    reliable = (surviving >= 2) & (rhat <= RHAT_THRESHOLD) & (mean >= 0) & flat
    out = {
        "llc_mean": mean,
        "rhat": rhat,
        "ess_bulk": ess_bulk,
        "ess_tail": ess_tail,
        "mcse": mcse,
        "num_divergent": (~ok).sum("chain"),
        "divergent_fraction": (~ok).mean("chain"),
        "drift": drift,
        "flat": flat,
        "negative": mean < 0,
        "reliable": reliable,
    }
    if result.mala_accept is not None:
        acc = xr.DataArray(
            result.mala_accept[..., result.num_burnin :].double().numpy(),
            dims=[*lead, "chain", "draw"],
            coords=result.coords,
        )
        out["mala_accept"] = acc.where(ok).mean(("chain", "draw"))
    return xr.Dataset(out)


def plot_llc_trace(result: LLCResult, index: tuple[int, ...] | int = ()) -> Figure:
    """Per-chain λ̂ traces nβ(L_t − L_n(w*)) at one leading index, with λ̂ and its band.

    The band is λ̂ ± 2·(chain std / √K) over the K non-divergent chains; the burn-in is
    shaded and divergent chains are drawn dashed. Built on `matplotlib.figure.Figure`
    (no pyplot, no global state).
    """
    from matplotlib.figure import Figure

    index = (index,) if isinstance(index, int) else tuple(index)
    if len(index) != len(result.dims):
        raise ValueError(f"index {index} must name one entry of each leading dim {result.dims}")
    trace = result.llc_trace[index].numpy()  # (chain, draw)
    divergent = result.divergent[index].numpy()
    mean, std = float(result.mean[index]), float(result.std[index])
    k = int((~divergent).sum())
    fig = Figure(figsize=(6.0, 3.5), layout="constrained")
    ax = fig.add_subplot()
    draws = np.arange(trace.shape[-1])
    for c in range(trace.shape[0]):
        ax.plot(
            draws,
            trace[c],
            lw=0.7,
            alpha=0.8,
            ls="--" if divergent[c] else "-",
            label=f"chain {c}" + (" (divergent)" if divergent[c] else ""),
        )
    ax.axvspan(0, result.num_burnin, color="0.9", zorder=0, label="burn-in")
    if np.isfinite(mean):
        half = 2.0 * std / np.sqrt(max(k, 1)) if np.isfinite(std) else 0.0
        ax.axhline(mean, color="k", lw=1.2, label=f"λ̂ = {mean:.3g}")
        ax.axhspan(mean - half, mean + half, color="k", alpha=0.15, zorder=0)
    where = ", ".join(f"{d}={i}" for d, i in zip(result.dims, index, strict=True))
    ax.set_title(f"LLC trace{' (' + where + ')' if where else ''}")
    ax.set_xlabel("draw")
    ax.set_ylabel("nβ (L_t − L_n(w*))")
    ax.legend(fontsize="x-small", ncols=2)
    return fig
