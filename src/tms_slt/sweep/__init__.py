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
points (see `tms_slt.sweep.store`). Points are not batched into one tensor
program: to share one `train` call, put seeds into ``train.num_instances``.
Dask is imported only by `dask_client` and never at `tms_slt` import time.
"""

from tms_slt.sweep.executors import dask_client
from tms_slt.sweep.runner import (
    SweepStatus,
    SweepSummary,
    collect,
    run_point,
    run_sweep,
    sweep_status,
)
from tms_slt.sweep.spec import (
    Sweep,
    SweepOptions,
    SweepPoint,
    axis_values,
    load_sweep,
    point_id,
    sweep_from_dict,
)

__all__ = [
    "Sweep",
    "SweepOptions",
    "SweepPoint",
    "SweepStatus",
    "SweepSummary",
    "axis_values",
    "collect",
    "dask_client",
    "load_sweep",
    "point_id",
    "run_point",
    "run_sweep",
    "sweep_from_dict",
    "sweep_status",
]
