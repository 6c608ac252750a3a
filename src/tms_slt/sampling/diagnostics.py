"""The ArviZ adapter: LLC traces -> InferenceData, R-hat, ESS, MCSE, reliability.

This is the only module that imports arviz.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import arviz as az
import numpy as np
import xarray as xr

if TYPE_CHECKING:
    from tms_slt.sampling.llc import LLCResult

#: R-hat above this marks an estimate unreliable (Vehtari et al. 2021 suggest 1.01
#: for final inference; SGLD chains of a few hundred draws rarely reach it).
RHAT_THRESHOLD = 1.1


def _posterior(result: LLCResult) -> xr.Dataset:
    """The post-burn-in λ̂ trace nβ(L_t − L_n(w*)) with dims (chain, draw, ...)."""
    trace = result.llc_trace[..., result.num_burnin :].numpy()
    lead = list(result.dims)
    da = xr.DataArray(trace, dims=[*lead, "chain", "draw"], coords=result.coords)
    return xr.Dataset({"llc": da.transpose("chain", "draw", *lead)})


def to_inference_data(result: LLCResult) -> az.InferenceData:
    """Post-burn-in λ̂ draws as the posterior group, raw losses as sample_stats."""
    posterior = _posterior(result)
    stats = xr.Dataset(
        {
            "loss": xr.DataArray(
                result.loss_trace[..., result.num_burnin :].double().numpy(),
                dims=[*result.dims, "chain", "draw"],
                coords=result.coords,
            ).transpose("chain", "draw", *result.dims)
        }
    )
    return az.InferenceData(posterior=posterior, sample_stats=stats)


def llc_diagnostics(result: LLCResult) -> xr.Dataset:
    """Per leading index: R-hat, bulk/tail ESS, MCSE of λ̂, divergences, reliability.

    Divergent chains are excluded before R-hat/ESS are computed. An estimate is
    `reliable` when at least two chains survive, R-hat ≤ RHAT_THRESHOLD, λ̂ ≥ 0,
    and the loss trace is flat: the mean of the last half of the post-burn-in
    draws lies within 3 MCSE-scale standard errors of the first half's.
    """
    post = _posterior(result)["llc"]
    ok = xr.DataArray(~result.divergent.numpy(), dims=[*result.dims, "chain"], coords=result.coords)
    clean = post.where(ok)
    ds = xr.Dataset({"llc": clean})
    rhat = az.rhat(ds)["llc"]
    ess_bulk = az.ess(ds, method="bulk")["llc"]
    ess_tail = az.ess(ds, method="tail")["llc"]
    mcse = az.mcse(ds)["llc"]
    half = clean.sizes["draw"] // 2
    first, last = clean.isel(draw=slice(0, half)), clean.isel(draw=slice(half, None))
    drift = last.mean(("chain", "draw")) - first.mean(("chain", "draw"))
    drift_se = 2.0 * mcse * np.sqrt(2.0)
    flat = np.abs(drift) <= 3.0 * drift_se
    surviving = ok.sum("chain")
    mean = clean.mean(("chain", "draw"))
    reliable = (surviving >= 2) & (rhat <= RHAT_THRESHOLD) & (mean >= 0) & flat
    return xr.Dataset(
        {
            "rhat": rhat,
            "ess_bulk": ess_bulk,
            "ess_tail": ess_tail,
            "mcse": mcse,
            "num_divergent": (~ok).sum("chain"),
            "drift": drift,
            "flat": flat,
            "negative": mean < 0,
            "reliable": reliable,
        }
    )
