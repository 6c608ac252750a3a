"""Executors for sweeps: in-process, local process pool, Dask, or anything with submit().

Dask (`distributed`) is imported only inside `dask_client`.
"""

from __future__ import annotations

import concurrent.futures as cf
import os
import time
from collections.abc import Mapping
from typing import Any

import torch

#: Imported once by the process pool's fork server, so workers start warm.
PRELOAD = ("tms_slt.sweep", "tms_slt.transitions", "tms_slt.sampling.diagnostics")


class _InlineExecutor(cf.Executor):
    """Runs each submitted call at once in this process."""

    def submit(self, fn, /, *args, **kwargs) -> cf.Future:
        future: cf.Future = cf.Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except Exception as err:
            future.set_exception(err)
        return future


class _LazyProcessPool(cf.Executor):
    """A process pool started on the first submit (a resumed, finished sweep starts none).

    Workers come from a fork server that has imported `PRELOAD` once, so they
    start warm and never inherit a parent's OpenMP state.
    """

    def __init__(self, max_workers: int) -> None:
        self.max_workers = max_workers
        self._pool: cf.ProcessPoolExecutor | None = None

    def submit(self, fn, /, *args, **kwargs) -> cf.Future:
        if self._pool is None:
            import multiprocessing

            ctx = multiprocessing.get_context("forkserver")
            ctx.set_forkserver_preload(list(PRELOAD))
            self._pool = cf.ProcessPoolExecutor(
                self.max_workers, mp_context=ctx, initializer=_init_process_worker
            )
        return self._pool.submit(fn, *args, **kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=wait, cancel_futures=cancel_futures)


def _init_process_worker() -> None:
    """One intra-op thread per worker process: the pool supplies the parallelism."""
    torch.set_num_threads(1)


def is_dask_client(obj: Any) -> bool:
    """True for a `distributed.Client` (checked without importing Dask)."""
    return type(obj).__module__.startswith("distributed") and hasattr(obj, "get_executor")


def resolve_executor(
    executor: Any, max_workers: int | None, num_points: int
) -> tuple[Any, int, bool]:
    """(executor, max in flight, owned?) for the `executor` argument of run_sweep."""
    if executor is None or executor == "inline":
        return _InlineExecutor(), 1, False
    if executor == "process":
        workers = max_workers or os.cpu_count() or 1
        return _LazyProcessPool(workers), 2 * workers, True
    if is_dask_client(executor):
        return executor.get_executor(pure=False), max_workers or num_points, False
    if isinstance(executor, str) or not callable(getattr(executor, "submit", None)):
        raise ValueError(
            "executor must be None, 'inline', 'process', a distributed.Client or an object "
            f"with submit(fn, *args), got {executor!r}"
        )
    return executor, max_workers or num_points, False


def wait_some(futures: Mapping[Any, Any]) -> list[Any]:
    """Futures that have finished, waiting for at least one."""
    if all(isinstance(f, cf.Future) for f in futures):
        done, _ = cf.wait(list(futures), return_when=cf.FIRST_COMPLETED)
        return list(done)
    while True:  # e.g. submitit jobs: poll
        done = [f for f in futures if f.done()]
        if done:
            return done
        time.sleep(0.5)


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
        import logging

        return Client(
            n_workers=local_workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=dashboard,
            # The cluster's own chatter ("Worker process still alive ...", ports) is not the
            # user's business unless something fails.
            silence_logs=logging.ERROR,
        )
    try:
        return Client(scheduler, timeout=timeout)
    except (OSError, TimeoutError, ValueError) as err:
        raise ValueError(f"no Dask scheduler answers at {scheduler!r}: {err}") from None
