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
    (`llc_reliable` False, reasons in `llc_reasons`: not near a local minimum, biased
    settings, drifting or imprecise chains) are drawn as open circles, and where `llc_theory`
    holds the known λ of the configuration (`theory.kgon_llc`) it is drawn dashed.
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
        _draw_llc(ax.twinx(), ds, step)
    if "kgon" in ds:
        labels = ds["kgon"].values
        last_x, row = -np.inf, 0
        for i in np.flatnonzero(labels[1:] != labels[:-1]) + 1:
            ax.axvline(step[i], color="0.7", linestyle=":", linewidth=1)
            # Labels closer than ~0.15 decades would overlap: step them down a row.
            row = row + 1 if np.log10(step[i]) - last_x < 0.15 else 0
            last_x = np.log10(step[i])
            ax.annotate(
                str(labels[i]),
                (step[i], 1.0 - 0.06 * (row % 4)),
                xycoords=("data", "axes fraction"),
                fontsize=7,
                ha="left",
                va="top",
                color="0.4",
            )
    ax.set_title(f"instance {ds['instance'].item()}")
    return fig


def _draw_llc(ax: Axes, ds: xr.Dataset, step: np.ndarray) -> None:
    """λ̂ ± std (filled: reliable, open: not), the k-gon's known λ dashed where
    `llc_theory` has it; the axis spans the reliable estimates and the theory, and estimates
    below it (far from a minimum, hugely negative) are drawn as open triangles on its floor."""
    mean, std = ds["llc_mean"].values, ds["llc_std"].values
    reliable = ds["llc_reliable"].values if "llc_reliable" in ds else np.ones_like(mean, bool)
    theory = ds["llc_theory"].values if "llc_theory" in ds else np.full_like(mean, np.nan)
    shown = np.concatenate([mean[reliable & np.isfinite(mean)], theory[np.isfinite(theory)]])
    if shown.size == 0:
        shown = mean[np.isfinite(mean)]
    lo, hi = (min(0.0, shown.min()), shown.max()) if shown.size else (0.0, 1.0)
    pad = 0.1 * (hi - lo or 1.0)
    lo, hi = lo - pad, hi + pad
    ax.set_ylim(lo, hi)
    ax.plot(step, np.clip(mean, lo, None), color="C3", linewidth=1, label=r"$\hat\lambda$")
    ax.fill_between(step, mean - std, mean + std, color="C3", alpha=0.2, linewidth=0)
    inside = mean >= lo
    ax.plot(step[reliable & inside], mean[reliable & inside], "o", color="C3", markersize=3)
    ax.plot(
        step[~reliable & inside],
        mean[~reliable & inside],
        "o",
        mfc="none",
        color="C3",
        markersize=4,
    )
    below = ~inside & np.isfinite(mean)
    # only when there is one: an empty unclipped line collapses constrained layout
    if below.any():
        ax.plot(
            step[below],
            np.full(below.sum(), lo),
            "v",
            mfc="none",
            color="C3",
            markersize=4,
            clip_on=False,
            label=r"$\hat\lambda$ below the axis (unreliable)",
        )
    if np.isfinite(theory).any():
        ax.plot(
            step,
            theory,
            "--",
            color="k",
            linewidth=1,
            drawstyle="steps-post",
            label=r"$\lambda$ of the k-gon (theory)",
        )
        ax.legend(fontsize=7, loc="center right")
    ax.set_ylabel(r"LLC $\hat\lambda$ (open: unreliable)", color="C3")


def plot_columns(W: np.ndarray, *, ax: Axes | None = None, title: str = "") -> Figure:
    """The columns W_i ∈ ℝ² of one model drawn from the origin (a dot at each tip)."""
    fig, ax = _figure_and_axes(ax, figsize=(2.5, 2.5))
    W = np.asarray(W)
    if W.shape[0] != 2:
        raise ValueError(f"plot_columns draws m = 2 models, got W of shape {W.shape}")
    lim = max(1.2, float(np.abs(W).max()) * 1.15)
    for i in range(W.shape[1]):
        # A line with a dot at its tip rather than an annotation arrow: FancyArrowPatch heads
        # of short columns render differently from run to run, and figures must rebuild
        # byte for byte.
        color = f"C{i % 10}"
        ax.plot([0, W[0, i]], [0, W[1, i]], "-", color=color, lw=1.5)
        ax.plot([W[0, i]], [W[1, i]], "o", ms=3, color=color)
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
    ds = ds.isel(checkpoint=ds["checkpoint"].values > 0)  # a log axis has no step 0
    inst = int(ds["instance"]) if "instance" in ds.coords else None
    step = ds["checkpoint"].values
    panels = [("loss", "loss", "log")]
    if "llc_mean" in ds:
        panels.append(("llc_mean", r"LLC $\hat\lambda$", "linear"))
    if "feature_count" in ds:
        panels.append(("feature_count", r"$\|W\|_F^2$", "linear"))
    axes = np.atleast_1d(fig.subplots(len(panels), 1, sharex=True))
    for ax, (var, ylabel, yscale) in zip(axes, panels, strict=True):
        if var == "llc_mean" and "llc_std" in ds:
            _draw_llc(ax, ds, step)  # reliable estimates set the range, as in the quickstart
        else:
            ax.plot(step, ds[var].values, marker=".", color="C0")
            ax.set_yscale(yscale)
        ax.set_xscale("log")
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
    axes[-1].set_xlabel("step (log; step 0 not drawn)")
    fig.suptitle(
        f"transitions of instance {inst}" if inst is not None else "transitions", fontsize=10
    )
    _shading_legend(axes[0])
    return fig


def _shading_legend(ax: Axes) -> None:
    from matplotlib.patches import Patch

    ax.legend(
        handles=[
            Patch(color="C1", alpha=0.35, label="transition (learning); darker: more confident"),
            Patch(color="C2", alpha=0.35, label="transition (schedule of q)"),
        ],
        fontsize=7,
        loc="upper right",
    )


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
    ds = ds.isel(checkpoint=ds["checkpoint"].values > 0)  # a log axis has no step 0
    inst = int(ds["instance"]) if "instance" in ds.coords else None
    step = ds["checkpoint"].values
    ev = np.atleast_2d(ds["gram_eigenvalues"].transpose("checkpoint", ...).values)
    for j in range(ev.shape[-1]):
        ax.plot(step, ev[:, j], marker=".", label=rf"$\mu_{j + 1}$")
    ax.set_xscale("log")
    ax.set_xlabel("step (log; step 0 not drawn)")
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
    categories: Sequence[str] | None = None,
) -> Figure:
    """A 2-d phase diagram: categorical ``labels`` over two coordinates (x = last dim).

    ``transitions`` (from `detect_sweep`, drawn as bars spanning their interval at their
    ``coords``) and ``analytic`` boundaries (same record type, e.g. from
    `two_feature_boundary`, drawn as black crosses) are overlaid. Log axes are used for
    coordinates spanning more than a decade. `categories` fixes the colour of each label
    (in that order), so several diagrams can share one legend.
    """
    fig, ax = _figure_and_axes(ax, figsize=(5, 4))
    if labels.ndim != 2:
        raise ValueError(f"labels must be 2-d, got dims {labels.dims}")
    ydim, xdim = labels.dims
    x, y = labels[xdim].values.astype(float), labels[ydim].values.astype(float)
    present = {str(v) for v in labels.values.ravel()}
    # Fixed `categories` keep one colour per label across panels that show different subsets.
    names = list(categories) + sorted(present - set(categories)) if categories else sorted(present)
    codes = np.vectorize(names.index)(labels.values.astype(str))
    from matplotlib import colormaps

    cmap = colormaps["Pastel1"]  # 9 colours: code i ↦ cmap(i / 8)
    ax.pcolormesh(x, y, codes % 9, shading="nearest", cmap=cmap, vmin=0, vmax=8)
    for i, name in enumerate(names):
        if name in present:
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


def plot_calibration(report: xr.Dataset, *, max_panels: int = 6) -> Figure:
    """λ̂ ± MCSE against ε (log x), one line per γ, one panel per anchor (at most
    `max_panels`), from `sampling.calibrate.calibrate_around_auto`; the automatic (ε, γ) is
    ringed. A flat stretch around it means neither ε nor γ biases the estimate there."""
    lead = [d for d in report["llc_mean"].dims if d not in ("step_size", "localization")]
    stacked = report.stack(anchor=lead) if lead else report.expand_dims(anchor=[0])
    num = min(stacked.sizes["anchor"], max_panels)
    fig = Figure(figsize=(3.2 * num, 3.0), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, num, sharey=True))
    eps = report["step_size"].values
    for a, ax in enumerate(axes):
        point = stacked.isel(anchor=a)
        for j, gam in enumerate(report["localization"].values):
            r = point.sel(localization=gam)
            ax.errorbar(
                eps,
                r["llc_mean"],
                yerr=r["mcse"],
                marker="o",
                markersize=3,
                capsize=2,
                color=f"C{j}",
                label=f"γ = {gam:.3g}",
            )
        auto = point.sel(
            step_size=eps[np.argmin(np.abs(np.log(eps / point["auto_step_size"].item())))]
        )
        gam_auto = report["localization"].values[
            np.argmin(
                np.abs(np.log(report["localization"].values / point["auto_localization"].item()))
            )
        ]
        ax.plot(
            auto["step_size"],
            auto.sel(localization=gam_auto)["llc_mean"],
            "o",
            ms=10,
            mfc="none",
            color="k",
            label="automatic",
        )
        _reference_llc(ax, point)
        _step_size_ticks(ax, eps)
        ax.set_xlabel("step size ε")
        ax.set_title(", ".join(f"{d} {point[d].item()}" for d in lead) or "anchor", fontsize=8)
    axes[0].set_ylabel(r"$\hat\lambda$ ± MCSE")
    for ax in axes:  # the legend where the reference line is, else on the first panel
        if any(line.get_label() == _THEORY_LABEL for line in ax.get_lines()):
            ax.legend(fontsize=7)
            break
    else:
        axes[0].legend(fontsize=7)
    return fig


_THEORY_LABEL = r"$\lambda$ of the k-gon (theory)"


def _reference_llc(ax: Axes, point: xr.Dataset) -> None:
    """The known λ of the anchor's configuration (`llc_theory`, `theory.kgon_llc`), dashed,
    where the report carries it: what the flat stretch of λ̂ should sit on."""
    if "llc_theory" not in point or not np.isfinite(float(point["llc_theory"])):
        return
    ax.axhline(float(point["llc_theory"]), color="k", ls="--", lw=1, label=_THEORY_LABEL)


def _step_size_ticks(ax: Axes, eps: np.ndarray, max_labels: int = 5) -> None:
    """Log ε axis labelled at (every other, ...) grid value, rotated, without the minor
    labels matplotlib adds when the grid spans less than a decade (they overlap)."""
    from matplotlib.ticker import NullFormatter, NullLocator

    ax.set_xscale("log")
    every = int(np.ceil(len(eps) / max_labels))
    ax.set_xticks(eps[::every], [f"{e:.2g}" for e in eps[::every]], rotation=30, fontsize=7)
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_minor_formatter(NullFormatter())


#: What `plot_sweep` draws, when present: (variable, label).
SWEEP_VARIABLES = (
    ("feature_count", r"$\|W\|_F^2$"),
    ("loss", "loss"),
    ("llc_mean", r"LLC $\hat\lambda$"),
)


def plot_sweep(collected: xr.Dataset, *, variables: Sequence[str] | None = None) -> Figure:
    """Observables of a collected sweep against its axes (`sweep.collect`), averaged over
    instances (and the last checkpoint taken where checkpoints were kept): lines against one
    axis, a heat map over the first two axes (the others averaged).

    λ̂ points or cells that average any estimate the diagnostics reject (`llc_reliable`) are
    marked x, and the panel's title counts them ("k of N unreliable", `unreliable_cells`)."""
    axes_names = [a for a in _sweep_axes(collected) if a in collected.dims]
    if not axes_names:
        raise ValueError("not a collected sweep: no sweep axes among the dims")
    names = [v for v, _ in SWEEP_VARIABLES if v in collected] if variables is None else variables
    missing = [v for v in names if v not in collected]
    if missing or not names:
        raise ValueError(f"no variable {missing or names} in the collected sweep")
    labels = dict(SWEEP_VARIABLES)
    fig = Figure(figsize=(3.6 * len(names), 3.4), layout="constrained")
    panels = np.atleast_1d(fig.subplots(1, len(names)))
    keep = axes_names[:2]
    for ax, name in zip(panels, names, strict=True):
        da = _last_checkpoint(collected[name])
        da = da.mean([d for d in da.dims if d not in keep])
        if len(keep) == 1:
            _sweep_line(ax, collected[keep[0]].values, da.values, keep[0], labels.get(name, name))
        else:
            _sweep_heat_map(fig, ax, da.transpose(*keep), labels.get(name, name))
        title = f"{labels.get(name, name)} (mean over instances)"
        bad = unreliable_cells(collected) if name == "llc_mean" else None
        if bad is not None:
            _mark_unreliable(ax, bad.transpose(*keep).values)
            title += f"\n{int(bad.sum())} of {bad.size} unreliable (x)"
        ax.set_title(title, fontsize=8)
    return fig


def unreliable_cells(collected: xr.Dataset) -> xr.DataArray | None:
    """Over the first two sweep axes (`plot_sweep`'s points or cells): True where any λ̂
    averaged into it is unreliable; None without `llc_reliable`."""
    if "llc_reliable" not in collected:
        return None
    keep = [a for a in _sweep_axes(collected) if a in collected.dims][:2]
    reliable = _last_checkpoint(collected["llc_reliable"]).astype(bool)
    return ~reliable.all([d for d in reliable.dims if d not in keep])


def _last_checkpoint(da: xr.DataArray) -> xr.DataArray:
    return da.isel(checkpoint=-1) if "checkpoint" in da.dims else da


def _sweep_line(ax: Axes, x: np.ndarray, y: np.ndarray, xlabel: str, ylabel: str) -> None:
    ax.plot(x, y, marker="o")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if np.all(x > 0) and x.max() / x.min() > 20:
        ax.set_xscale("log")


def _sweep_heat_map(fig: Figure, ax: Axes, da: xr.DataArray, label: str) -> None:
    ydim, xdim = da.dims
    mesh = ax.imshow(da.values, origin="lower", aspect="auto", cmap="viridis")
    ax.set_xticks(
        range(da.sizes[xdim]), [f"{v:.3g}" for v in da[xdim].values], rotation=45, fontsize=7
    )
    ax.set_yticks(range(da.sizes[ydim]), [f"{v:.3g}" for v in da[ydim].values], fontsize=7)
    ax.set_xlabel(str(xdim))
    ax.set_ylabel(str(ydim))
    fig.colorbar(mesh, ax=ax, label=label)


def _mark_unreliable(ax: Axes, bad: np.ndarray) -> None:
    """An x on each unreliable point (one axis: on the line) or cell (heat map)."""
    if bad.ndim == 1:
        if bad.any():
            line = ax.get_lines()[0]
            x, y = np.asarray(line.get_xdata()), np.asarray(line.get_ydata())
            ax.plot(x[bad], y[bad], "x", color="C3", ms=8, mew=1.5, label="unreliable λ̂")
            ax.legend(fontsize=7)
        return
    rows, cols = np.nonzero(bad)
    if not rows.size:
        return
    ax.plot(cols, rows, "x", color="w", ms=10, mew=2.5)
    ax.plot(cols, rows, "x", color="C3", ms=8, mew=1.2)  # red on white reads on any colour


def _sweep_axes(collected: xr.Dataset) -> list[str]:
    import json

    raw = collected.attrs.get("sweep_axes")
    return list(json.loads(raw)) if raw else []


from tms_slt.plots.elhage import (  # noqa: E402  (the study figures build on the ones above)
    plot_feature_dimensionality as plot_feature_dimensionality,
)
from tms_slt.plots.elhage import (  # noqa: E402
    plot_superposition_grid as plot_superposition_grid,
)
from tms_slt.plots.elhage import (  # noqa: E402
    plot_two_feature_phase_diagrams as plot_two_feature_phase_diagrams,
)
