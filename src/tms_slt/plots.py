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


def _shade_transitions(ax: Axes, transitions: Sequence, instance: int | None) -> None:
    """Shade each transition's step interval (darker when more confident)."""
    for t in transitions:
        if getattr(t, "axis", "step") != "step" or (
            instance is not None and t.instance not in (None, instance)
        ):
            continue
        lo, hi = max(t.interval[0], 1), max(t.interval[1], 1)
        color = "C2" if t.driver == "schedule" else "C1"
        ax.axvspan(lo, hi, color=color, alpha=0.1 + 0.3 * t.confidence, linewidth=0)


def plot_transitions(
    tracked: xr.Dataset, transitions: Sequence, *, instance: int = 0, fig: Figure | None = None
) -> Figure:
    """Loss, LLC and ‖W‖²_F against step (log x) with detected transitions shaded.

    Orange: learning-driven, green: schedule-driven; opacity grows with confidence. Each
    configuration-changing transition is annotated ``before→after`` on the top panel.
    """
    fig = fig or Figure(figsize=(7, 6.5), layout="constrained")
    ds = tracked.isel(instance=instance) if "instance" in tracked.dims else tracked
    inst = int(ds["instance"]) if "instance" in ds.coords else None
    step = np.maximum(ds["checkpoint"].values, 1)
    panels = [("loss", "loss", "log")]
    if "llc_mean" in ds:
        panels.append(("llc_mean", r"LLC $\hat\lambda$", "linear"))
    if "feature_count" in ds:
        panels.append(("feature_count", r"$\|W\|_F^2$", "linear"))
    axes = np.atleast_1d(fig.subplots(len(panels), 1, sharex=True))
    for ax, (var, ylabel, yscale) in zip(axes, panels, strict=True):
        ax.plot(step, ds[var].values, marker=".", color="C0")
        if var == "llc_mean" and "llc_std" in ds:
            m, s = ds["llc_mean"].values, ds["llc_std"].values
            ax.fill_between(step, m - s, m + s, color="C0", alpha=0.2, linewidth=0)
        ax.set_xscale("log")
        ax.set_yscale(yscale)
        ax.set_ylabel(ylabel)
        _shade_transitions(ax, transitions, inst)
    for t in transitions:
        if t.axis == "step" and t.instance in (None, inst) and t.configuration_changed:
            axes[0].annotate(
                f"{t.before}→{t.after}",
                (max(t.location, 1), 1.0),
                xycoords=("data", "axes fraction"),
                fontsize=7,
                ha="center",
                va="bottom",
                rotation=30,
            )
    axes[-1].set_xlabel("step (step 0 drawn at 1)")
    return fig


def plot_eigenvalues(
    tracked: xr.Dataset,
    *,
    instance: int = 0,
    transitions: Sequence = (),
    ax: Axes | None = None,
) -> Figure:
    """Eigenvalues of WWᵀ against step (log x), transitions shaded."""
    fig, ax = _figure_and_axes(ax, figsize=(7, 3))
    ds = tracked.isel(instance=instance) if "instance" in tracked.dims else tracked
    inst = int(ds["instance"]) if "instance" in ds.coords else None
    step = np.maximum(ds["checkpoint"].values, 1)
    ev = np.atleast_2d(ds["gram_eigenvalues"].transpose("checkpoint", ...).values)
    for j in range(ev.shape[-1]):
        ax.plot(step, ev[:, j], marker=".", label=rf"$\mu_{j + 1}$")
    ax.set_xscale("log")
    ax.set_xlabel("step (step 0 drawn at 1)")
    ax.set_ylabel(r"eigenvalues of $WW^\top$")
    ax.legend(fontsize=7)
    _shade_transitions(ax, transitions, inst)
    return fig


def plot_phase_diagram(
    labels: xr.DataArray,
    *,
    transitions: Sequence = (),
    analytic: Sequence = (),
    ax: Axes | None = None,
) -> Figure:
    """A 2-d phase diagram: categorical ``labels`` over two coordinates (x = last dim).

    ``transitions`` (from `detect_sweep`, drawn as bars spanning their interval at their
    ``coords``) and ``analytic`` boundaries (same record type, e.g. from
    `two_feature_boundary`, drawn as black crosses) are overlaid. Log axes are used for
    coordinates spanning more than a decade.
    """
    fig, ax = _figure_and_axes(ax, figsize=(5, 4))
    if labels.ndim != 2:
        raise ValueError(f"labels must be 2-d, got dims {labels.dims}")
    ydim, xdim = labels.dims
    x, y = labels[xdim].values.astype(float), labels[ydim].values.astype(float)
    names = sorted({str(v) for v in labels.values.ravel()})
    codes = np.vectorize(names.index)(labels.values.astype(str))
    from matplotlib import colormaps

    cmap = colormaps["Pastel1"]  # 9 colours: code i ↦ cmap(i / 8)
    ax.pcolormesh(x, y, codes % 9, shading="nearest", cmap=cmap, vmin=0, vmax=8)
    for i, name in enumerate(names):
        ax.plot([], [], "s", color=cmap((i % 9) / 8), label=name)
    for t in transitions:
        other = dict(t.coords)
        if t.axis == xdim and ydim in other:
            ax.plot(t.interval, [other[ydim]] * 2, color="C3", lw=2)
        elif t.axis == ydim and xdim in other:
            ax.plot([other[xdim]] * 2, t.interval, color="C3", lw=2)
    for t in analytic:
        other = dict(t.coords)
        if t.axis == xdim and ydim in other:
            ax.plot(t.location, other[ydim], "kx")
        elif t.axis == ydim and xdim in other:
            ax.plot(other[xdim], t.location, "kx")
    for axis_values, setter in ((x, ax.set_xscale), (y, ax.set_yscale)):
        if axis_values.min() > 0 and axis_values.max() / axis_values.min() > 10:
            setter("log")
    ax.set_xlabel(xdim)
    ax.set_ylabel(ydim)
    ax.legend(fontsize=7, loc="best")
    return fig
