"""Sweep specifications: axes, grid points with stable ids, and the sweep TOML format.

See `tms_slt.sweep` for the file format and the runner. A `Sweep` validates every
point when it is built, so a bad axis or value fails before any work.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import itertools
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from tms_slt.config import (
    ConfigError,
    ExperimentConfig,
    _toml_value,
    config_from_dict,
    config_to_toml,
    read_toml,
    with_overrides,
)

CHECKPOINT_MODES = ("all", "final")
_RANGE_KEYS = frozenset({"start", "stop", "num", "log"})


@dataclass(frozen=True)
class SweepOptions:
    """What each point computes: the LLC or not, all checkpoints or only the final one."""

    llc: bool = True
    checkpoints: str = "all"

    def __post_init__(self) -> None:
        if not isinstance(self.llc, bool):
            raise ConfigError(f"sweep.llc must be true or false, got {self.llc!r}")
        if self.checkpoints not in CHECKPOINT_MODES:
            raise ConfigError(
                f"sweep.checkpoints must be one of {', '.join(CHECKPOINT_MODES)}, "
                f"got {self.checkpoints!r}"
            )

    def to_toml(self) -> str:
        return f"llc = {_toml_value(self.llc)}\ncheckpoints = {_toml_value(self.checkpoints)}\n"


@dataclass(frozen=True)
class SweepPoint:
    """One grid point: stable id, its axis values, its grid index and resolved config."""

    id: str
    overrides: dict[str, Any]
    index: tuple[int, ...]
    config: ExperimentConfig


def _freeze(value: Any) -> Any:
    """Lists → tuples (recursively), numpy scalars → Python numbers."""
    if isinstance(value, list | tuple):
        return tuple(_freeze(v) for v in value)
    return value.item() if isinstance(value, np.generic) else value


def config_fields(config: ExperimentConfig) -> list[str]:
    """Every dotted field name an axis may sweep, e.g. "seed", "data.sparsity"."""
    names = []
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            names += [f"{f.name}.{g.name}" for g in dataclasses.fields(value)]
        else:
            names.append(f.name)
    return names


def _field_value(config: ExperimentConfig, dotted: str) -> Any:
    value: Any = config
    for part in dotted.split("."):
        value = getattr(value, part)
    return value


def axis_values(name: str, spec: Any, *, integer: bool = False) -> tuple[Any, ...]:
    """Expand one axis spec (list, {start, stop, num}, {..., log = true}) to its values.

    Range values are rounded to integers for an `integer` field (e.g. a
    log-range of data.n_train), or when start, stop and every value are integral.
    """
    if isinstance(spec, list | tuple):
        values = _freeze(spec)
    elif isinstance(spec, Mapping):
        unknown = set(spec) - _RANGE_KEYS
        missing = {"start", "stop", "num"} - set(spec)
        if unknown or missing:
            raise ConfigError(
                f"sweep axis {name!r}: a range needs start, stop, num (and optional log), "
                f"got keys {sorted(spec)}"
            )
        start, stop, num, log = spec["start"], spec["stop"], spec["num"], spec.get("log", False)
        if isinstance(num, bool) or not isinstance(num, int) or num < 0:
            raise ConfigError(
                f"sweep axis {name!r}: num must be a non-negative integer, got {num!r}"
            )
        for key, v in (("start", start), ("stop", stop)):
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                raise ConfigError(f"sweep axis {name!r}: {key} must be a finite number, got {v!r}")
        if not isinstance(log, bool):
            raise ConfigError(f"sweep axis {name!r}: log must be true or false, got {log!r}")
        if log and not (start > 0 and stop > 0):
            raise ConfigError(f"sweep axis {name!r}: a log range needs start, stop > 0")
        grid = np.geomspace(start, stop, num) if log else np.linspace(start, stop, num)
        integral = np.allclose(grid, np.round(grid), rtol=0, atol=1e-9)
        if integer or (isinstance(start, int) and isinstance(stop, int) and integral):
            values = tuple(int(v) for v in np.round(grid))
        else:
            values = tuple(float(v) for v in grid)
    else:
        raise ConfigError(
            f"sweep axis {name!r} must be a list or a table {{start, stop, num[, log]}}, "
            f"got {spec!r}"
        )
    if not values:
        raise ConfigError(f"sweep axis {name!r} is empty")
    if len(set(map(repr, values))) != len(values):
        raise ConfigError(f"sweep axis {name!r} has repeated values: {list(values)}")
    return values


def point_toml(config: ExperimentConfig, options: SweepOptions) -> str:
    return config_to_toml(config) + "\n[sweep]\n" + options.to_toml()


def point_id(config: ExperimentConfig, options: SweepOptions) -> str:
    """Stable id: the first 16 hex digits of sha256(config TOML + sweep options)."""
    return hashlib.sha256(point_toml(config, options).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Sweep:
    """A base config, named axes (dotted field → values) and options; validated eagerly.

    Building a Sweep resolves and validates every point, so bad axes or values
    fail here, before any work, with one line naming the field.
    """

    base: ExperimentConfig
    axes: Mapping[str, Any]
    options: SweepOptions = SweepOptions()

    def __post_init__(self) -> None:
        if not self.axes:
            raise ConfigError("[sweep] needs at least one axis, e.g. seed = [0, 1, 2]")
        known = config_fields(self.base)
        resolved = {}
        for name, spec in self.axes.items():
            if name not in known:
                close = difflib.get_close_matches(name, known, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ConfigError(f"sweep axis {name!r} is not a config field{hint}")
            current = _field_value(self.base, name)
            integer = isinstance(current, int) and not isinstance(current, bool)
            resolved[name] = axis_values(name, spec, integer=integer)
        object.__setattr__(self, "axes", resolved)
        if self.options.llc:
            online = [p for p in self._points if p.config.data.n_train == 0]
            if online:
                raise ConfigError(
                    f"sweep.llc = true needs data.n_train > 0 (point {online[0].overrides} "
                    "trains online); set sweep.llc = false or data.n_train"
                )

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(len(v) for v in self.axes.values())

    @cached_property
    def _points(self) -> list[SweepPoint]:
        points, seen = [], {}
        names = list(self.axes)
        grids = [list(enumerate(v)) for v in self.axes.values()]
        for combo in itertools.product(*grids):
            index = tuple(i for i, _ in combo)
            overrides = dict(zip(names, (v for _, v in combo), strict=True))
            try:
                config = with_overrides(self.base, overrides)
            except ConfigError as err:
                raise ConfigError(f"sweep point {overrides}: {err}") from None
            pid = point_id(config, self.options)
            if pid in seen:
                raise ConfigError(f"sweep points {seen[pid]} and {overrides} are the same config")
            seen[pid] = overrides
            points.append(SweepPoint(pid, overrides, index, config))
        return points

    def points(self) -> list[SweepPoint]:
        """Every grid point, first axis slowest."""
        return list(self._points)

    def to_toml(self) -> str:
        """TOML text that `load_sweep` reads back to an equal Sweep (axes written out)."""
        axes = "".join(f'"{k}" = {_toml_value(list(v))}\n' for k, v in self.axes.items())
        return config_to_toml(self.base) + "\n[sweep]\n" + self.options.to_toml() + axes


def _flatten_axes(table: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Unquoted dotted TOML keys (data.sparsity = ...) arrive nested; flatten them."""
    for key, value in table.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and not set(value) <= _RANGE_KEYS:
            yield from _flatten_axes(value, f"{name}.")
        else:
            yield name, value


def sweep_from_dict(raw: Mapping[str, Any]) -> Sweep:
    """Build a Sweep from a parsed sweep TOML (config tables + a [sweep] table)."""
    raw = dict(raw)
    table = raw.pop("sweep", None)
    if not isinstance(table, Mapping):
        raise ConfigError("a sweep file needs a [sweep] table with at least one axis")
    table = dict(table)
    opts = {k: table.pop(k) for k in ("llc", "checkpoints") if k in table}
    return Sweep(config_from_dict(raw), dict(_flatten_axes(table)), SweepOptions(**opts))


def load_sweep(path: str | Path) -> Sweep:
    """Read and validate a sweep TOML file."""
    if not Path(path).exists():
        raise ConfigError(f"sweep file not found: {path}")
    return sweep_from_dict(read_toml(path))
