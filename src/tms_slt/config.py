"""Frozen, validated experiment configuration and strict TOML loading.

Every field is range-checked when the dataclass is built, so a bad value stops
a run before any work with one line naming the field and what it allows.
Unknown TOML keys are rejected the same way.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ACTIVATIONS = ("linear", "relu", "swish", "gelu")
OPTIMIZERS = ("adam", "adamw", "sgd")
#: How the training steps run: see `tms_slt.training.train(backend=...)`.
TRAIN_BACKENDS = ("auto", "native", "torch")
#: What a [[schedule]] ramp can move, and how (`tms_slt.schedules.Ramp`).
RAMP_PARAMETERS = ("sparsity", "importance_decay", "active_features")
RAMP_SHAPES = ("linear", "log", "step", "cyclic")


#: Seeds are torch generator seeds: below 2**63 (a larger one overflows deep in torch).
MAX_SEED = 2**63


class ConfigError(ValueError):
    """A configuration value outside its allowed range (message names the field)."""


def _fail(section: str, name: str, allowed: str, got: Any) -> None:
    raise ConfigError(f"{section}.{name} must be {allowed}, got {got!r}")


def _positive_int(section: str, name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        _fail(section, name, "a positive integer", value)


def _nonneg_int(section: str, name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        _fail(section, name, "a non-negative integer", value)


def _positive_float(section: str, name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        _fail(section, name, "a positive number", value)
    if not math.isfinite(value):
        _fail(section, name, "a finite positive number", value)


def _nonneg_float(section: str, name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        _fail(section, name, "a non-negative number", value)
    if not math.isfinite(value):
        _fail(section, name, "a finite non-negative number", value)


def _unit_interval(section: str, name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
        _fail(section, name, "in [0, 1]", value)


def _check_device(device: Any) -> None:
    import torch

    try:
        torch.device(device)
    except (RuntimeError, TypeError):
        _fail("experiment", "device", "a torch device such as 'cpu' or 'cuda:0'", device)


@dataclass(frozen=True)
class DataConfig:
    """The true distribution q (Elhage et al. 2022; Chen et al. 2023).

    Exactly one of `sparsity` (each feature is 0 with probability S, else U[0,1];
    a scalar or one value per feature) and `active_features` (exactly k features
    active per sample, the high-sparsity limit of Chen et al.) is set.
    `n_train` is the size of the fixed training set D_n; 0 means online
    training with a fresh batch every step. The default 30 000 (nβ = n/log n ≈ 2900) puts
    the LLC of the c = 6 k-gons in its asymptotic regime: their softest curved Hessian
    directions (h ≈ 0.02–0.06) need nβ·h ≫ 1, and at n = 1000 (nβ·h ≈ 3–9) even the exact
    tempered posterior is far from λ (see `theory.kgon_llc` and benchmarks/llc_accuracy.py).
    """

    n_features: int = 6
    sparsity: float | tuple[float, ...] | None = None
    active_features: int | None = 1
    importance_decay: float = 1.0
    n_train: int = 30_000

    def __post_init__(self) -> None:
        s = "data"
        _positive_int(s, "n_features", self.n_features)
        if (self.sparsity is None) == (self.active_features is None):
            raise ConfigError(
                "data: set exactly one of data.sparsity (independent features) "
                "and data.active_features (exactly k active)"
            )
        if self.sparsity is not None:
            if isinstance(self.sparsity, list | tuple):
                object.__setattr__(self, "sparsity", tuple(float(v) for v in self.sparsity))
                if len(self.sparsity) != self.n_features:
                    _fail(
                        s,
                        "sparsity",
                        f"a scalar or a list of {self.n_features} values",
                        self.sparsity,
                    )
                for v in self.sparsity:
                    _unit_interval(s, "sparsity", v)
            else:
                _unit_interval(s, "sparsity", self.sparsity)
        if self.active_features is not None:
            _positive_int(s, "active_features", self.active_features)
            if self.active_features > self.n_features:
                _fail(
                    s,
                    "active_features",
                    f"in [1, n_features={self.n_features}]",
                    self.active_features,
                )
        _positive_float(s, "importance_decay", self.importance_decay)
        _nonneg_int(s, "n_train", self.n_train)


@dataclass(frozen=True)
class ModelConfig:
    """x' = act(WᵀWx + b), W of shape (n_hidden, n_features)."""

    n_hidden: int = 2
    activation: str = "relu"
    swish_sharpness: float = 1.0
    bias: bool = True
    init_scale: float = 1.0

    def __post_init__(self) -> None:
        s = "model"
        _positive_int(s, "n_hidden", self.n_hidden)
        if self.activation not in ACTIVATIONS:
            _fail(s, "activation", f"one of {', '.join(ACTIVATIONS)}", self.activation)
        _positive_float(s, "swish_sharpness", self.swish_sharpness)
        if not isinstance(self.bias, bool):
            _fail(s, "bias", "true or false", self.bias)
        _positive_float(s, "init_scale", self.init_scale)


@dataclass(frozen=True)
class TrainConfig:
    """Optimizer, schedule and checkpoints for batched training of many instances.

    The defaults (plain SGD, lr 0.1, batch 100, 10⁴ steps, 6 instances) follow
    Chen et al. 2023's dynamical experiments: from a Xavier-normal start the
    instances pass through k-gon plateaus (3 → 4 → 5 represented features) on
    the way down, some of them late (after 10³ steps). `backend` picks how the steps run
    ("native": the fused C kernel; "torch"; "auto": native where it applies).
    """

    num_steps: int = 10_000
    optimizer: str = "sgd"
    lr: float = 0.1
    weight_decay: float = 0.0
    momentum: float = 0.0
    batch_size: int = 100
    num_instances: int = 6
    num_checkpoints: int = 50
    backend: str = "auto"

    def __post_init__(self) -> None:
        s = "train"
        _positive_int(s, "num_steps", self.num_steps)
        if self.optimizer not in OPTIMIZERS:
            _fail(s, "optimizer", f"one of {', '.join(OPTIMIZERS)}", self.optimizer)
        _positive_float(s, "lr", self.lr)
        _nonneg_float(s, "weight_decay", self.weight_decay)
        if not 0.0 <= self.momentum < 1.0:
            _fail(s, "momentum", "in [0, 1)", self.momentum)
        _positive_int(s, "batch_size", self.batch_size)
        _positive_int(s, "num_instances", self.num_instances)
        _positive_int(s, "num_checkpoints", self.num_checkpoints)
        if self.num_checkpoints < 2:
            _fail(
                s, "num_checkpoints", "at least 2 (step 0 and the last step)", self.num_checkpoints
            )
        if self.backend not in TRAIN_BACKENDS:
            _fail(s, "backend", f"one of {', '.join(TRAIN_BACKENDS)}", self.backend)


#: How the SGLD steps run: see `tms_slt.sampling.llc.estimate_llc(backend=...)`.
LLC_BACKENDS = ("auto", "native", "torch", "compile")
#: The SGLD kernel: see `tms_slt.sampling.llc.estimate_llc(sampler=...)`.
LLC_SAMPLERS = ("sgld", "rmsprop")


@dataclass(frozen=True)
class LLCConfig:
    """Localized, tempered SGLD for the LLC (Lau et al. 2023, arXiv 2308.12108).

    `nbeta` = nβ; None means n / log n with n the number of training samples. `step_size`
    (ε), `localization` (γ), `num_draws` and `num_burnin` are numbers or "auto" (the
    default: chosen per anchor from the curvature of L_n, see `estimate_llc`). `thin`
    keeps every thin-th draw of the loss trace; `backend` picks how the steps run and
    `sampler` the kernel ("sgld" or "rmsprop", RMSProp-preconditioned SGLD).
    """

    step_size: float | str = "auto"
    nbeta: float | None = None
    localization: float | str = "auto"
    num_chains: int = 4
    num_draws: int | str = "auto"
    num_burnin: int | str = "auto"
    batch_size: int = 100
    thin: int = 1
    backend: str = "auto"
    sampler: str = "sgld"

    def __post_init__(self) -> None:
        s = "llc"
        if self.step_size != "auto":
            _positive_float(s, "step_size", self.step_size)
        if self.nbeta is not None:
            _positive_float(s, "nbeta", self.nbeta)
        if self.localization != "auto":
            _nonneg_float(s, "localization", self.localization)
        _positive_int(s, "num_chains", self.num_chains)
        if self.num_chains < 2:
            _fail(s, "num_chains", "at least 2 (R-hat compares chains: one chain has none)", 1)
        if self.num_draws != "auto":
            _positive_int(s, "num_draws", self.num_draws)
        if self.num_burnin != "auto":
            _nonneg_int(s, "num_burnin", self.num_burnin)
        if "auto" not in (self.num_draws, self.num_burnin) and self.num_burnin >= self.num_draws:
            _fail(s, "num_burnin", f"smaller than llc.num_draws={self.num_draws}", self.num_burnin)
        _positive_int(s, "batch_size", self.batch_size)
        _positive_int(s, "thin", self.thin)
        if self.backend not in LLC_BACKENDS:
            _fail(s, "backend", f"one of {', '.join(LLC_BACKENDS)}", self.backend)
        if self.sampler not in LLC_SAMPLERS:
            _fail(s, "sampler", f"one of {', '.join(LLC_SAMPLERS)}", self.sampler)


def check_ramp(
    parameter: str, start: Any, end: Any, begin: int, finish: int, shape: str, cycles: int
) -> None:
    """One-line errors for a ramp of the true distribution (a [[schedule]] table, and
    `schedules.Ramp`, whose start and end may be arrays: one value per instance / feature)."""
    s = "schedule"
    if parameter not in RAMP_PARAMETERS:
        _fail(s, "parameter", f"one of {', '.join(RAMP_PARAMETERS)}", parameter)
    if shape not in RAMP_SHAPES:
        _fail(s, "shape", f"one of {', '.join(RAMP_SHAPES)}", shape)
    for name, value in (("begin", begin), ("finish", finish)):
        _nonneg_int(s, name, value)
    if begin > finish:
        _fail(s, "begin", f"at most finish={finish}", begin)
    _positive_int(s, "cycles", cycles)
    for name, value in (("start", start), ("end", end)):
        v = np.asarray(value, dtype=np.float64)
        if not np.isfinite(v).all():
            _fail(s, name, "finite", value)
        if parameter == "sparsity" and ((v < 0) | (v > 1)).any():
            _fail(s, name, "in [0, 1] for a sparsity ramp", value)
        if parameter != "sparsity" and (v <= 0).any():
            _fail(s, name, f"positive for a {parameter} ramp", value)
        if shape == "log" and parameter == "sparsity" and (v == 1).any():
            _fail(s, name, "below 1 for a log sparsity ramp (density 1 − S > 0)", value)


@dataclass(frozen=True)
class RampConfig:
    """One [[schedule]] table: a parameter of q that moves from `start` to `end` over the
    steps [begin, finish] with a shape (see `tms_slt.schedules`), e.g.

        [[schedule]]
        parameter = "sparsity"
        start = 0.6
        end = 0.97
        begin = 3000
        finish = 9000
        shape = "cyclic"
    """

    parameter: str
    start: float | tuple[float, ...]
    end: float | tuple[float, ...]
    begin: int
    finish: int
    shape: str = "linear"
    cycles: int = 1

    def __post_init__(self) -> None:
        for name in ("start", "end"):
            value = getattr(self, name)
            if isinstance(value, list | tuple):  # one value per feature (sparsity)
                object.__setattr__(self, name, tuple(float(v) for v in value))
            elif isinstance(value, bool) or not isinstance(value, int | float):
                _fail("schedule", name, "a number or a list of numbers", value)
        check_ramp(
            self.parameter, self.start, self.end, self.begin, self.finish, self.shape, self.cycles
        )


@dataclass(frozen=True)
class ExperimentConfig:
    """One resolved run: true distribution, model, training and LLC settings."""

    seed: int = 0
    device: str = "cpu"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    llc: LLCConfig = field(default_factory=LLCConfig)
    #: Ramps of the true distribution during training ([[schedule]] tables); empty: q fixed.
    schedule: tuple[RampConfig, ...] = ()

    def __post_init__(self) -> None:
        _nonneg_int("experiment", "seed", self.seed)
        if self.seed >= MAX_SEED:
            _fail(
                "experiment", "seed", "an integer in [0, 2**63) (a torch generator seed)", self.seed
            )
        self._check_schedule()
        _check_device(self.device)
        if self.model.n_hidden >= self.data.n_features:
            raise ConfigError(
                f"model.n_hidden must be smaller than data.n_features={self.data.n_features} "
                f"(superposition needs m < n), got {self.model.n_hidden}"
            )
        n = self.data.n_train
        if n and self.llc.batch_size > n:
            _fail("llc", "batch_size", f"at most data.n_train={n}", self.llc.batch_size)
        if n and self.train.batch_size > n:
            _fail("train", "batch_size", f"at most data.n_train={n}", self.train.batch_size)
        if self.llc.nbeta is None and n == 1:
            raise ConfigError("llc.nbeta must be given when data.n_train is 1 (n/log n undefined)")

    def _check_schedule(self) -> None:
        object.__setattr__(self, "schedule", tuple(self.schedule))  # a list from Python, too
        if not self.schedule:
            return
        if self.data.n_train:
            _fail(
                "data", "n_train", "0 (online data) when q moves ([[schedule]])", self.data.n_train
            )
        names = [r.parameter for r in self.schedule]
        if len(set(names)) != len(names):
            raise ConfigError(f"schedule: at most one ramp per parameter, got {names}")
        if {"sparsity", "active_features"} <= set(names):
            raise ConfigError("schedule: ramp sparsity or active_features, not both")
        for r in self.schedule:
            _check_ramp_in_training(r, self.train.num_steps)
        n = self.data.n_features
        for r in self.schedule:
            for name in ("start", "end"):
                value = getattr(r, name)
                if isinstance(value, tuple) and (r.parameter != "sparsity" or len(value) != n):
                    _fail("schedule", name, f"a number (or {n} sparsities, one per feature)", value)


def _check_ramp_in_training(ramp: RampConfig, num_steps: int) -> None:
    """A ramp must move q within the training steps 0 … num_steps − 1: one that begins
    after them changes nothing, one that finishes after them stops mid-way (no error)."""
    if ramp.shape == "step" and ramp.begin >= num_steps:
        _fail(
            "schedule",
            "begin",
            f"below train.num_steps={num_steps} (q would never move)",
            ramp.begin,
        )
    if ramp.shape != "step" and ramp.finish > num_steps:
        _fail(
            "schedule",
            "finish",
            f"at most train.num_steps={num_steps} (training would stop mid-ramp)",
            ramp.finish,
        )


_SECTIONS: dict[str, type] = {
    "data": DataConfig,
    "model": ModelConfig,
    "train": TrainConfig,
    "llc": LLCConfig,
}


def field_names() -> list[str]:
    """Every config field as a dotted path ("seed", "data.sparsity", "llc.step_size", ...)."""
    names = [f.name for f in dataclasses.fields(ExperimentConfig) if f.name not in _SECTIONS]
    for section, cls in _SECTIONS.items():
        names += [f"{section}.{f.name}" for f in dataclasses.fields(cls)]
    return names


def _unknown(dotted: str) -> ConfigError:
    """ "unknown key 'x.y'" with a did-you-mean from the known fields."""
    close = difflib.get_close_matches(dotted, field_names(), n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return ConfigError(f"unknown key {dotted!r}{hint}")


def check_keys(keys: Iterable[str]) -> None:
    """Raise the "unknown key ... did you mean" error for the first key that is no config
    field (dotted, as `field_names` lists them)."""
    known = set(field_names())
    for key in keys:
        if key not in known:
            raise _unknown(key)


def flatten(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Nested config mappings -> dotted keys: {"data": {"n_train": 200}} -> {"data.n_train":
    200}; [[schedule]] stays one value under "schedule"."""
    flat: dict[str, Any] = {}
    for key, value in raw.items():
        if key in _SECTIONS and isinstance(value, Mapping):
            flat |= {f"{key}.{sub}": v for sub, v in value.items()}
        else:
            flat[key] = value
    return flat


def parse_override(text: str) -> tuple[str, Any]:
    """ "train.lr=0.01" -> ("train.lr", 0.01): the value is read as TOML (numbers, booleans,
    quoted strings, lists), or taken as a bare string ("auto", "relu") when it is not TOML."""
    key, sep, raw = text.partition("=")
    key, raw = key.strip(), raw.strip()
    if not sep or not key or not raw:
        raise ConfigError(f"--set takes KEY=VALUE (e.g. train.lr=0.01), got {text!r}")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key, value


def config_from_dict(raw: Mapping[str, Any]) -> ExperimentConfig:
    """Build an ExperimentConfig from nested mappings, rejecting unknown keys."""
    top_fields = {f.name for f in dataclasses.fields(ExperimentConfig)}
    for key in raw:
        if key not in top_fields:
            raise _unknown(key)
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        if key == "schedule":
            kwargs[key] = _schedule_from_raw(value)
        elif key in _SECTIONS:
            if not isinstance(value, Mapping):
                raise ConfigError(f"[{key}] must be a table, got {value!r}")
            cls = _SECTIONS[key]
            allowed = {f.name for f in dataclasses.fields(cls)}
            for sub in value:
                if sub not in allowed:
                    raise _unknown(f"{key}.{sub}")
            value = dict(value)
            if key == "data" and "sparsity" in value and "active_features" not in value:
                # Giving a sparsity selects independent features over the exactly-k default.
                value["active_features"] = None
            kwargs[key] = cls(**value)
        else:
            kwargs[key] = value
    return ExperimentConfig(**kwargs)


def _schedule_from_raw(value: Any) -> tuple[RampConfig, ...]:
    """[[schedule]] tables -> RampConfigs, with one-line errors for unknown or missing keys."""
    if not isinstance(value, list | tuple) or not all(isinstance(t, Mapping) for t in value):
        raise ConfigError(f"schedule must be [[schedule]] tables, got {value!r}")
    allowed = [f.name for f in dataclasses.fields(RampConfig)]
    required = [f.name for f in dataclasses.fields(RampConfig) if f.default is dataclasses.MISSING]
    ramps = []
    for table in value:
        for key in table:
            if key not in allowed:
                close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
                hint = f"; did you mean 'schedule.{close[0]}'?" if close else ""
                raise ConfigError(f"unknown key 'schedule.{key}'{hint}")
        missing = [k for k in required if k not in table]
        if missing:
            raise ConfigError(f"each [[schedule]] needs {', '.join(required)}; missing {missing}")
        ramps.append(RampConfig(**table))
    return tuple(ramps)


def read_toml(path: str | Path) -> dict[str, Any]:
    """A TOML file's tables as they are (not validated), with one-line errors."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except IsADirectoryError:
        raise ConfigError(f"{path} is a directory, not a config file") from None
    except UnicodeDecodeError as err:
        raise ConfigError(
            f"{path}: not UTF-8 text (byte {err.object[err.start]:#04x} at offset {err.start}); "
            "TOML files must be UTF-8"
        ) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: invalid TOML ({err})") from None


def load_config(path: str | Path) -> ExperimentConfig:
    """Read a TOML file into a validated ExperimentConfig."""
    return config_from_dict(read_toml(path))


def config_to_dict(config: ExperimentConfig) -> dict[str, Any]:
    """Plain nested dict (None values dropped, tuples as lists) for TOML/JSON output."""

    def clean(obj: Any) -> Any:
        if isinstance(obj, dict):
            return {k: clean(v) for k, v in obj.items() if v is not None}
        if isinstance(obj, tuple | list):
            return [clean(v) for v in obj]
        return obj

    raw = clean(dataclasses.asdict(config))
    if not raw["schedule"]:
        del raw["schedule"]  # a fixed q writes no [[schedule]]
    return raw


def with_overrides(config: ExperimentConfig, overrides: Mapping[str, Any]) -> ExperimentConfig:
    """Return a copy with dotted-path overrides, e.g. {"data.sparsity": 0.9}, validated."""
    raw = config_to_dict(config)
    for dotted, value in overrides.items():
        parts = dotted.split(".")
        target = raw
        if dotted not in field_names():
            raise _unknown(dotted)
        for part in parts[:-1]:
            target = target.setdefault(part, {})
        target[parts[-1]] = value
    # Overriding one data mode switches the other off.
    data = raw.get("data", {})
    if "data.sparsity" in overrides and "data.active_features" not in overrides:
        data.pop("active_features", None)
    if "data.active_features" in overrides and "data.sparsity" not in overrides:
        data.pop("sparsity", None)
    return config_from_dict(raw)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def config_to_toml(config: ExperimentConfig) -> str:
    """The resolved config as TOML text that `load_config` reads back identically."""
    raw = config_to_dict(config)
    ramps = raw.pop("schedule", [])
    lines = [f"{k} = {_toml_value(v)}" for k, v in raw.items() if not isinstance(v, dict)]
    for section, table in raw.items():
        if isinstance(table, dict):
            lines.append(f"\n[{section}]")
            lines.extend(f"{k} = {_toml_value(v)}" for k, v in table.items())
    for ramp in ramps:
        lines.append("\n[[schedule]]")
        lines.extend(f"{k} = {_toml_value(v)}" for k, v in ramp.items())
    return "\n".join(lines) + "\n"
