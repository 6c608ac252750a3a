"""Figures of the moving-distribution and swish studies (`tms_slt.paper.moving`), as
functions of saved data."""

from __future__ import annotations

import numpy as np
import xarray as xr
from matplotlib.figure import Figure

#: Where ReLU (γ = ∞) is drawn on the log γ axis, relative to the largest finite γ.
RELU_OFFSET = 3.0
#: Line colours of the hysteresis runs that start at the low end (up) and at the pentagon's.
HYSTERESIS_UP = ("#08519c", "#3182bd", "#6baed6", "#9ecae1")
HYSTERESIS_DOWN = ("#a50f15", "#de2d26", "#fb6a4a", "#fc9272")
#: Darkest to lightest shade, in this order.
SPEEDS = ("slow", "medium", "fast", "held")


def _gamma_axis(gamma: np.ndarray) -> np.ndarray:
    finite = gamma[np.isfinite(gamma)]
    return np.where(np.isfinite(gamma), gamma, finite.max() * RELU_OFFSET)


def plot_swish(ds: xr.Dataset, *, settings: tuple[str, ...] = ("elhage", "chen")) -> Figure:
    """Against γ (log x; ReLU drawn at the right as "ReLU"): the stray norm (largest ‖W_i‖
    among unrepresented columns), the regular residual, the loss gap to ReLU and, for the
    c = 6 setting, λ̂; medians with the range over rows and seeds."""
    fig = Figure(figsize=(10, 6.5), layout="constrained")
    axes = fig.subplots(2, 2).ravel()
    gamma = ds["gamma"].values
    x = _gamma_axis(gamma)
    panels = (
        ("stray_norm", "stray norm (unrepresented columns)"),
        ("regular_residual", "distance from a regular k-gon"),
        ("loss_gap", "loss − ReLU's loss"),
        ("llc", "λ̂ (defaults)"),
    )
    for ax, (name, title) in zip(axes, panels, strict=True):
        for i, setting in enumerate(settings):
            var = f"{setting}_{name}"
            if var not in ds:
                continue
            values = ds[var].values.reshape(len(gamma), -1)
            med = np.nanmedian(values, axis=1)
            lo, hi = np.nanmin(values, axis=1), np.nanmax(values, axis=1)
            ax.fill_between(x, lo, hi, color=f"C{i}", alpha=0.15)
            ax.plot(x, med, "-o", ms=3, color=f"C{i}", label=setting)
        ax.set_xscale("log")
        ax.set_xticks(x, [f"{g:g}" if np.isfinite(g) else "ReLU" for g in gamma], fontsize=7)
        ax.set_xlabel("swish sharpness γ")
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=7)
    axes[0].axhline(0.1, color="0.5", ls=":", lw=0.8)
    axes[1].axhline(0.1, color="0.5", ls=":", lw=0.8)
    return fig


def plot_tracking(
    ds: xr.Dataset,
    run: str,
    symbol: str = "S",
    instance: int = 0,
    llc_shown: np.ndarray | None = None,
) -> Figure:
    """One moving run: eigenvalues of WWᵀ and ‖W‖²_F against step with the scheduled
    parameter (`symbol`) on a second axis, the detector's transitions shaded (green:
    schedule-driven, orange: learning-driven), λ̂ ± SE below where estimated (only where the
    (checkpoint, instance) mask `llc_shown` is True, if given), and W's columns at each
    stage."""
    from tms_slt.plots import plot_columns
    from tms_slt.transitions.dynamical import plateau_segments

    p = f"{run}_"
    step = ds[f"{run}_checkpoint"].values
    fig = Figure(figsize=(9, 7.5), layout="constrained")
    strip, body = fig.subfigures(2, 1, height_ratios=[1, 3.6])
    kgon = ds[p + "kgon"].isel(instance=instance).values
    stages = plateau_segments(kgon)[-7:]
    for ax, (a, b, label) in zip(
        strip.subplots(1, len(stages), squeeze=False)[0], stages, strict=True
    ):
        mid = (a + b - 1) // 2
        W = ds[p + "W"].isel(instance=instance).values[mid]
        plot_columns(W, ax=ax, title=f"{label} @ {step[mid]}")
    has_llc = p + "llc_mean" in ds
    has_chi = p + "chi" in ds
    axes = body.subplots(1 + has_llc + has_chi, 1, sharex=True, squeeze=False)[:, 0]
    top = axes[0]
    eig = ds[p + "gram_eigenvalues"].isel(instance=instance).values
    for j in range(eig.shape[-1]):
        top.plot(step, eig[:, j], color=f"C{j}", lw=1.2, label=f"eigenvalue {j + 1} of WWᵀ")
    top.plot(step, ds[p + "feature_count"].isel(instance=instance), "k-", lw=1.5, label="‖W‖²_F")
    top.set_ylabel("eigenvalues, ‖W‖²_F")
    twin = top.twinx()
    twin.plot(
        step, ds[p + "schedule_value"], color="C2", ls="--", lw=1, label=f"{symbol} (schedule)"
    )
    twin.set_ylabel(symbol, color="C2")
    for ax in axes:
        _shade(ax, ds, run, instance)
    if has_llc:
        llc = ds[p + "llc_mean"].isel(instance=instance).values
        se = ds[p + "llc_se"].isel(instance=instance).values
        ok = np.isfinite(llc) if llc_shown is None else llc_shown[:, instance]
        rel = ds[p + "llc_reliable"].isel(instance=instance).values.astype(bool)
        axes[1].fill_between(step[ok], (llc - se)[ok], (llc + se)[ok], color="C3", alpha=0.2)
        axes[1].plot(step[ok], llc[ok], "-", color="C3", lw=1)
        axes[1].plot(step[ok & rel], llc[ok & rel], "o", color="C3", ms=3, label="λ̂ (reliable)")
        axes[1].plot(
            step[ok & ~rel], llc[ok & ~rel], "o", mfc="none", color="C3", ms=3, label="λ̂ (flagged)"
        )
        axes[1].set_ylabel("λ̂ ± SE")
        axes[1].set_title("LLC at the minimum of L_n nearest the checkpoint", fontsize=8)
        axes[1].legend(fontsize=7, loc="upper left")
    if has_llc and has_chi:
        chi = ds[p + "chi"].isel(instance=instance).values
        chi_se = ds[p + "chi_se"].isel(instance=instance).values
        axes[2].fill_between(
            step[ok], (chi - chi_se)[ok], (chi + chi_se)[ok], color="C4", alpha=0.2
        )
        axes[2].plot(step[ok], chi[ok], "o-", color="C4", ms=3, lw=1)
        axes[2].axhline(0, color="0.6", lw=0.8)
        axes[2].set_ylabel("χ ± SE")
        axes[2].set_title(f"susceptibility χ = −nβ Cov(L, ∂L/∂{symbol})", fontsize=8)
    axes[-1].set_xlabel("step")
    top.legend(fontsize=7, loc="upper left")
    twin.legend(fontsize=7, loc="lower right")
    top.set_title(f"{run.replace('_', ' ')}, instance {instance}", fontsize=10)
    return fig


def _shade(ax, ds: xr.Dataset, run: str, instance: int) -> None:
    p = f"{run}_transition_"
    if p + "location" not in ds:
        return
    for inst, loc, driver in zip(
        ds[p + "instance"].values, ds[p + "location"].values, ds[p + "driver"].values, strict=True
    ):
        if int(inst) == instance:
            color = "C2" if str(driver) == "schedule" else "C1"
            ax.axvline(float(loc), color=color, alpha=0.5, lw=3)


def plot_hysteresis(
    ds: xr.Dataset, settings: list[str], runs: list[str], warmup: int, symbols: dict[str, str]
) -> Figure:
    """Per setting, ‖W‖²_F against the scheduled parameter for each run (out: solid, back:
    dashed; mean over instances; up runs in blue shades, down runs in red shades) beside the
    static answer (median final ‖W‖²_F with the parameter held)."""
    fig = Figure(figsize=(6 * len(settings), 4.5), layout="constrained")
    axes = fig.subplots(1, len(settings), squeeze=False)[0]
    for ax, setting in zip(axes, settings, strict=True):
        static = ds[f"{setting}_static_feature_count"].isel(static_checkpoint=-1).median("seed")
        ax.plot(ds[f"{setting}_value"], static, "ko-", ms=4, lw=2, label="static (held)")
        mine = [r for r in runs if r.startswith(f"{setting}_")]
        for run in mine:
            _, direction, speed = run.split("_")
            shade = SPEEDS.index(speed) if speed in SPEEDS else 0
            color = (HYSTERESIS_UP if direction == "up" else HYSTERESIS_DOWN)[shade]
            step = ds[f"{run}_checkpoint"].values
            v = ds[f"{run}_schedule_value"].values
            fc = ds[f"{run}_feature_count"].mean("instance").values
            ramp = step >= warmup
            far = np.where(ramp, np.abs(v - v[ramp][0]), -np.inf)
            turn = int(np.argmax(far))
            label = f"{direction}, {speed}"
            if speed == "held":
                hold = ramp & (v == v[turn])
                ax.plot(v[hold], fc[hold], ":", color=color, lw=2, label=f"{label} (while held)")
                continue
            index = np.arange(len(step))
            ax.plot(
                v[ramp & (index <= turn)],
                fc[ramp & (index <= turn)],
                "-",
                color=color,
                label=f"{label}: out",
            )
            ax.plot(
                v[ramp & (index >= turn)],
                fc[ramp & (index >= turn)],
                "--",
                color=color,
                label=f"{label}: back",
            )
        ax.set_xlabel(symbols[setting])
        ax.set_ylabel("‖W‖²_F (features represented, soft count)")
        ax.set_title(setting, fontsize=10)
        ax.legend(fontsize=6, ncol=2)
    return fig
