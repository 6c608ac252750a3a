"""Dynamical transitions: stage boundaries over training time.

Three kinds of evidence, each placed on the checkpoint axis (the log-step axis for the
log-spaced checkpoints of `training.train`), are merged into :class:`Transition` records:

(a) configuration: the k-gon label (Chen et al. 2023, arXiv 2310.06301) changes and the new
    label persists (flicker of fewer than ``min_persistence`` checkpoints is ignored);
(b) steps in log L (the loss) and in ‖W‖²_F (Elhage et al. 2022's feature count): PELT change
    points with the noise-calibrated penalty of :mod:`~tms_slt.transitions.changepoints`;
(c) the LLC curve λ̂(t): PELT jumps and critical points (turning points) of the smoothed curve,
    as the stage boundaries of Hoogland et al. 2024 ("Loss landscape degeneracy drives
    stagewise development in transformers").

Events of different signals within ``tolerance`` checkpoints of each other form one
transition. Its confidence is the weighted fraction of available signals that agree,

    confidence = Σ_{s agreeing} w_s / Σ_{s available} w_s,

with w = 1 for configuration, loss and ‖W‖²_F and, for the LLC, w = the fraction of reliable
estimates (``llc_reliable``, from `LLCResult.diagnostics`) around the transition. The LLC
signal and ΔLLC use the reliable estimates only: ΔLLC is None where a window has none.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import xarray as xr

from tms_slt.transitions.changepoints import (
    PENALTY_FACTOR,
    RESOLUTION,
    change_points,
    critical_points,
)
from tms_slt.transitions.records import Transition
from tms_slt.transitions.tracking import track

if TYPE_CHECKING:
    from tms_slt.sampling.llc import LLCResult
    from tms_slt.training import Trajectory

#: The signals, in the order of priority for placing a transition.
SIGNALS = ("configuration", "feature_count", "loss", "llc")
#: Checkpoints on either side whose medians give the Δ's of a transition.
WINDOW = 3


@dataclass(frozen=True)
class _Event:
    index: int  # the change lies between checkpoint index − 1 and index
    signal: str


def stable_labels(labels: Sequence[str], min_persistence: int = 2) -> tuple[np.ndarray, list[int]]:
    """Debounced labels and the indices where the debounced label changes.

    A new label is adopted at index i when it holds for at least ``min_persistence``
    consecutive checkpoints (or until the end of the series); shorter excursions are flicker.
    """
    labels = [str(v) for v in labels]
    if min_persistence < 1:
        raise ValueError(f"min_persistence must be >= 1, got {min_persistence}")
    T = len(labels)
    out = np.empty(T, dtype=object)
    changes: list[int] = []
    current = labels[0] if T else ""
    i = 0
    while i < T:
        if labels[i] == current:
            out[i] = current
            i += 1
            continue
        run = 1
        while i + run < T and labels[i + run] == labels[i]:
            run += 1
        if run >= min_persistence or i + run == T:
            current = labels[i]
            changes.append(i)
        out[i : i + run] = current
        i += run
    return out.astype(str), changes


def plateau_segments(labels: Sequence[str], min_persistence: int = 2) -> list[tuple[int, int, str]]:
    """(start, stop, label) of every stage of the debounced k-gon labels (`stable_labels`,
    the detector's flicker filter): checkpoints start..stop − 1 hold `label`."""
    stable, changes = stable_labels(labels, min_persistence=min_persistence)
    bounds = [0, *changes, len(stable)]
    return [(a, b, str(stable[a])) for a, b in itertools.pairwise(bounds) if b > a]


def _fill_nan(x: np.ndarray) -> np.ndarray:
    """Linear interpolation over NaNs (all-NaN stays NaN)."""
    x = np.asarray(x, dtype=np.float64).copy()
    bad = ~np.isfinite(x)
    if bad.all() or not bad.any():
        return x
    idx = np.arange(x.size)
    x[bad] = np.interp(idx[bad], idx[~bad], x[~bad])
    return x


def _series(ds: xr.Dataset) -> dict[str, np.ndarray]:
    """The numeric signals of one instance; the loss on a log scale when positive."""
    out: dict[str, np.ndarray] = {}
    loss = np.asarray(ds["loss"].values, dtype=np.float64)
    out["loss"] = np.log(loss) if (loss > 0).all() else loss
    if "feature_count" in ds:
        out["feature_count"] = np.asarray(ds["feature_count"].values, dtype=np.float64)
    if "llc_mean" in ds:
        llc = _fill_nan(_reliable_llc(ds))
        if np.isfinite(llc).all():
            out["llc"] = llc
    return out


def _reliable_llc(ds: xr.Dataset) -> np.ndarray:
    """λ̂ where the diagnostics trust it (`llc_reliable`), NaN elsewhere: an unreliable
    estimate (far from a minimum, drifting chains) can be off by orders of magnitude, and
    must not place a transition or give its ΔLLC."""
    llc = np.asarray(ds["llc_mean"].values, dtype=np.float64)
    if "llc_reliable" not in ds:
        return llc
    return np.where(np.asarray(ds["llc_reliable"].values, dtype=bool), llc, np.nan)


def _events(
    series: dict[str, np.ndarray],
    label_changes: list[int] | None,
    *,
    penalty_factor: float,
    resolution: float,
    smoothing: float,
) -> list[_Event]:
    events = [_Event(i, "configuration") for i in label_changes or []]
    for name, x in series.items():
        idx = set(change_points(x, penalty_factor=penalty_factor, resolution=resolution))
        if name == "llc":
            # a turning point at checkpoint i: the change is between i and i + 1
            idx |= {i + 1 for i in critical_points(x, width=smoothing)}
        events.extend(_Event(i, name) for i in sorted(idx))
    return sorted(events, key=lambda e: (e.index, SIGNALS.index(e.signal)))


def _group(events: list[_Event], tolerance: int) -> list[list[_Event]]:
    groups: list[list[_Event]] = []
    for e in events:
        if groups and e.index - max(g.index for g in groups[-1]) <= tolerance:
            groups[-1].append(e)
        else:
            groups.append([e])
    return groups


def _window_delta(x: np.ndarray | None, before: slice, after: slice) -> float | None:
    if x is None:
        return None
    a, b = x[before], x[after]
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if not a.size or not b.size:
        return None
    return float(np.median(b) - np.median(a))


def _schedule_windows(schedule: Any) -> list[tuple[float, float]]:
    """(begin, finish) step windows of a schedule: an object with ``change_points()``, one
    (begin, finish) pair, a sequence of pairs, or the pairs flattened (or as JSON text)."""
    if schedule is None:
        return []
    if hasattr(schedule, "change_points"):
        schedule = schedule.change_points()
    if isinstance(schedule, str):  # a run directory's attribute, saved as JSON text
        schedule = json.loads(schedule)
    arr = np.asarray(schedule, dtype=np.float64)
    if arr.ndim == 1 and arr.size and arr.size % 2 == 0:  # flat, as netCDF attributes store it
        arr = arr.reshape(-1, 2)
    if arr.ndim != 2 or arr.shape[1] != 2 or (arr[:, 0] > arr[:, 1]).any():
        raise ValueError(f"schedule change points must be (begin, finish) pairs, got {schedule!r}")
    return [(float(a), float(b)) for a, b in arr]


def _driver(
    lo: float, hi: float, steps: np.ndarray, windows: list[tuple[float, float]], lag: int
) -> str:
    """``"schedule"`` when [lo, hi] meets a ramp [begin, finish] extended by ``lag`` checkpoints."""
    for begin, finish in windows:
        j = min(int(np.searchsorted(steps, finish, side="left")) + lag, steps.size - 1)
        end = max(finish, float(steps[j]))
        if hi >= begin and lo <= end:
            return "schedule"
    return "learning"


def _note(signals: set[str], has_labels: bool) -> str:
    numeric = signals & {"loss", "feature_count"}
    if has_labels and numeric and "configuration" not in signals:
        return "loss/|W|^2 step without a configuration change"
    if "configuration" in signals and not numeric:
        return "configuration change without a loss or |W|^2 step"
    if signals == {"llc"}:
        return "LLC only"
    return ""


def _detect_one(
    ds: xr.Dataset,
    *,
    instance: int | None,
    windows: list[tuple[float, float]],
    tolerance: int,
    min_persistence: int,
    penalty_factor: float,
    resolution: float,
    smoothing: float,
    schedule_lag: int,
) -> list[Transition]:
    steps = np.asarray(ds["checkpoint"].values, dtype=np.float64)
    T = steps.size
    has_labels = "kgon" in ds
    stable, label_changes = (
        stable_labels(ds["kgon"].values, min_persistence) if has_labels else (None, None)
    )
    series = _series(ds)
    events = _events(
        series,
        label_changes,
        penalty_factor=penalty_factor,
        resolution=resolution,
        smoothing=smoothing,
    )
    groups = _group(events, tolerance)
    loss = np.asarray(ds["loss"].values, dtype=np.float64)
    fc = series.get("feature_count")
    llc = _reliable_llc(ds) if "llc" in series else None  # not interpolated: Δ's from data
    gap = np.asarray(ds["eig_gap"].values, dtype=np.float64) if "eig_gap" in ds else None
    reliable = np.asarray(ds["llc_reliable"].values, dtype=bool) if "llc_reliable" in ds else None
    available = [s for s in SIGNALS if (s == "configuration" and has_labels) or s in series]
    out: list[Transition] = []
    for g, group in enumerate(groups):
        first = min(e.index for e in group)
        i_lo, i_hi = first - 1, max(e.index for e in group)
        prev_hi = max(e.index for e in groups[g - 1]) if g else 0
        next_lo = min(e.index for e in groups[g + 1]) - 1 if g + 1 < len(groups) else T
        before = slice(max(prev_hi, i_lo - WINDOW + 1), i_lo + 1)
        after = slice(i_hi, min(next_lo, i_hi + WINDOW))
        weights = {s: 1.0 for s in available}
        if "llc" in weights and reliable is not None:
            weights["llc"] = float(reliable[before.start : after.stop].mean())
        agreeing = {e.signal for e in group}
        total = sum(weights.values())
        confidence = sum(weights[s] for s in agreeing) / total if total > 0 else 0.0
        lead = min(group, key=lambda e: (SIGNALS.index(e.signal), e.index))
        lo, hi = float(steps[i_lo]), float(steps[i_hi])
        location = float(np.sqrt((steps[lead.index - 1] + 1) * (steps[lead.index] + 1)) - 1)
        out.append(
            Transition(
                kind="dynamical",
                axis="step",
                location=location,
                interval=(lo, hi),
                before=str(stable[i_lo]) if has_labels else None,
                after=str(stable[i_hi]) if has_labels else None,
                delta_loss=_window_delta(loss, before, after),
                delta_llc=_window_delta(llc, before, after),
                delta_feature_count=_window_delta(fc, before, after),
                delta_eig_gap=_window_delta(gap, before, after),
                signals=tuple(s for s in SIGNALS if s in agreeing),
                available=tuple(available),
                confidence=min(max(confidence, 0.0), 1.0),
                driver=_driver(lo, hi, steps, windows, schedule_lag),  # type: ignore[arg-type]
                instance=instance,
                note=_note(agreeing, has_labels),
            )
        )
    return out


def _with_llc(ds: xr.Dataset, llc: LLCResult) -> xr.Dataset:
    dims = ("checkpoint", "instance")
    mean = llc.mean.numpy()
    if mean.shape != tuple(ds.sizes[d] for d in dims):
        raise ValueError(
            f"llc has shape {mean.shape}, the tracked dataset "
            f"{tuple(ds.sizes[d] for d in dims)} (checkpoint, instance)"
        )
    from tms_slt.transitions.tracking import _reliable

    return ds.assign(
        llc_mean=(dims, mean), llc_std=(dims, llc.std.numpy()), llc_reliable=(dims, _reliable(llc))
    )


def detect_dynamical(
    source: Trajectory | xr.Dataset,
    llc: LLCResult | None = None,
    *,
    instance: int | Sequence[int] | None = None,
    schedule: Any = None,
    tolerance: int = 2,
    min_persistence: int = 2,
    penalty_factor: float = PENALTY_FACTOR,
    resolution: float = RESOLUTION,
    smoothing: float = 1.5,
    schedule_lag: int = 2,
    min_confidence: float = 0.0,
) -> list[Transition]:
    """Stage boundaries of training: where the configuration, loss, ‖W‖²_F or LLC change.

    Args:
        source: a Trajectory (tracked with :func:`track`) or the Dataset :func:`track`
            returns (dims ``checkpoint`` and optionally ``instance``; variables ``loss`` and
            any of ``kgon``, ``feature_count``, ``eig_gap``, ``llc_mean``, ``llc_reliable``).
        llc: LLC estimates for every (checkpoint, instance); adds the LLC signal and its
            reliability weight when ``source`` does not carry them.
        instance: one instance, several, or None for all.
        schedule: change points of a time-varying true distribution: a ``SparsityRamp`` (or
            anything with ``change_points() -> (begin, finish)``), a (begin, finish) pair or
            a sequence of pairs; default ``source.attrs["schedule_change_points"]`` if set.
            Transitions meeting [begin, finish + ``schedule_lag`` checkpoints] get
            ``driver="schedule"``, the others ``driver="learning"``.
        tolerance: events of different signals at most this many checkpoints apart merge.
        min_persistence: checkpoints a new k-gon label must hold to count (flicker filter).
        penalty_factor, resolution: c and ρ of the PELT penalty c·(σ̂² + (ρ·range)²)·log T.
        smoothing: width (checkpoints) of the Gaussian smoother for LLC critical points.
        min_confidence: drop transitions below this confidence.

    Returns:
        Transitions sorted by instance, then step.
    """
    from tms_slt.training import Trajectory

    if isinstance(source, Trajectory):
        ds = track(source, llc)
    elif isinstance(source, xr.Dataset):
        ds = source if llc is None or "llc_mean" in source else _with_llc(source, llc)
    else:
        raise TypeError(f"source must be a Trajectory or an xarray Dataset, got {type(source)}")
    if "loss" not in ds or "checkpoint" not in ds.dims:
        raise ValueError("the dataset needs a `loss` variable over a `checkpoint` dimension")
    steps = np.asarray(ds["checkpoint"].values, dtype=np.float64)
    if (np.diff(steps) <= 0).any():
        raise ValueError("checkpoint steps must increase strictly")
    if schedule is None:
        schedule = ds.attrs.get("schedule_change_points")
    windows = _schedule_windows(schedule)
    if "instance" in ds.dims:
        all_inst = [int(v) for v in ds["instance"].values]
        chosen = all_inst if instance is None else np.atleast_1d(instance).tolist()
        parts = [(int(i), ds.sel(instance=i)) for i in chosen]
    else:
        parts = [(None if instance is None else int(np.atleast_1d(instance)[0]), ds)]
    found: list[Transition] = []
    for inst, part in parts:
        found.extend(
            _detect_one(
                part,
                instance=inst,
                windows=windows,
                tolerance=tolerance,
                min_persistence=min_persistence,
                penalty_factor=penalty_factor,
                resolution=resolution,
                smoothing=smoothing,
                schedule_lag=schedule_lag,
            )
        )
    return [t for t in found if t.confidence >= min_confidence]
