"""Figures of the Elhage et al. 2022 reproduction (`tms_slt.paper`), as functions of saved data."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import xarray as xr
from matplotlib.figure import Figure

from tms_slt.plots import plot_columns, plot_phase_diagram

PHASE_NAMES = {
    "feature_1": "feature 2 not represented",
    "feature_2": "feature 2 gets the dimension",
    "antipodal": "superposition (antipodal)",
    "both_same_sign": "both, same sign",
    "none": "neither",
}


def plot_superposition_grid(ds: xr.Dataset) -> Figure:
    """Per activation (row blocks) and sparsity (columns): WᵀW as a heat map, b as a bar
    strip and W's columns in the plane, as in Elhage et al.'s first figure."""
    acts, sparsities = ds["activation"].values, ds["sparsity"].values
    fig = Figure(figsize=(1.9 * len(sparsities), 5.2 * len(acts)), layout="constrained")
    blocks = fig.subfigures(len(acts), 1)
    for block, act in zip(np.atleast_1d(blocks), acts, strict=True):
        block.suptitle(f"{act} model", fontsize=10)
        axes = block.subplots(3, len(sparsities), height_ratios=[1, 0.25, 1])
        for j, s in enumerate(sparsities):
            point = ds.sel(activation=act, sparsity=s)
            W, b = point["W"].values, point["b"].values
            gram = W.T @ W
            axes[0, j].imshow(gram, cmap="RdBu_r", vmin=-1.2, vmax=1.2)
            axes[0, j].set_title(f"S = {s:g}\n{point['kgon'].item()}", fontsize=8)
            axes[1, j].imshow(b[None, :], cmap="RdBu_r", vmin=-1, vmax=1)
            for ax in axes[:2, j]:
                ax.set_xticks([])
                ax.set_yticks([])
            plot_columns(W, ax=axes[2, j])
        axes[0, 0].set_ylabel(r"$W^\top W$", fontsize=8)
        axes[1, 0].set_ylabel("b", fontsize=8)
    return fig


def plot_two_feature_phase_diagrams(ds: xr.Dataset) -> Figure:
    """Trained (majority over seeds) and exact phase diagrams side by side, the exact
    superposition boundary (bisected) drawn on both as a black line."""
    fig = Figure(figsize=(10, 4.2), layout="constrained")
    left, right = fig.subplots(1, 2, sharey=True)
    r = ds["relative_importance"].values
    boundary = ds["boundary_density"].values
    for ax, name, title in ((left, "empirical", "trained"), (right, "theory", "exact")):
        labels = ds[name].transpose("density", "relative_importance")
        named = xr.apply_ufunc(np.vectorize(lambda v: PHASE_NAMES.get(str(v), str(v))), labels)
        plot_phase_diagram(named, ax=ax, categories=list(PHASE_NAMES.values()))
        ok = np.isfinite(boundary)
        ax.plot(r[ok], boundary[ok], "k-", lw=1.5, label="exact boundary (bisection)")
        ax.set_title(title)
        ax.set_xlabel("relative importance of feature 2")
        ax.set_ylabel("feature density 1 − S")
        ax.legend(fontsize=7, loc="lower left")
    return fig


def plot_feature_dimensionality(ds: xr.Dataset, *, sticky: Sequence[float]) -> Figure:
    """m/‖W‖²_F against 1/(1 − S) (log x), each represented feature's D_i scattered, the
    sticky values as dotted lines (Elhage et al.'s "geometry of superposition" figure)."""
    fig = Figure(figsize=(7, 4), layout="constrained")
    ax = fig.add_subplot()
    x = ds["inverse_density"].values
    D = ds["feature_dimensionality"].values
    shown = ds["feature_norm"].values > 0.5
    xs = np.broadcast_to(x[:, None], D.shape)
    ax.scatter(xs[shown], D[shown], s=4, alpha=0.3, color="C0", label="feature dimensionality D_i")
    ax.plot(x, ds["dims_per_feature"].values, "k-o", ms=3, label=r"$m/\|W\|_F^2$")
    for v in sticky:
        ax.axhline(v, color="0.6", ls=":", lw=0.8)
        ax.annotate(f"{v:.3g}", (x.max(), v), fontsize=7, color="0.4", va="bottom", ha="right")
    ax.set_xscale("log")
    ax.set_xlabel("1 / (1 − S)")
    ax.set_ylabel("dimensions per feature")
    ax.set_ylim(0, 1.1)
    ax.legend(fontsize=7, loc="lower left")
    return fig
