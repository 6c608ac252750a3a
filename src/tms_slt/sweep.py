"""Sweeps: grids of experiment configs, run on any executor, resumable, collected to xarray.

A sweep file is an experiment config (seed, device, [data], [model], [train],
[llc]) plus a ``[sweep]`` table of options and axes; axes are any dotted config
field with a list, a range ``{start, stop, num}`` or a log-range
``{start, stop, num, log = true}``::

    [sweep]
    llc = true                # estimate the LLC of every kept checkpoint
    checkpoints = "final"     # "all" or "final" (phase diagrams need only the last)
    "data.sparsity" = [0.0, 0.5, 0.9]
    "data.importance_decay" = {start = 0.5, stop = 1.0, num = 6}
    seed = [0, 1, 2]

The grid is the Cartesian product of the axes (first axis slowest). Each point's
id is a hash of its resolved config TOML plus the options, so ids are stable
across runs and machines and change whenever anything that affects the result does.

Execution goes through the `concurrent.futures.Executor` interface (`submit` +
futures): in-process (default, one point after another), ``"process"`` (a local
process pool), a `distributed.Client` (see `dask_client`), or any object with
``submit(fn, *args)`` returning futures with ``done()``/``result()``. For SLURM,
submitit's executor works as is::

    executor = submitit.AutoExecutor(folder="slurm_logs")
    executor.update_parameters(timeout_min=60, slurm_partition="cpu")
    run_sweep(load_sweep("sweep.toml"), "out", executor=executor)

Results are written by the process that calls `run_sweep`, one atomic file per
point, so a killed run loses only points in flight; re-running skips finished
points (see `tms_slt.sweep_store`). Points are not batched into one tensor
program: to share one `train` call, put seeds into ``train.num_instances``.
Dask is imported only by `dask_client` and never at `tms_slt` import time.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import difflib
import hashlib
import itertools
import json
import math
import os
import sys
import time
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr
from tqdm.auto import tqdm

from tms_slt import sweep_store as store
from tms_slt.config import (
    ConfigError,
    ExperimentConfig,
    _toml_value,
    config_from_dict,
    config_to_toml,
    with_overrides,
)
from tms_slt.io import atomic_write_text, read_dataset, write_dataset

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


def axis_values(name: str, spec: Any) -> tuple[Any, ...]:
    """Expand one axis spec (list, {start, stop, num}, {..., log = true}) to its values."""
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
            raise ConfigError(f"sweep axis {name!r}: num must be a non-negative integer, got {num!r}")
        for key, v in (("start", start), ("stop", stop)):
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                raise ConfigError(f"sweep axis {name!r}: {key} must be a finite number, got {v!r}")
        if not isinstance(log, bool):
            raise ConfigError(f"sweep axis {name!r}: log must be true or false, got {log!r}")
        if log and not (start > 0 and stop > 0):
            raise ConfigError(f"sweep axis {name!r}: a log range needs start, stop > 0")
        grid = np.geomspace(start, stop, num) if log else np.linspace(start, stop, num)
        ints = isinstance(start, int) and isinstance(stop, int)
        if ints and np.allclose(grid, np.round(grid), rtol=0, atol=1e-9):
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


def _point_toml(config: ExperimentConfig, options: SweepOptions) -> str:
    return config_to_toml(config) + "\n[sweep]\n" + options.to_toml()


def point_id(config: ExperimentConfig, options: SweepOptions) -> str:
    """Stable id: the first 16 hex digits of sha256(config TOML + sweep options)."""
    return hashlib.sha256(_point_toml(config, options).encode()).hexdigest()[:16]


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
            resolved[name] = axis_values(name, spec)
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
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"sweep file not found: {path}") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: invalid TOML ({err})") from None
    return sweep_from_dict(raw)


def _final_only(trajectory: Any) -> Any:
    """The trajectory restricted to its last checkpoint."""
    t = trajectory
    return dataclasses.replace(t, steps=t.steps[-1:], W=t.W[-1:], b=t.b[-1:], loss=t.loss[-1:])


def run_point(config: ExperimentConfig, options: SweepOptions = SweepOptions()) -> xr.Dataset:
    """Train, optionally estimate the LLC, and measure one point: config → Dataset.

    Pure and picklable: all randomness comes from one local torch.Generator
    seeded with `config.seed` (training first, then SGLD), never global state.
    The result is `tms_slt.transitions.track`'s Dataset over (checkpoint,
    instance); with checkpoints = "final" the checkpoint dim is dropped and
    its step kept as the variable `final_step`. attrs: point_id, point_toml.
    """
    from tms_slt.sampling.llc import estimate_llc
    from tms_slt.training import train
    from tms_slt.transitions import track

    generator = torch.Generator().manual_seed(config.seed)
    trajectory = train(config, generator=generator, progress=False)
    if options.checkpoints == "final":
        trajectory = _final_only(trajectory)
    llc = None
    if options.llc:
        c = config.llc
        llc = estimate_llc(
            trajectory,
            step_size=c.step_size,
            nbeta=c.nbeta,
            localization=c.localization,
            num_chains=c.num_chains,
            num_draws=c.num_draws,
            num_burnin=c.num_burnin,
            batch_size=c.batch_size,
            generator=generator,
            progress=False,
        )
    ds = track(trajectory, llc)
    if options.checkpoints == "final":
        ds = ds.isel(checkpoint=-1).reset_coords("checkpoint").rename(checkpoint="final_step")
    if "nbeta" in ds.attrs:
        ds["nbeta"] = ((), float(ds.attrs.pop("nbeta")))
    ds.attrs = {"point_id": point_id(config, options), "point_toml": _point_toml(config, options)}
    return ds


@dataclass(frozen=True)
class SweepSummary:
    """What one `run_sweep` call did."""

    out_dir: Path
    num_points: int
    computed: int
    skipped: int
    failed: dict[str, str]
    elapsed_s: float

    @property
    def ok(self) -> bool:
        return not self.failed


class _InlineExecutor(cf.Executor):
    """Runs each submitted call at once in this process."""

    def submit(self, fn, /, *args, **kwargs) -> cf.Future:
        future: cf.Future = cf.Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except Exception as err:
            future.set_exception(err)
        return future


def _init_process_worker() -> None:
    torch.set_num_threads(1)


def _is_dask_client(obj: Any) -> bool:
    return type(obj).__module__.startswith("distributed") and hasattr(obj, "get_executor")


def _resolve_executor(executor: Any, max_workers: int | None, num_points: int):
    """(executor, max in flight, owned?) for the `executor` argument of run_sweep."""
    if executor is None or executor == "inline":
        return _InlineExecutor(), 1, False
    if executor == "process":
        import multiprocessing

        workers = max_workers or os.cpu_count() or 1
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["tms_slt.sweep"])
        pool = cf.ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_process_worker)
        return pool, 2 * workers, True
    if _is_dask_client(executor):
        return executor.get_executor(pure=False), max_workers or num_points, False
    if isinstance(executor, str) or not callable(getattr(executor, "submit", None)):
        raise ValueError(
            "executor must be None, 'inline', 'process', a distributed.Client or an object "
            f"with submit(fn, *args), got {executor!r}"
        )
    return executor, max_workers or num_points, False


def _wait_some(futures: Mapping[Any, Any]) -> list[Any]:
    """Futures that have finished, waiting for at least one."""
    if all(isinstance(f, cf.Future) for f in futures):
        done, _ = cf.wait(list(futures), return_when=cf.FIRST_COMPLETED)
        return list(done)
    while True:  # e.g. submitit jobs: poll
        done = [f for f in futures if f.done()]
        if done:
            return done
        time.sleep(0.5)


def _prepare_dir(sweep: Sweep, out_dir: Path) -> None:
    """Write sweep.toml, or check that the one there describes the same sweep."""
    spec = out_dir / store.SWEEP_FILE
    text = sweep.to_toml()
    if spec.exists() and spec.read_text() != text:
        raise ValueError(f"{out_dir} holds a different sweep ({spec}); use another --out")
    if not spec.exists():
        atomic_write_text(spec, text)


def run_sweep(
    sweep: Sweep,
    out_dir: str | Path,
    *,
    executor: Any = None,
    max_workers: int | None = None,
    progress: bool = True,
) -> SweepSummary:
    """Run every point of `sweep` not already done in `out_dir`; resumable.

    Args:
        sweep: the validated sweep.
        out_dir: the sweep directory (created); re-running with the same sweep
            skips finished points and recomputes missing or corrupt ones.
        executor: None/"inline" (in this process), "process" (a process pool of
            `max_workers`), a `distributed.Client`, or any executor with
            `submit(fn, *args)` (e.g. submitit's).
        max_workers: process-pool size (default: CPU count), or for other
            executors the most points in flight (default: all).
        progress: show a progress bar (and the Dask dashboard link).

    A failing point is recorded as failed in the manifest with its error and
    does not stop the others.
    """
    start = time.perf_counter()
    out_dir = Path(out_dir)
    points = sweep.points()
    ex, window, owned = _resolve_executor(executor, max_workers, len(points))
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        _prepare_dir(sweep, out_dir)
        store.acquire_lock(out_dir)
        try:
            return _run_points(sweep, points, out_dir, ex, window, progress, executor, start)
        finally:
            store.release_lock(out_dir)
    finally:
        if owned:
            ex.shutdown(wait=True, cancel_futures=True)


def _run_points(sweep, points, out_dir, ex, window, progress, executor, start) -> SweepSummary:
    store.remove_stale_temp_files(out_dir)
    texts = {p.id: _point_toml(p.config, sweep.options) for p in points}
    manifest = store.Manifest(out_dir, ((p.id, p.overrides) for p in points))
    todo = []
    for p in points:
        if store.is_done(store.point_path(out_dir, p.id), texts[p.id]):
            manifest.set(p.id, "done")
        else:
            todo.append(p)
    if progress and _is_dask_client(executor) and executor.dashboard_link:
        print(f"Dask dashboard: {executor.dashboard_link}", file=sys.stderr)
    bar = tqdm(total=len(points), initial=len(points) - len(todo), desc="sweep", unit="pt")
    bar.disable = not progress
    queue, in_flight, failed = iter(todo), {}, {}
    try:
        while True:
            for p in itertools.islice(queue, max(0, window - len(in_flight))):
                manifest.set(p.id, "running")
                in_flight[ex.submit(run_point, p.config, sweep.options)] = p
            manifest.flush()
            if not in_flight:
                break
            for future in _wait_some(in_flight):
                p = in_flight.pop(future)
                try:
                    ds = future.result()
                    if ds.attrs.get("point_toml") != texts[p.id]:
                        raise RuntimeError("result does not belong to this point")
                    write_dataset(store.point_path(out_dir, p.id), ds)
                except Exception as err:
                    failed[p.id] = f"{type(err).__name__}: {err}"
                    manifest.set(p.id, "failed", failed[p.id])
                else:
                    manifest.set(p.id, "done")
                bar.update()
    finally:
        for future in in_flight:
            future.cancel()
        for pid in (p.id for p in in_flight.values()):
            manifest.set(pid, "pending")
        manifest.flush(force=True)
        bar.close()
    return SweepSummary(
        out_dir, len(points), len(todo) - len(failed), len(points) - len(todo), failed,
        time.perf_counter() - start,
    )  # fmt: skip


@dataclass(frozen=True)
class SweepStatus:
    """Point ids by status; `failed` maps each failed id to its error text."""

    done: tuple[str, ...]
    running: tuple[str, ...]
    pending: tuple[str, ...]
    failed: dict[str, str]

    @property
    def complete(self) -> bool:
        return not (self.running or self.pending or self.failed)


def _load_dir(out_dir: Path) -> Sweep:
    if not (out_dir / store.SWEEP_FILE).exists():
        raise ValueError(f"{out_dir} is not a sweep directory (no {store.SWEEP_FILE})")
    return load_sweep(out_dir / store.SWEEP_FILE)


def sweep_status(out_dir: str | Path) -> SweepStatus:
    """Done / running / pending / failed points of the sweep in `out_dir`, from its files.

    "done" is checked against the point files themselves; "running" is shown
    only while a live process holds the sweep's lock (else those are pending).
    """
    out_dir = Path(out_dir)
    sweep = _load_dir(out_dir)
    manifest = store.read_manifest(out_dir)
    live = store.lock_is_live(out_dir)
    by: dict[str, list[str]] = {"done": [], "running": [], "pending": []}
    failed = {}
    for p in sweep.points():
        entry = manifest.get(p.id, {})
        if store.is_done(store.point_path(out_dir, p.id), _point_toml(p.config, sweep.options)):
            by["done"].append(p.id)
        elif entry.get("status") == "failed":
            failed[p.id] = entry.get("error") or "unknown error"
        elif entry.get("status") == "running" and live:
            by["running"].append(p.id)
        else:
            by["pending"].append(p.id)
    return SweepStatus(tuple(by["done"]), tuple(by["running"]), tuple(by["pending"]), failed)


def _axis_coords(name: str, values: tuple[Any, ...]) -> tuple[np.ndarray, dict[str, str]]:
    """Coordinate values for an axis: the values, or indices when they are not scalars."""
    if all(isinstance(v, int | float | str | bool) for v in values):
        return np.asarray(values), {}
    return np.arange(len(values)), {"values": json.dumps([list(v) for v in values])}


def collect(out_dir: str | Path) -> xr.Dataset:
    """Merge all points of a finished sweep into one Dataset with the axes as dimensions.

    Dimension names are the dotted axis names ("data.sparsity"), first axis
    first, followed by each point's own dims; `point_id` names the file of each
    point. Raises ValueError if any point is missing (see `sweep_status`).
    """
    out_dir = Path(out_dir)
    sweep = _load_dir(out_dir)
    points = sweep.points()
    missing = [
        p.id
        for p in points
        if not store.is_done(store.point_path(out_dir, p.id), _point_toml(p.config, sweep.options))
    ]
    if missing:
        raise ValueError(
            f"{len(missing)} of {len(points)} points in {out_dir} are not done "
            f"(e.g. {missing[0]}); run the sweep again or see sweep_status"
        )
    coords = {name: _axis_coords(name, values) for name, values in sweep.axes.items()}
    flat = []
    for p in points:
        ds = read_dataset(store.point_path(out_dir, p.id))
        ds.attrs = {}
        ds["point_id"] = ((), p.id)
        at = {name: [coords[name][0][i]] for name, i in zip(sweep.axes, p.index, strict=True)}
        flat.append(ds.expand_dims(at))
    nested: Any = flat
    for size in reversed(sweep.shape[1:]):
        nested = [nested[i : i + size] for i in range(0, len(nested), size)]
    out = xr.combine_nested(nested, concat_dim=list(sweep.axes), combine_attrs="drop")
    for name, (_, attrs) in coords.items():
        out[name].attrs.update(attrs)
    out.attrs = {"sweep_toml": sweep.to_toml(), "sweep_axes": json.dumps(list(sweep.axes))}
    return out


def dask_client(
    scheduler: str | None = None,
    *,
    local_workers: int | None = None,
    timeout: float = 10.0,
) -> Any:
    """A `distributed.Client` on `scheduler` ("tcp://host:port"), or on a new LocalCluster.

    With `local_workers=N`, starts N single-threaded worker processes, closed
    with the client. Raises ValueError if no scheduler answers within
    `timeout` seconds, ImportError without the `dask` extra.
    """
    if (scheduler is None) == (local_workers is None):
        raise ValueError("give exactly one of scheduler and local_workers")
    try:
        from distributed import Client
    except ImportError:
        raise ImportError("Dask sweeps need the dask extra: pip install 'tms-slt[dask]'") from None
    if local_workers is not None:
        if isinstance(local_workers, bool) or not isinstance(local_workers, int):
            raise ValueError(f"local_workers must be a positive integer, got {local_workers!r}")
        if local_workers < 1:
            raise ValueError(f"local_workers must be a positive integer, got {local_workers!r}")
        import importlib.util

        dashboard = ":0" if importlib.util.find_spec("bokeh") else None
        return Client(
            n_workers=local_workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=dashboard,
        )
    try:
        return Client(scheduler, timeout=timeout)
    except (OSError, TimeoutError, ValueError) as err:
        raise ValueError(f"no Dask scheduler answers at {scheduler!r}: {err}") from None
