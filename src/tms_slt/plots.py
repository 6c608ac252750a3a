"""Figures as functions of data: `plot_x(data, *, ax=None) -> Figure`.

Nothing here touches global pyplot state: figures are built with
matplotlib.figure.Figure directly, so they are safe in scripts, tests and
worker processes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import xarray as xr
from matplotlib.axes import Axes
from matplotlib.figure import Figure


def _figure_and_axes(ax: Axes | None, **fig_kw) -> tuple[Figure, Axes]:
    if ax is not None:
        return ax.figure, ax
    fig = Figure(**fig_kw)
    return fig, fig.add_subplot()


def plot_loss_llc(tracked: xr.Dataset, *, instance: int = 0, ax: Axes | None = None) -> Figure:
    """Loss (log scale, left) and LLC ± std (right) against optimizer step (log x).

    Step 0 is left out of the log axis. LLC estimates flagged unreliable
    (`llc_reliable` False: negative, drifting or chains disagreeing, i.e. the
    checkpoint is not near a local minimum) are drawn as open circles.
    """
    fig, ax = _figure_and_axes(ax, figsize=(7, 3.5))
    ds = tracked.isel(instance=instance)
    ds = ds.isel(checkpoint=ds["checkpoint"].values > 0)
    step = ds["checkpoint"].values
    ax.plot(step, ds["loss"], color="C0", marker=".", label="loss $L_n$")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss", color="C0")
    if "llc_mean" in ds:
        ax2 = ax.twinx()
        mean, std = ds["llc_mean"].values, ds["llc_std"].values
        ax2.plot(step, mean, color="C3", label=r"$\hat\lambda$")
        reliable = ds["llc_reliable"].values if "llc_reliable" in ds else np.ones_like(mean, bool)
        ax2.plot(step[reliable], mean[reliable], "o", color="C3", markersize=3)
        ax2.plot(step[~reliable], mean[~reliable], "o", mfc="none", color="C3", markersize=4)
        ax2.fill_between(step, mean - std, mean + std, color="C3", alpha=0.2, linewidth=0)
        ax2.set_ylabel(r"LLC $\hat\lambda$ (open: unreliable)", color="C3")
    if "kgon" in ds:
        labels = ds["kgon"].values
        for i in np.flatnonzero(labels[1:] != labels[:-1]) + 1:
            ax.axvline(step[i], color="0.7", linestyle=":", linewidth=1)
            ax.annotate(
                str(labels[i]),
                (step[i], 1.0),
                xycoords=("data", "axes fraction"),
                fontsize=7,
                ha="left",
                va="top",
                color="0.4",
            )
    ax.set_title(f"instance {ds['instance'].item()}")
    return fig


def plot_columns(W: np.ndarray, *, ax: Axes | None = None, title: str = "") -> Figure:
    """The columns W_i ∈ ℝ² of one model drawn as arrows from the origin."""
    fig, ax = _figure_and_axes(ax, figsize=(2.5, 2.5))
    W = np.asarray(W)
    if W.shape[0] != 2:
        raise ValueError(f"plot_columns draws m = 2 models, got W of shape {W.shape}")
    lim = max(1.2, float(np.abs(W).max()) * 1.15)
    for i in range(W.shape[1]):
        ax.annotate(
            "",
            xy=(W[0, i], W[1, i]),
            xytext=(0, 0),
            arrowprops={"arrowstyle": "->", "color": f"C{i % 10}", "lw": 1.5},
        )
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=8)
    return fig


def _snapshot_indices(labels: np.ndarray, k: int) -> Sequence[int]:
    """Up to k checkpoints: the first of each configuration stage, and the last one."""
    starts = [0, *(np.flatnonzero(labels[1:] != labels[:-1]) + 1).tolist()]
    picks = sorted({*starts, len(labels) - 1})
    if len(picks) > k:
        keep = np.unique(np.round(np.linspace(0, len(picks) - 1, k)).astype(int))
        picks = [picks[i] for i in keep]
    return picks


def plot_quickstart(tracked: xr.Dataset, *, instance: int = 0, num_snapshots: int = 5) -> Figure:
    """Loss and LLC against step, with W's columns at a few checkpoints below."""
    fig = Figure(figsize=(9, 6), layout="constrained")
    top, bottom = fig.subfigures(2, 1, height_ratios=[1.6, 1])
    plot_loss_llc(tracked, instance=instance, ax=top.add_subplot())
    ds = tracked.isel(instance=instance)
    labels = ds["kgon"].values if "kgon" in ds else np.zeros(ds.sizes["checkpoint"])
    picks = _snapshot_indices(labels, num_snapshots)
    axes = bottom.subplots(1, len(picks))
    for ax, c in zip(np.atleast_1d(axes), picks, strict=True):
        point = ds.isel(checkpoint=c)
        title = f"step {int(point['checkpoint'])}"
        if "kgon" in point:
            title += f"  [{point['kgon'].item()}]"
        if "llc_mean" in point:
            title += f"\nλ̂={float(point['llc_mean']):.2f}"
        plot_columns(point["W"].values, ax=ax, title=title)
    return fig
