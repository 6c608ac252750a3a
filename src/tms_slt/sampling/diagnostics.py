"""The ArviZ adapter: LLC traces -> InferenceData, R-hat, ESS, MCSE, reliability.

This is the only module that imports arviz. The numbers (R-hat, ESS, MCSE) are ArviZ's,
computed for every anchor at once by `sampling.mcmc_stats`. R-hat and ESS are the
rank-normalized versions of Vehtari, Gelman, Simpson, Carpenter, Bürkner 2021
("Rank-normalization, folding, and localization: an improved R-hat", Bayesian Analysis
16(2)), computed on the per-draw λ̂ trace nβ(L_t − L_n(w*)) as in devinterp / Lau et al.
2023 (arXiv 2308.12108).
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import xarray as xr

with warnings.catch_warnings():
    # ArviZ 0.x announces its 1.0 refactor with a FutureWarning on import: not ours to show.
    warnings.simplefilter("ignore", FutureWarning)
    import arviz as az

from tms_slt.sampling import mcmc_stats
from tms_slt.sampling.curvature import MAX_CURVATURE_RATIO, MAX_NEWTON_SHIFT, MIN_SOFT_STIFFNESS
from tms_slt.sampling.precision import MAX_RELATIVE_ERROR

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from tms_slt.sampling.llc import LLCResult

#: R-hat above this marks an estimate unreliable (Vehtari et al. 2021 suggest 1.01
#: for final inference; SGLD chains of a few hundred draws rarely reach it).
RHAT_THRESHOLD = 1.1

#: λ̂'s standard error (the larger of MCSE and the chains' spread / √K) must be at most
#: MAX_RELATIVE_ERROR of |λ̂| (`sampling.precision`, which lengthens chains to meet it).

#: A bias of λ̂ predicted by the quadratic model of the chain (`sampling.curvature`)
#: beyond this fraction marks the estimate unreliable, naming the bias. The discretization
#: bound is tighter: on the TMS k-gons the measured ε-bias is about 3× the quadratic
#: model's (minibatch noise and the ReLU kinks add to it; `tms-slt calibrate` shows it);
#: the automatic ε (C_STEP = 0.1) predicts ≤ 2.6%.
MAX_PREDICTED_BIAS = 0.05
MAX_PREDICTED_DISCRETIZATION = 0.03
#: The minibatch noise's predicted bias of λ̂ beyond which (either sign) the estimate is
#: unreliable: what the noise correction did not take out (`noise.noise_record`, with s̄
#: measured again where the chains went, from 256 gradient differences: ±9%).
MAX_PREDICTED_NOISE = 0.03

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


def to_inference_data(result: LLCResult, *, max_draws: int | None = None) -> az.InferenceData:
    """Post-burn-in λ̂ draws as the posterior group; raw losses (and MALA acceptance
    probabilities, when recorded) as sample_stats, with a `diverging` flag per draw (the
    chain's, ArviZ's name); L_n(w*), nβ and the sampler's settings as constant_data.

    With `max_draws`, every k-th post-burn-in draw is kept so that at most `max_draws`
    remain per chain (k in the attrs as `thin`): λ̂ from the kept draws is unbiased, with a
    somewhat larger Monte Carlo error; this is what run directories store (traces.nc).
    """
    lead = _lead_dims(result)
    kept = result.num_draws - result.num_burnin
    step = 1 if max_draws is None or kept <= max_draws else -(-kept // max_draws)
    window = slice(result.num_burnin, None, step)

    def draws(t: Any) -> xr.DataArray:
        arr = t[..., window].double().numpy() if hasattr(t, "double") else t
        return xr.DataArray(arr, dims=[*lead, "chain", "draw"], coords=result.coords).transpose(
            "chain", "draw", *lead
        )

    posterior = xr.Dataset({"llc": draws(result.llc_trace)})
    stats = {"loss": draws(result.loss_trace)}
    diverging = np.broadcast_to(
        result.divergent.numpy()[..., None], (*result.divergent.shape, posterior.sizes["draw"])
    )
    stats["diverging"] = draws(np.ascontiguousarray(diverging))
    if result.mala_accept is not None:
        stats["mala_accept"] = draws(result.mala_accept)
    constant = {
        "init_loss": xr.DataArray(
            result.init_loss.double().numpy(), dims=lead, coords=result.coords
        ),
        "nbeta": xr.DataArray(result.nbeta_per_index.numpy(), dims=lead, coords=result.coords),
    }
    for name in ("step_size", "localization"):
        if name in result.calibration:
            values = np.broadcast_to(result.calibration[name].numpy(), result.init_loss.shape)
            constant[name] = xr.DataArray(values, dims=lead, coords=result.coords)
    attrs = {"num_burnin": result.num_burnin, "thin": step * result.thin}
    return az.InferenceData(
        posterior=posterior.assign_attrs(attrs),
        sample_stats=xr.Dataset(stats, attrs=attrs),
        constant_data=xr.Dataset(constant),
    )


def llc_diagnostics(result: LLCResult) -> xr.Dataset:
    """Per leading index: R-hat, bulk/tail ESS, MCSE of λ̂, divergences, reliability.

    Divergent chains (non-finite loss or nβ(L_t − L_n(w*)) above the bound, see
    `LLCResult.divergent`) are excluded before R-hat/ESS/MCSE are computed. An
    estimate is `reliable` when every check passes; `reasons` names each that failed:

    * no chain diverged; R-hat ≤ RHAT_THRESHOLD; λ̂ ≥ 0 (a negative λ̂ means w* is not a
      local minimum: the chains found lower loss); the trace is flat (the means of the two
      halves of the post-burn-in draws differ by at most FLATNESS_Z standard errors, each
      half's taken as √2 · MCSE of the whole);
    * precise: the standard error, max(MCSE, chain spread / √K), is at most
      MAX_RELATIVE_ERROR of |λ̂| (`sound` is every check but this one);
    * with the curvature the sampler recorded (`LLCResult.calibration`): no predicted
      localization or burn-in bias beyond MAX_PREDICTED_BIAS, no discretization bias
      beyond MAX_PREDICTED_DISCRETIZATION, w* near a local minimum (Newton shift at most
      MAX_NEWTON_SHIFT of λ) and not a saddle.
    """
    post = _posterior(result)["llc"]
    lead = _lead_dims(result)
    ok = xr.DataArray(~result.divergent.numpy(), dims=[*lead, "chain"], coords=result.coords)
    clean = post.where(ok)
    # Divergent chains are NaN here on purpose: their anchor's statistics are NaN (as
    # ArviZ's), and the divergence is reported below.
    stats = mcmc_stats.convergence(clean.transpose(*lead, "chain", "draw").values)
    rhat, ess_bulk, ess_tail, mcse = (
        xr.DataArray(stats[name], dims=lead, coords=post.isel(chain=0, draw=0, drop=True).coords)
        for name in ("rhat", "ess_bulk", "ess_tail", "mcse")
    )
    half = clean.sizes["draw"] // 2
    first, last = clean.isel(draw=slice(0, half)), clean.isel(draw=slice(half, None))
    drift = last.mean(("chain", "draw")) - first.mean(("chain", "draw"))
    drift_se = 2.0 * mcse  # sqrt(se_1² + se_2²) with se_half = √2·mcse
    flat = np.abs(drift) <= FLATNESS_Z * drift_se
    surviving = ok.sum("chain")
    mean = clean.mean(("chain", "draw"))
    per_chain = xr.DataArray(result.per_chain.numpy(), dims=[*lead, "chain"], coords=result.coords)
    spread_se = per_chain.std("chain", ddof=1) / np.sqrt(surviving.clip(min=1))
    standard_error = np.maximum(mcse, spread_se.fillna(np.inf))
    precise = standard_error <= MAX_RELATIVE_ERROR * np.abs(mean)
    imprecise = f"imprecise: standard error above {MAX_RELATIVE_ERROR:.0%} of the estimate"
    checks = {
        "all chains diverged": surviving == 0,
        "divergent chains": (surviving > 0) & (surviving < ok.sizes["chain"]),
        f"R-hat above {RHAT_THRESHOLD}": ~(rhat <= RHAT_THRESHOLD) & (surviving > 0),
        "trace not flat (still drifting after burn-in)": ~flat & (surviving > 0),
        "negative: w* is not a local minimum (the chains found lower loss)": mean < 0,
        imprecise: ~precise & (surviving > 0),
        **_calibration_checks(
            result.calibration, lead, result.coords, result.nbeta_per_index, result.init_loss.shape
        ),
    }
    reasons = _reasons(checks, lead, result.coords, mean)
    reliable = reasons == ""
    sound = reliable | (reasons == imprecise)  # failing at most the precision check
    out = {
        "llc_mean": mean,
        "rhat": rhat,
        "ess_bulk": ess_bulk,
        "ess_tail": ess_tail,
        "mcse": mcse,
        "standard_error": standard_error,
        "num_divergent": (~ok).sum("chain"),
        "divergent_fraction": (~ok).mean("chain"),
        "drift": drift,
        "flat": flat,
        "negative": mean < 0,
        "reliable": reliable,
        "sound": sound,
        "reasons": reasons,
    }
    if result.mala_accept is not None:
        acc = xr.DataArray(
            result.mala_accept[..., result.num_burnin :].double().numpy(),
            dims=[*lead, "chain", "draw"],
            coords=result.coords,
        )
        out["mala_accept"] = acc.where(ok).mean(("chain", "draw"))
    return xr.Dataset(out)


def calibration_failures(calibration: dict, nbeta: Any, shape: tuple[int, ...]) -> np.ndarray:
    """(...) bool, of `shape`: the anchors failing any check of the settings and the
    curvature (`_calibration_checks`) that `calibration` (`LLCResult.calibration`) records,
    before any statistics of the traces."""
    lead = [f"dim_{i}" for i in range(len(shape))]
    nb = torch.as_tensor(nbeta, dtype=torch.float64).expand(shape)
    checks = _calibration_checks(calibration, lead, {}, nb, shape)
    failed = np.zeros(shape, dtype=bool)
    for flag in checks.values():
        values = np.asarray(flag.values)
        failed |= values != "" if values.dtype.kind in "USO" else values.astype(bool)
    return failed


def _calibration_checks(
    cal: dict, lead: list[str], coords: dict, nbeta: Any, shape: tuple[int, ...]
) -> dict[str, xr.DataArray]:
    """Biases the curvature at w* predicts for the settings used (`LLCResult.calibration`,
    each entry broadcast to the anchors' `shape`, dims `lead`; nβ per anchor)."""
    if "predicted_bias_localization" not in cal:
        return {}

    def da(name: str) -> xr.DataArray:
        return xr.DataArray(np.broadcast_to(cal[name].numpy(), shape), dims=lead, coords=coords)

    tol = MAX_PREDICTED_BIAS
    return {
        f"localization dominates (predicted bias below −{tol:.0%}): lower γ": da(
            "predicted_bias_localization"
        )
        < -tol,
        f"step size too large (predicted bias above +{MAX_PREDICTED_DISCRETIZATION:.0%}): "
        "lower ε": da("predicted_bias_discretization") > MAX_PREDICTED_DISCRETIZATION,
        f"burn-in too short (predicted bias below −{tol:.0%}): more draws": da(
            "predicted_bias_burnin"
        )
        < -tol,
        **_noise_check(cal, da),
        "w* is not a local minimum of L_n (a Newton step lowers nβ·L_n by more than "
        f"{MAX_NEWTON_SHIFT:.0%} of λ)": da("newton_shift") > MAX_NEWTON_SHIFT,
        "w* is a saddle of L_n (negative Hessian eigenvalue)": da("saddle").astype(bool),
        **_lower_loss_check(cal, da),
        **_anharmonic_check(cal, da, xr.DataArray(nbeta.numpy(), dims=lead, coords=coords)),
    }


#: A chain ending where nβ·L_n is this fraction of the quadratic model's λ (½ × the curved
#: directions) below nβ·L_n(w*) has left the basin of w*: at a minimum it cannot go lower,
#: and a checkpoint passing the Newton-shift check can go at most MAX_NEWTON_SHIFT lower.
MAX_LOWER_LOSS = 0.1


def _lower_loss_check(cal: dict, da: Any) -> dict[str, xr.DataArray]:
    if "lowest_loss_shift" not in cal or "num_curved" not in cal:
        return {}
    allowed = MAX_LOWER_LOSS * np.maximum(0.5 * da("num_curved"), 0.5)
    name = (
        "the chains found lower loss than w* (a chain ended more than "
        f"{MAX_LOWER_LOSS:.0%} of λ below nβ·L_n(w*)): w* is not a minimum within the "
        "posterior's reach"
    )
    return {name: da("lowest_loss_shift") < -allowed}


def _noise_check(cal: dict, da: Any) -> dict[str, xr.DataArray]:
    """The minibatch gradient noise's predicted bias, with the batch size that would fix it
    (a per-anchor message: the failing ones carry their own numbers)."""
    if "predicted_bias_noise" not in cal:
        return {}
    noise = da("predicted_bias_noise")
    failed = np.abs(noise) > MAX_PREDICTED_NOISE
    needed = da("batch_size_needed") if "batch_size_needed" in cal else None
    text = np.full(noise.shape, "", dtype=object)
    for index in np.argwhere(np.atleast_1d(failed.values)):
        index = tuple(index)[: noise.ndim]
        fix = "" if needed is None else f": batch_size ≥ {int(needed.values[index])} fixes it"
        text[index] = (
            f"minibatch gradient noise (predicted bias {float(noise.values[index]):+.0%}, beyond "
            f"±{MAX_PREDICTED_NOISE:.0%}){fix}"
        )
    return {"minibatch noise": xr.DataArray(text.astype(str), dims=noise.dims, coords=noise.coords)}


def _anharmonic_check(cal: dict, da: Any, nbeta: Any) -> dict[str, xr.DataArray]:
    """nβ too small for the asymptotic λ: the softest curved direction too soft, or the
    curvature where the chains sample unlike that of the minimum nearest to them
    (`checks.curvature_ratio_at_ends`)."""
    out = {}
    if "hessian_soft" in cal and "num_curved" in cal:
        soft = da("hessian_soft") * nbeta
        name = (
            f"soft: nβ·h_soft below {MIN_SOFT_STIFFNESS:g}, the posterior spreads beyond the "
            "quadratic region (nβ too small for the asymptotic λ)"
        )
        out[name] = (da("num_curved") > 0) & (soft < MIN_SOFT_STIFFNESS)
    if "curvature_ratio" in cal:
        ratio = da("curvature_ratio")
        name = (
            "anharmonic: the curvature where the chains sample differs from their nearest "
            f"minimum's by more than {MAX_CURVATURE_RATIO:g}× (nβ too small for the asymptotic λ)"
        )
        out[name] = (ratio > MAX_CURVATURE_RATIO) | (ratio < 1 / MAX_CURVATURE_RATIO)
    return out


def _reasons(
    checks: dict[str, xr.DataArray], lead: list[str], coords: dict, like: xr.DataArray
) -> xr.DataArray:
    """ "; "-joined names of the failed checks per leading index ("" where none failed). A
    check given as strings is its own per-index message ("" where it passed)."""
    out = np.full(like.shape, "", dtype=object)
    for name, failed in checks.items():
        values = np.asarray(failed.transpose(*lead).values)
        if values.dtype.kind in "US":
            message = np.broadcast_to(values.astype(object), like.shape)
            mask = message != ""
        else:
            message = np.full(like.shape, name, dtype=object)
            mask = np.broadcast_to(values.astype(bool), like.shape)
        joined = np.where(out == "", message, out + "; " + message)
        out = np.where(mask, joined, out)
    return xr.DataArray(out.astype(str), dims=like.dims, coords=like.coords)


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
