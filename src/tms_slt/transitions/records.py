"""The :class:`Transition` record shared by all detectors, and its text table."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Kind = Literal["dynamical", "sweep", "bayesian"]
Driver = Literal["learning", "schedule"]


@dataclass(frozen=True)
class Transition:
    """One detected transition, with where, what changed, and the evidence.

    Attributes:
        kind: ``"dynamical"`` (over training steps), ``"sweep"`` (over a parameter of the true
            distribution) or ``"bayesian"`` (over the sample size n).
        axis: the axis it lives on: ``"step"``, a sweep coordinate such as
            ``"data.sparsity"``, or ``"n"``.
        location: point estimate on that axis.
        interval: ``(lo, hi)`` bracketing it: the last point before and the first point after
            (checkpoints, grid points or bisection ends); lo == hi when exact.
        before, after: configuration labels (k-gon such as ``"4++"``, or a phase name);
            None when the input carries no labels.
        delta_loss, delta_llc, delta_feature_count, delta_eig_gap: after − before (medians of
            short windows on either side); None when not available.
        signals: the signals that place a change here, e.g. ``("configuration",
            "feature_count", "loss")``.
        available: the signals that were examined.
        confidence: in [0, 1]; for dynamical transitions the weighted fraction of available
            signals that agree (the LLC weighted by the fraction of reliable estimates).
        driver: ``"schedule"`` when it falls inside or right after a change of the true
            distribution, ``"learning"`` otherwise; None for sweeps and Bayesian crossings.
        instance: the training instance (dynamical), else None.
        coords: other coordinates that locate it (e.g. the other axis of a 2-d sweep).
        note: a human-readable remark, e.g. a loss step without a configuration change.
    """

    kind: Kind
    axis: str
    location: float
    interval: tuple[float, float]
    before: str | None = None
    after: str | None = None
    delta_loss: float | None = None
    delta_llc: float | None = None
    delta_feature_count: float | None = None
    delta_eig_gap: float | None = None
    signals: tuple[str, ...] = ()
    available: tuple[str, ...] = ()
    confidence: float = 1.0
    driver: Driver | None = None
    instance: int | None = None
    coords: tuple[tuple[str, Any], ...] = field(default_factory=tuple)
    note: str = ""

    def __post_init__(self) -> None:
        lo, hi = self.interval
        if not lo <= hi:
            raise ValueError(f"interval must satisfy lo <= hi, got {self.interval}")
        if not 0.0 <= self.confidence <= 1.0:
            raise ValueError(f"confidence must lie in [0, 1], got {self.confidence}")

    @property
    def configuration_changed(self) -> bool:
        """Whether the configuration label differs before and after."""
        return self.before is not None and self.after is not None and self.before != self.after

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict: tuples become lists, NaN becomes None, numpy scalars Python ones."""

        def clean(v: Any) -> Any:
            if isinstance(v, tuple | list):
                return [clean(u) for u in v]
            if isinstance(v, dict):
                return {str(k): clean(u) for k, u in v.items()}
            if hasattr(v, "item") and not isinstance(v, str):
                v = v.item()
            if isinstance(v, float) and not math.isfinite(v):
                return None
            return v

        out = clean(asdict(self))
        out["coords"] = {str(k): clean(v) for k, v in self.coords}
        return out


def _fmt(v: float | None, spec: str = "+.3g") -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def format_transitions(transitions: Sequence[Transition]) -> str:
    """A fixed-width text table, one row per transition (empty list: a one-line message)."""
    if not transitions:
        return "no transitions detected"
    header = (
        f"{'inst':>4} {'interval':>17} {'before':>7} {'after':>7} {'Δloss':>9} {'ΔLLC':>7} "
        f"{'Δfeature_count':>14} {'Δeig_gap':>8} {'conf':>5} {'driver':>8}  signals"
    )
    lines = [header]
    for t in transitions:
        lo, hi = t.interval
        interval = f"[{lo:.4g}, {hi:.4g}]"
        inst = "-" if t.instance is None else str(t.instance)
        signals = ",".join(t.signals) + (f"  ({t.note})" if t.note else "")
        lines.append(
            f"{inst:>4} {interval:>17} {t.before or '-':>7} {t.after or '-':>7} "
            f"{_fmt(t.delta_loss):>9} {_fmt(t.delta_llc, '+.2f'):>7} "
            f"{_fmt(t.delta_feature_count, '+.2f'):>14} {_fmt(t.delta_eig_gap, '+.2f'):>8} "
            f"{t.confidence:>5.2f} {t.driver or '-':>8}  {signals}"
        )
    return "\n".join(lines)
