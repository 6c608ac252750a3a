"""Sweep throughput: points per second in-process, on a process pool and on a Dask LocalCluster.

The same small sweep (seeds × sparsities, train + LLC per point) runs into a fresh
directory each repeat; the table gives medians over repeats. Pools and clusters are
started and warmed once before timing ("warm"); in-process runs use `--threads`
torch threads (default 1, like every worker); "process (cold)" starts its pool
inside every run_sweep call, as `tms-slt sweep --processes N` does.

    .venv/bin/python benchmarks/sweep_throughput.py --points 12 --workers 2 --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

import torch

from tms_slt.config import config_from_dict
from tms_slt.sweep import Sweep, SweepOptions, run_sweep
from tms_slt.sweep.executors import _LazyProcessPool


def make_sweep(num_points: int, num_steps: int, offset: int = 0) -> Sweep:
    """`num_points` points: seeds (offset..) × two sparsities, tiny TMS, train + LLC."""
    base = config_from_dict(
        {
            "data": {"n_features": 5, "n_train": 256, "sparsity": 0.5},
            "model": {"n_hidden": 2},
            "train": {"num_steps": num_steps, "batch_size": 64, "num_checkpoints": 5},
            "llc": {"num_chains": 4, "num_draws": 100, "num_burnin": 20, "batch_size": 64},
        }
    )
    seeds = list(range(offset, offset + max(1, num_points // 2)))
    axes = {"data.sparsity": [0.5, 0.9], "seed": seeds}
    return Sweep(base, axes, SweepOptions(llc=True, checkpoints="all"))


def time_sweep(sweep: Sweep, executor: Any, max_workers: int | None) -> float:
    """Seconds for one complete run into a fresh directory."""
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        summary = run_sweep(sweep, out, executor=executor, max_workers=max_workers, progress=False)
        elapsed = time.perf_counter() - start
    if not summary.ok or summary.computed != len(sweep.points()):
        raise RuntimeError(f"benchmark sweep failed: {summary.failed}")
    return elapsed


def measure(
    name: str, run: Callable[[Sweep], float], args: argparse.Namespace
) -> tuple[str, float, float]:
    """(mode, median seconds, median points/s) over `args.repeats` runs after one warm-up."""
    run(make_sweep(args.workers * 2, args.steps, offset=10_000))  # warm-up: imports, JIT
    times = []
    for r in range(args.repeats):
        sweep = make_sweep(args.points, args.steps, offset=1000 * (r + 1))
        times.append(run(sweep))
    n = len(make_sweep(args.points, args.steps).points())
    med = statistics.median(times)
    print(f"  {name}: {[round(t, 2) for t in times]} s", flush=True)
    return name, med, n / med


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=12)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=200, help="training steps per point")
    parser.add_argument("--no-dask", action="store_true")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads in this process (workers use 1)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)  # a script may set this; the library never does

    rows = [measure("in-process", lambda s: time_sweep(s, None, None), args)]
    rows.append(measure("process (cold)", lambda s: time_sweep(s, "process", args.workers), args))
    pool = _LazyProcessPool(args.workers)  # what executor="process" uses, kept across runs
    try:
        rows.append(measure("process (warm)", lambda s: time_sweep(s, pool, None), args))
    finally:
        pool.shutdown()
    if not args.no_dask:
        from tms_slt.sweep import dask_client

        with dask_client(local_workers=args.workers) as client:
            rows.append(measure("dask LocalCluster", lambda s: time_sweep(s, client, None), args))

    n = len(make_sweep(args.points, args.steps).points())
    print(f"\n{n} points, {args.steps} train steps + 100 SGLD draws × 4 chains each, "
          f"{args.workers} workers, median of {args.repeats}")  # fmt: skip
    print(f"{'mode':<20}{'median s':>10}{'points/s':>10}")
    for name, med, rate in rows:
        print(f"{name:<20}{med:>10.2f}{rate:>10.2f}")


if __name__ == "__main__":
    main()
