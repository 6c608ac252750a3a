"""Running, resuming, inspecting and collecting sweeps (see the package docstring)."""

from __future__ import annotations

import dataclasses
import itertools
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr
from tqdm.auto import tqdm

from tms_slt.config import ExperimentConfig
from tms_slt.io import atomic_write_text, read_dataset, write_dataset
from tms_slt.sweep import store
from tms_slt.sweep.executors import (
    is_dask_client,
    resolve_executor,
    wait_some,
)
from tms_slt.sweep.spec import (
    Sweep,
    SweepOptions,
    SweepPoint,
    load_sweep,
    point_id,
    point_toml,
)


def run_point(config: ExperimentConfig, options: SweepOptions | None = None) -> xr.Dataset:
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

    options = SweepOptions() if options is None else options
    generator = torch.Generator().manual_seed(config.seed)
    trajectory = train(config, generator=generator, progress=False)
    if options.checkpoints == "final":
        trajectory = trajectory.take(-1)
    llc = None
    if options.llc:
        llc = estimate_llc(
            trajectory, **dataclasses.asdict(config.llc), generator=generator, progress=False
        )
    ds = track(trajectory, llc)
    if options.checkpoints == "final":
        ds = ds.isel(checkpoint=-1).reset_coords("checkpoint").rename(checkpoint="final_step")
    if "nbeta" in ds.attrs:
        ds["nbeta"] = ((), float(ds.attrs.pop("nbeta")))
    ds.attrs = {"point_id": point_id(config, options), "point_toml": point_toml(config, options)}
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
    ex, window, owned = resolve_executor(executor, max_workers, len(points))
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


def _run_points(
    sweep: Sweep,
    points: list[SweepPoint],
    out_dir: Path,
    ex: Any,
    window: int,
    progress: bool,
    executor: Any,
    start: float,
) -> SweepSummary:
    """Skip finished points, submit the rest `window` at a time, store results as they come."""
    store.remove_stale_temp_files(out_dir)
    texts = {p.id: point_toml(p.config, sweep.options) for p in points}
    manifest = store.Manifest(out_dir, ((p.id, p.overrides) for p in points))
    todo = []
    for p in points:
        if store.is_done(store.point_path(out_dir, p.id), texts[p.id]):
            manifest.set(p.id, "done")
        else:
            todo.append(p)
    if progress and is_dask_client(executor) and executor.dashboard_link:
        print(f"Dask dashboard: {executor.dashboard_link}", file=sys.stderr)
    done = len(points) - len(todo)
    bar = tqdm(total=len(points), initial=done, desc="sweep", unit="pt", disable=not progress)
    queue, in_flight, failed = iter(todo), {}, {}
    try:
        while True:
            for p in itertools.islice(queue, max(0, window - len(in_flight))):
                manifest.set(p.id, "running")
                in_flight[ex.submit(run_point, p.config, sweep.options)] = p
            manifest.flush()
            if not in_flight:
                break
            for future in wait_some(in_flight):
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
        if store.is_done(store.point_path(out_dir, p.id), point_toml(p.config, sweep.options)):
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
        if not store.is_done(store.point_path(out_dir, p.id), point_toml(p.config, sweep.options))
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
