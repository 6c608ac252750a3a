"""Figures of the Chen et al. 2023 reproduction (`tms_slt.paper.chen`), as functions of saved
data."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import xarray as xr
from matplotlib.figure import Figure

from tms_slt.plots import plot_columns, plot_loss_llc
from tms_slt.transitions.dynamical import plateau_segments

#: Configuration classes drawn in the posterior figure, and the rest pooled.
POSTERIOR_CLASSES = ("6", "5+", "5-")


def plot_bayesian_transitions(
    fractions: xr.DataArray, crossings: dict[str, float], interval: tuple[float, float]
) -> Figure:
    """Posterior fraction of each k-gon class against n (log x), the predicted crossing
    n_c of F_n (solid: exact λ and the prior term; dotted: without it) and the interval from
    λ̂ ± 2 SE (shaded).

    Args:
        fractions: (n, configuration) posterior fractions.
        crossings: name → predicted n_c ("theory", "theory, no prior term", "observed").
        interval: (lo, hi) of the predicted crossing from the estimates.
    """
    fig = Figure(figsize=(7, 4), layout="constrained")
    ax = fig.add_subplot()
    n = fractions["n"].values
    configs = [str(c) for c in fractions["configuration"].values]
    for i, c in enumerate(POSTERIOR_CLASSES):
        if c in configs:
            ax.plot(n, fractions.sel(configuration=c), "-o", ms=3, color=f"C{i}", label=c)
    rest = [c for c in configs if c not in POSTERIOR_CLASSES]
    if rest:
        other = fractions.sel(configuration=rest).sum("configuration")
        ax.plot(n, other, "-o", ms=3, color="0.6", label="other (≤ 4-gons)")
    lo, hi = interval
    if np.isfinite(lo) and np.isfinite(hi):
        ax.axvspan(lo, hi, color="C2", alpha=0.12, label="predicted, λ̂ ± 2 SE")
    styles = {"theory": "-", "theory, no prior term": ":", "observed": "--"}
    colors = {"theory": "k", "theory, no prior term": "k", "observed": "C3"}
    for name, value in crossings.items():
        if np.isfinite(value):
            ax.axvline(
                value, color=colors[name], ls=styles[name], lw=1.2, label=f"{name}: n = {value:.0f}"
            )
    ax.set_xscale("log")
    ax.set_xlabel("sample size n (nβ of the tempered posterior)")
    ax.set_ylabel("posterior fraction")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7, loc="center right")
    ax.set_title("Bayesian phase transition 5 → 6 (c = 6)", fontsize=10)
    return fig


def plot_sgd_plateaus(tracked: xr.Dataset, instances: Sequence[int]) -> Figure:
    """Loss and λ̂ against step for a few seeds (`plot_loss_llc`), each plateau's
    configuration drawn in the strip above (W's columns at the plateau's middle checkpoint)."""
    fig = Figure(figsize=(9, 3.3 * len(instances)), layout="constrained")
    rows = fig.subfigures(len(instances), 1)
    steps = tracked["checkpoint"].values
    for row, inst in zip(np.atleast_1d(rows), instances, strict=True):
        ds = tracked.sel(instance=inst)
        segments = plateau_segments(ds["kgon"].values)
        top, bottom = row.subfigures(2, 1, height_ratios=[1, 2.4])
        shown = segments[-6:]
        axes = top.subplots(1, len(shown), squeeze=False)[0]
        for ax, (start, stop, label) in zip(axes, shown, strict=True):
            mid = (start + stop - 1) // 2
            plot_columns(ds["W"].values[mid], ax=ax, title=f"{label} @ {steps[mid]}")
        plot_loss_llc(tracked, instance=int(inst), ax=bottom.add_subplot())
    return fig


def plot_transition_statistics(
    counts: dict[str, int],
    matched: dict[str, int],
    delta_loss: np.ndarray,
    delta_llc: np.ndarray,
) -> Figure:
    """(left) How often each plateau transition k → k′ occurs, and how many of those join two
    plateaus matched to critical points; (right) Δλ (exact λ of the matched critical points)
    against Δloss for the matched transitions with both λ known, the paper's claim being the
    upper-left quadrant. Unmatched transitions and λ̂ are not in the right panel."""
    fig = Figure(figsize=(10, 4), layout="constrained")
    left, right = fig.subplots(1, 2)
    names = list(counts)[:15]
    left.barh(names[::-1], [counts[k] for k in names][::-1], color="0.75", label="all")
    left.barh(
        names[::-1],
        [matched.get(k, 0) for k in names][::-1],
        color="C0",
        label="both plateaus matched to a critical point",
    )
    left.set_xlabel("transitions (all seeds)")
    left.set_title("plateau transitions k → k′", fontsize=10)
    left.tick_params(axis="y", labelsize=7)
    left.legend(fontsize=7)
    ok = np.isfinite(delta_loss) & np.isfinite(delta_llc)
    claim = ok & (delta_loss < 0) & (delta_llc > 0)
    jitter = np.random.default_rng(0).uniform(-0.08, 0.08, size=np.shape(delta_llc))
    y = delta_llc + jitter  # Δλ takes a few values: jittered so that the points show
    right.scatter(delta_loss[ok & ~claim], y[ok & ~claim], s=10, color="C3", label="other")
    right.scatter(delta_loss[claim], y[claim], s=10, color="C2", label="Δloss < 0, Δλ > 0")
    right.axhline(0, color="0.5", lw=0.8)
    right.axvline(0, color="0.5", lw=0.8)
    right.set_xscale("symlog", linthresh=1e-3)
    right.set_xlabel("Δloss across the transition")
    right.set_ylabel("Δλ of the matched critical points (jittered)")
    right.set_title(
        f"{int(claim.sum())} of {int(ok.sum())} matched transitions in the paper's quadrant",
        fontsize=10,
    )
    right.legend(fontsize=7)
    return fig
