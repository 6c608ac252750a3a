"""True distributions that move during training: schedules of any parameter of q.

A TMS layer deep in a network sees inputs whose statistics drift while it learns: their
sparsity, the importance of its features, how many are active at once. A schedule is a map
step ↦ q_t (`TMSDistribution`) that `training.train` calls every step; `change_points()`
gives the detector the step windows where q moves, so it can tell schedule-driven from
learning-driven transitions (`transitions.detect_dynamical`, `driver`).

A :class:`Ramp` moves one parameter between two values over [begin, finish] with a shape:

* ``"linear"``: v(t) = v₀ + f (v₁ − v₀), f = (t − begin)/(finish − begin) clipped to [0, 1];
* ``"log"``: the same in log space: geometric interpolation of the importance decay or the
  active-feature count, and of the feature density 1 − S for sparsity (so S = 0.9 → 0.999
  spends equal time per decade of density);
* ``"step"``: v₀ before `begin`, v₁ from `begin` on (`finish` is ignored);
* ``"cyclic"``: there and back, v₀ → v₁ over the first half of [begin, finish] and back over
  the second (a hysteresis loop); ``cycles`` repeats it.

The start and end values may be tensors: one per instance (shape (I, 1)) and, for
sparsity, one per feature (shape (n,) or (I, n)), so ramps of several speeds or ranges train
as instances of one run. A :class:`DistributionSchedule` composes ramps of different
parameters over a base distribution.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from tms_slt.config import RAMP_PARAMETERS, RAMP_SHAPES, ExperimentConfig, check_ramp
from tms_slt.data import TMSDistribution

PARAMETERS = RAMP_PARAMETERS
SHAPES = RAMP_SHAPES


def _as_tensor(value: float | Sequence[float] | Tensor) -> Tensor:
    return torch.as_tensor(value, dtype=torch.float64)


@dataclass(frozen=True)
class Ramp:
    """One parameter of q moving from `start` to `end` between steps `begin` and `finish`.

    Args:
        parameter: one of PARAMETERS.
        start, end: the values (floats, or tensors broadcastable per instance / feature).
        begin, finish: the step window, 0 ≤ begin ≤ finish.
        shape: one of SHAPES (see the module docstring).
        cycles: for ``"cyclic"``, how many there-and-back loops fill [begin, finish].
    """

    parameter: str
    start: Any
    end: Any
    begin: int
    finish: int
    shape: str = "linear"
    cycles: int = 1

    def __post_init__(self) -> None:
        check_ramp(
            self.parameter,
            _as_tensor(self.start).numpy(),
            _as_tensor(self.end).numpy(),
            self.begin,
            self.finish,
            self.shape,
            self.cycles,
        )

    def fraction(self, step: int) -> float:
        """How far along the ramp q is at `step`: 0 at `start`, 1 at `end`."""
        if self.shape == "step":
            return 0.0 if step < self.begin else 1.0
        span = max(self.finish - self.begin, 1)
        f = min(max((step - self.begin) / span, 0.0), 1.0)
        if self.shape == "cyclic":
            phase = (f * self.cycles) % 1.0 if f < 1.0 else 0.0
            return 1.0 - abs(2.0 * phase - 1.0)
        return f

    def value_at(self, step: int) -> Tensor:
        """The parameter's value at `step` (a tensor of the broadcast shape of start, end)."""
        f = self.fraction(step)
        lo, hi = _as_tensor(self.start), _as_tensor(self.end)
        if self.shape != "log":
            return lo + f * (hi - lo)
        if self.parameter == "sparsity":  # geometric in the density 1 − S
            return 1.0 - (1.0 - lo) * ((1.0 - hi) / (1.0 - lo)) ** f
        return lo * (hi / lo) ** f

    def change_points(self) -> list[tuple[int, int]]:
        """Windows where q moves: [begin, finish] (a step moves at `begin` only)."""
        if self.shape == "step":
            return [(self.begin, self.begin)]
        return [(self.begin, self.finish)]

    def to_dict(self) -> dict[str, Any]:
        def plain(v: Any) -> Any:
            return _as_tensor(v).tolist()

        return {
            "parameter": self.parameter,
            "start": plain(self.start),
            "end": plain(self.end),
            "begin": self.begin,
            "finish": self.finish,
            "shape": self.shape,
            "cycles": self.cycles,
        }


@dataclass(frozen=True)
class DistributionSchedule:
    """q_t: a base distribution whose parameters follow `ramps` (a schedule for `train`).

    Args:
        n_features: n.
        ramps: at most one per parameter.
        sparsity, active_features, importance_decay: the base values of the parameters no
            ramp moves (exactly one of sparsity and active_features, as in TMSDistribution;
            a ramp of either one selects that mode).
    """

    n_features: int
    ramps: tuple[Ramp, ...] = field(default_factory=tuple)
    sparsity: Any = None
    active_features: int | None = None
    importance_decay: float = 1.0

    def __post_init__(self) -> None:
        names = [r.parameter for r in self.ramps]
        if len(set(names)) != len(names):
            raise ValueError(f"at most one ramp per parameter, got {names}")
        if "sparsity" in names and "active_features" in names:
            raise ValueError("ramp sparsity or active_features, not both")
        self(0)  # validates the base values and the ramps' values against n_features

    def __add__(self, ramp: Ramp) -> DistributionSchedule:
        """This schedule with one more ramp (composition)."""
        return DistributionSchedule(
            self.n_features,
            (*self.ramps, ramp),
            self.sparsity,
            self.active_features,
            self.importance_decay,
        )

    def values_at(self, step: int) -> dict[str, Tensor]:
        """The scheduled parameters' values at `step`."""
        return {r.parameter: r.value_at(step) for r in self.ramps}

    def __call__(self, step: int) -> TMSDistribution:
        v = self.values_at(step)
        decay = v.get("importance_decay", _as_tensor(self.importance_decay))
        # I_i = r^i; a per-instance decay has shape (I, 1) or (I,), one row of I per instance
        if decay.numel() == 1:
            decay = decay.reshape(())
        elif decay.shape[-1] != 1:
            decay = decay.unsqueeze(-1)
        importance = (decay ** torch.arange(self.n_features)).float()
        sparsity, active = v.get("sparsity", self.sparsity), self.active_features
        if "active_features" in v:  # a ramp of the active count selects that mode
            k = v["active_features"]
            if k.numel() != 1:
                raise ValueError("active_features cannot differ between instances")
            sparsity, active = None, max(1, min(self.n_features, round(float(k))))
        return TMSDistribution(
            self.n_features,
            None if sparsity is None else _as_tensor(sparsity).float(),
            float(decay) if decay.numel() == 1 else 1.0,
            active_features=None if sparsity is not None else active,
            importance=importance,
        )

    def change_points(self) -> list[tuple[int, int]]:
        """Every ramp's window, sorted (the detector's `schedule`)."""
        return sorted(w for r in self.ramps for w in r.change_points())

    def to_dict(self) -> dict[str, Any]:
        """A plain dict (TOML/JSON-able) that :meth:`from_dict` turns back into this."""
        base: dict[str, Any] = {"n_features": self.n_features}
        if self.sparsity is not None:
            base["sparsity"] = _as_tensor(self.sparsity).tolist()
        if self.active_features is not None:
            base["active_features"] = self.active_features
        base["importance_decay"] = self.importance_decay
        base["ramps"] = [r.to_dict() for r in self.ramps]
        return base

    @classmethod
    def from_config(cls, config: ExperimentConfig) -> DistributionSchedule:
        """q_t of a config: its [data] distribution moved by its [[schedule]] ramps."""
        data = config.data
        return cls(
            data.n_features,
            tuple(Ramp(**dataclasses.asdict(r)) for r in config.schedule),
            sparsity=data.sparsity,
            active_features=None if data.sparsity is not None else data.active_features,
            importance_decay=data.importance_decay,
        )

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DistributionSchedule:
        d = dict(d)
        ramps = tuple(Ramp(**r) for r in d.pop("ramps", []))
        return cls(ramps=ramps, **d)


def schedule_value(schedule: DistributionSchedule, steps: Sequence[int], parameter: str) -> Tensor:
    """(len(steps), ...) the value of `parameter` at every step (for figures and lag
    measurements against the schedule)."""
    ramp = next((r for r in schedule.ramps if r.parameter == parameter), None)
    if ramp is None:
        raise ValueError(f"the schedule has no ramp of {parameter!r}")
    return torch.stack([ramp.value_at(int(s)) for s in steps])
