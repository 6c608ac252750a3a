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
    """Posterior fraction of each k-gon class against n (log x), with vertical lines at the
    crossings n_c in `crossings` (name → n_c; the one named "observed" dashed red, the others
    black in turn solid, dash-dot, dotted) and the observed crossing's interval (shaded).

    Args:
        fractions: (n, configuration) posterior fractions.
        crossings: name → n_c.
        interval: (lo, hi) of the observed crossing.
    """
    fig = Figure(figsize=(7, 4), layout="constrained")
    ax = fig.add_subplot()
    n = fractions["n"].values
    configs = [str(c) for c in fractions["configuration"].values]
    for i, c in enumerate(POSTERIOR_CLASSES):
        if c in configs:
            ax.plot(n, fractions.sel(configuration=c), "-o", ms=3, color=f"C{i}", label=c)
    five = [c for c in configs if c.startswith("5")]
    if five:
        pooled = fractions.sel(configuration=five).sum("configuration")
        ax.plot(n, pooled, "-", lw=2, color="C4", alpha=0.6, label="5+ and 5− together")
    rest = [c for c in configs if c not in POSTERIOR_CLASSES]
    if rest:
        other = fractions.sel(configuration=rest).sum("configuration")
        ax.plot(n, other, "-o", ms=3, color="0.6", label="other (≤ 4-gons)")
    lo, hi = interval
    if np.isfinite(lo) and np.isfinite(hi):
        ax.axvspan(lo, hi, color="C3", alpha=0.12, label="observed ± 2 SE")
    styles = iter(("-", "-.", ":", (0, (5, 1))))
    for name, value in crossings.items():
        if np.isfinite(value):
            observed = name == "observed"
            ax.axvline(
                value,
                color="C3" if observed else "k",
                ls="--" if observed else next(styles),
                lw=1.2,
                label=f"{name}: n = {value:.0f}",
            )
    ax.set_xscale("log")
    ax.set_xlabel("sample size n (nβ of the tempered posterior)")
    ax.set_ylabel("posterior fraction")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7, loc="center right")
    ax.set_title("Bayesian phase transition 5 → 6 (c = 6)", fontsize=10)
    return fig


def plot_free_energy_ti(
    n: np.ndarray,
    six: dict[str, tuple[np.ndarray, np.ndarray | None]],
    excess: dict[str, tuple[np.ndarray, np.ndarray, float]],
) -> Figure:
    """(left) The 6-gon's share of the posterior mass of {6, 5+, 5−} against n, one curve per
    free energy (name → (share, its SE or None)); (right) λ_eff(n) = n(E[L] − L*) of each
    basin (name → (λ_eff, SE, λ)) with its λ dashed: where they differ, the Laplace formula
    is not yet valid."""
    fig = Figure(figsize=(10, 4), layout="constrained")
    left, right = fig.subplots(1, 2)
    for i, (name, (share, se)) in enumerate(six.items()):
        left.plot(n, share, color=f"C{i}", label=name)
        if se is not None:
            left.fill_between(n, share - 2 * se, share + 2 * se, color=f"C{i}", alpha=0.2)
    left.axhline(0.5, color="0.5", lw=0.8)
    left.set_xscale("log")
    left.set_ylim(0, 1)
    left.set_xlabel("n")
    left.set_ylabel("6-gon's share of {6, 5+, 5−}")
    left.legend(fontsize=7)
    left.set_title("posterior share of the 6-gon (± 2 SE)", fontsize=10)
    for i, (name, (lam_eff, se, lam)) in enumerate(excess.items()):
        right.errorbar(n, lam_eff, yerr=2 * se, fmt="-o", ms=2, color=f"C{i}", label=name)
        right.axhline(lam, color=f"C{i}", ls="--", lw=0.8)
    right.set_xscale("log")
    right.set_xlabel("n")
    right.set_ylabel("λ_eff = n (E[L] − L*)")
    right.legend(fontsize=7)
    right.set_title("confined MALA: λ_eff against its limit λ (dashed)", fontsize=10)
    return fig


def plot_bayesian_comparison(
    observed: tuple[np.ndarray, np.ndarray, np.ndarray],
    curves: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray | None]],
    crossings: dict[str, float],
) -> Figure:
    """The 6-gon's share of {6, 5+, 5−} against n: observed points (n, share, SE) with ± 2 SE
    bars, predicted curves (name → (n, share, SE or None), bands ± 2 SE), and each crossing
    (name → n_c) as a vertical line in its curve's colour (the observed one dashed red)."""
    fig = Figure(figsize=(7.5, 4.2), layout="constrained")
    ax = fig.add_subplot()
    colors = {}
    for i, (name, (n, share, se)) in enumerate(curves.items()):
        colors[name.split(" (")[0]] = f"C{i}"
        ax.plot(n, share, color=f"C{i}", label=name)
        if se is not None:
            ax.fill_between(n, share - 2 * se, share + 2 * se, color=f"C{i}", alpha=0.25)
    n_obs, share_obs, se_obs = observed
    ax.errorbar(
        n_obs, share_obs, yerr=2 * se_obs, fmt="o", ms=3, color="C3", label="observed (± 2 SE)"
    )
    for name, value in crossings.items():
        if np.isfinite(value):
            ax.axvline(
                value,
                color="C3" if name == "observed" else colors.get(name, "k"),
                ls="--" if name == "observed" else ":",
                lw=1.2,
                label=f"n_c, {name}: {value:.0f}",
            )
    ax.axhline(0.5, color="0.6", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlim(10, 3000)
    ax.set_ylim(0, 1)
    ax.set_xlabel("sample size n")
    ax.set_ylabel("6-gon's share of the posterior mass of {6, 5+, 5−}")
    ax.legend(fontsize=7, loc="upper left")
    ax.set_title("Bayesian transition 5± → 6 (c = 6): predicted and observed", fontsize=10)
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
    step: np.ndarray,
    loss_ratio: np.ndarray,
    is_matched: np.ndarray,
) -> Figure:
    """(left) How often each plateau transition k → k′ occurs, and how many of those join two
    plateaus matched to critical points; (right) every plateau's loss over the loss of the
    k-gon critical point its label names (both exact population losses, at the plateau's
    least-‖∇L‖ checkpoint), against the step of that checkpoint,
    matched plateaus (`transitions.critical`) in blue: a label names a critical point, but
    only the plateaus at ratio ≈ 1 sit at one."""
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
    ok = np.isfinite(loss_ratio)
    m = ok & is_matched
    right.scatter(
        np.maximum(step[ok & ~m], 1), loss_ratio[ok & ~m], s=8, color="C3", label="unmatched"
    )
    right.scatter(np.maximum(step[m], 1), loss_ratio[m], s=8, color="C0", label="matched")
    right.axhline(1, color="0.5", lw=0.8)
    right.set_xscale("log")
    right.set_yscale("log")
    right.set_xlabel("step of the plateau's least-‖∇L‖ checkpoint (0 drawn at 1)")
    right.set_ylabel("plateau loss / loss of its label's k-gon")
    right.set_title(
        f"{int(m.sum())} of {int(ok.sum())} plateaus sit at their critical point", fontsize=10
    )
    right.legend(fontsize=7)
    return fig
