"""Transitions across the true distribution: where the trained configuration changes.

The optimal TMS configuration jumps discontinuously as the sparsity S or the relative
importance of the features changes (Elhage et al. 2022, "Toy Models of Superposition", the
phase diagrams of section 4). :func:`detect_sweep` finds these jumps on a grid;
:func:`refine_boundary` bisects between two grid points that disagree.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import xarray as xr

from tms_slt.transitions.changepoints import PENALTY_FACTOR, RESOLUTION, change_points
from tms_slt.transitions.records import Transition

#: Dimensions treated as repeats of the same grid point (reduced, not scanned).
REPLICATE_DIMS = ("instance", "seed", "chain", "replicate")
#: Dims that index parts of one model (or its history), never sweep axes.
MODEL_DIMS = ("feature", "hidden", "eig", "checkpoint")


def _reduce_replicates(ds: xr.Dataset, rep: list[str], label: str, reduce: str) -> xr.Dataset:
    """One value per grid point: the lowest-loss replicate (``"best"``) or the modal label."""
    if not rep:
        return ds
    stacked = ds.stack(_rep=rep)
    if reduce == "best":
        if "loss" not in ds:
            raise ValueError("reduce='best' needs a `loss` variable")
        loss = stacked["loss"].fillna(np.inf)
        return stacked.isel(_rep=loss.argmin("_rep")).drop_vars(["_rep", *rep], errors="ignore")
    if reduce == "mode":
        labels = stacked[label].transpose(..., "_rep").values

        def mode(row: np.ndarray) -> str:
            vals, counts = np.unique(row.astype(str), return_counts=True)
            return str(vals[np.argmax(counts)])

        modal = np.apply_along_axis(mode, -1, labels.reshape(-1, labels.shape[-1]))
        other = [d for d in stacked[label].dims if d != "_rep"]
        keep = [v for v in stacked.data_vars if v != label and stacked[v].dtype.kind in "fiub"]
        numeric = stacked[keep].median("_rep", skipna=True)
        return numeric.assign({label: (other, modal.reshape(labels.shape[:-1]))}).drop_vars(
            rep, errors="ignore"
        )
    raise ValueError(f"reduce must be 'best' or 'mode', got {reduce!r}")


def _values(ds: xr.Dataset, name: str) -> np.ndarray | None:
    return np.asarray(ds[name].values, dtype=np.float64) if name in ds else None


def _delta(x: np.ndarray | None, i: int) -> float | None:
    return None if x is None else float(x[i] - x[i - 1])


def _scan(
    ds: xr.Dataset,
    axis: str,
    label: str,
    coords: tuple[tuple[str, Any], ...],
    penalty_factor: float,
    resolution: float,
) -> list[Transition]:
    grid = np.asarray(ds[axis].values, dtype=np.float64)
    labels = np.asarray(ds[label].values).astype(str) if label in ds else None
    fc = _values(ds, "feature_count")
    events: dict[int, set[str]] = {}
    if labels is not None:
        for i in np.flatnonzero(labels[1:] != labels[:-1]) + 1:
            events.setdefault(int(i), set()).add("configuration")
    if fc is not None and np.isfinite(fc).all():
        for i in change_points(fc, penalty_factor=penalty_factor, resolution=resolution):
            events.setdefault(int(i), set()).add("feature_count")
    available = tuple(
        s
        for s, ok in (("configuration", labels is not None), ("feature_count", fc is not None))
        if ok
    )
    loss, llc = _values(ds, "loss"), _values(ds, "llc_mean")
    out = []
    for i, signals in sorted(events.items()):
        note = ""
        if signals == {"feature_count"} and labels is not None:
            note = "|W|^2 step without a configuration change"
        elif signals == {"configuration"} and fc is not None:
            note = "configuration change without a |W|^2 step"
        out.append(
            Transition(
                kind="sweep",
                axis=axis,
                location=float(0.5 * (grid[i - 1] + grid[i])),
                interval=(float(grid[i - 1]), float(grid[i])),
                before=None if labels is None else str(labels[i - 1]),
                after=None if labels is None else str(labels[i]),
                delta_loss=_delta(loss, i),
                delta_llc=_delta(llc, i),
                delta_feature_count=_delta(fc, i),
                delta_eig_gap=_delta(_values(ds, "eig_gap"), i),
                signals=tuple(s for s in available if s in signals),
                available=available,
                confidence=len(signals) / max(len(available), 1),
                coords=coords,
                note=note,
            )
        )
    return out


def detect_sweep(
    dataset: xr.Dataset,
    axis: str,
    *,
    label: str = "kgon",
    reduce: str = "best",
    replicate_dims: Sequence[str] = REPLICATE_DIMS,
    penalty_factor: float = PENALTY_FACTOR,
    resolution: float = RESOLUTION,
) -> list[Transition]:
    """Where the trained configuration changes along a sweep coordinate.

    Args:
        dataset: variables over ``axis`` (and possibly other sweep axes and replicate dims):
            a configuration label ``label`` (e.g. ``kgon``) and/or ``feature_count``; ``loss``,
            ``llc_mean`` and ``eig_gap`` are reported as Δ's when present.
        axis: the sweep coordinate, e.g. ``"data.sparsity"``.
        label: the label variable; a change between adjacent grid points is a transition.
        reduce: over replicate dims: ``"best"`` keeps the lowest-loss replicate (the global
            minimum that training found), ``"mode"`` takes the most common label.
        replicate_dims: dims that are repeats of a grid point rather than sweep axes.
        penalty_factor, resolution: of the PELT step detection on ‖W‖²_F along ``axis``.

    Returns:
        Transitions with ``interval`` = the two adjacent grid values that disagree, scanned
        separately for every value of the remaining sweep axes (recorded in ``coords``).
    """
    if axis not in dataset.dims:
        raise ValueError(f"{axis!r} is not a dimension of the dataset (dims: {list(dataset.dims)})")
    if label not in dataset and "feature_count" not in dataset:
        raise ValueError(f"the dataset has neither {label!r} nor feature_count to compare")
    ds = dataset.sortby(axis)
    rep = [d for d in replicate_dims if d in ds.dims and d != axis]
    ds = _reduce_replicates(ds, rep, label, reduce)
    others = _other_axes(ds, axis)
    found: list[Transition] = []
    for values in itertools.product(*(ds[d].values.tolist() for d in others)):
        coords = tuple(zip(others, values, strict=True))
        part = ds.sel(dict(coords)) if coords else ds
        found.extend(_scan(part, axis, label, coords, penalty_factor, resolution))
    return found


def _other_axes(ds: xr.Dataset, axis: str) -> list[str]:
    """The sweep axes besides `axis`: those `sweep collect` recorded, else coordinate dims
    that are not parts of a model."""
    if "sweep_axes" in ds.attrs:
        return [d for d in json.loads(ds.attrs["sweep_axes"]) if d != axis and d in ds.dims]
    return [d for d in ds.dims if d != axis and d in ds.coords and d not in MODEL_DIMS]


def refine_boundary(
    fn: Callable[[float], str],
    lo: float,
    hi: float,
    *,
    tol: float,
    log: bool = False,
    label_lo: str | None = None,
    label_hi: str | None = None,
    max_evals: int = 60,
    axis: str = "parameter",
) -> Transition:
    """Bisect a boundary between two parameter values whose configurations differ.

    ``fn(param) -> label`` trains (or solves) at ``param`` and classifies the result. Each
    step evaluates the midpoint (geometric midpoint when ``log``) and keeps the half whose
    ends disagree, so the interval halves until ``hi − lo ≤ tol`` (``log10(hi/lo) ≤ tol``
    when ``log``). If the midpoint shows a third label, the bisection follows the boundary
    nearest ``lo``.

    Returns:
        A ``kind="sweep"`` Transition with the final interval, its midpoint, and the labels
        at its ends.

    Raises:
        ValueError: the labels at ``lo`` and ``hi`` agree (nothing to bisect), or bad bounds.
    """
    if not tol > 0:
        raise ValueError(f"tol must be positive, got {tol}")
    if not lo < hi or (log and lo <= 0):
        raise ValueError(f"need 0 < lo < hi for log bisection or lo < hi, got {lo}, {hi}")
    a = fn(lo) if label_lo is None else label_lo
    b = fn(hi) if label_hi is None else label_hi
    if a == b:
        raise ValueError(f"fn gives the same label {a!r} at both ends; no boundary to refine")

    def width(x: float, y: float) -> float:
        return math.log10(y / x) if log else y - x

    evals = 0
    while width(lo, hi) > tol and evals < max_evals:
        mid = math.sqrt(lo * hi) if log else 0.5 * (lo + hi)
        m = fn(mid)
        evals += 1
        if m == a:
            lo = mid
        else:
            hi, b = mid, m
    location = math.sqrt(lo * hi) if log else 0.5 * (lo + hi)
    return Transition(
        kind="sweep",
        axis=axis,
        location=location,
        interval=(lo, hi),
        before=str(a),
        after=str(b),
        signals=("configuration",),
        available=("configuration",),
        confidence=1.0,
        note=f"bisection, {evals} evaluations",
    )
