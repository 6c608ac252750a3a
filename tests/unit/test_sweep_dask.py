"""Sweeps on a real dask.distributed LocalCluster: in-process numbers, survive a killed worker."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest
import xarray as xr

from tms_slt.config import config_from_dict
from tms_slt.sweep import Sweep, SweepOptions, collect, dask_client, run_sweep, sweep_status

distributed = pytest.importorskip("distributed")

from test_sweep import TINY, no_temp_files, tiny_sweep  # noqa: E402


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    )
    with distributed.Client(cluster) as c:
        yield c
    cluster.close()


def test_dask_sweep_equals_in_process(client, tmp_path):
    sweep = tiny_sweep()
    run_sweep(sweep, tmp_path / "inline", progress=False)
    summary = run_sweep(sweep, tmp_path / "dask", executor=client, progress=False)
    assert summary.ok and summary.computed == 4
    xr.testing.assert_identical(collect(tmp_path / "inline"), collect(tmp_path / "dask"))
    again = run_sweep(sweep, tmp_path / "dask", executor=client, progress=False)
    assert (again.computed, again.skipped) == (0, 4)


def test_bad_scheduler_address_is_one_clear_error():
    start = time.monotonic()
    with pytest.raises(ValueError, match=r"no Dask scheduler answers at 'tcp://127\.0\.0\.1:9'"):
        dask_client("tcp://127.0.0.1:9", timeout=1)
    assert time.monotonic() - start < 30
    with pytest.raises(ValueError, match="exactly one"):
        dask_client()
    with pytest.raises(ValueError, match="positive integer"):
        dask_client(local_workers=0)


@pytest.mark.slow
def test_killed_worker_is_rescheduled_and_nothing_is_lost(client, tmp_path):
    base = {**TINY, "train": {**TINY["train"], "num_steps": 150}}
    sweep = Sweep(config_from_dict(base), {"seed": list(range(10))}, SweepOptions())
    out = tmp_path / "dask"
    result = {}
    runner = threading.Thread(
        target=lambda: result.setdefault(
            "summary", run_sweep(sweep, out, executor=client, progress=False)
        )
    )
    pids = client.run(os.getpid)
    runner.start()
    deadline = time.monotonic() + 120
    while not list((out / "points").glob("*.nc")) and time.monotonic() < deadline:
        time.sleep(0.01)
    busy = [addr for addr, keys in client.processing().items() if keys]
    os.kill(pids[busy[0]], signal.SIGKILL)
    done_at_kill = len(list((out / "points").glob("*.nc")))
    runner.join(timeout=300)
    assert 1 <= done_at_kill < 10
    summary = result["summary"]
    assert summary.ok and summary.computed == 10
    assert sweep_status(out).complete and no_temp_files(out)
    assert sorted(f.stem for f in (out / "points").iterdir()) == sorted(
        p.id for p in sweep.points()
    )
    run_sweep(sweep, tmp_path / "inline", progress=False)
    xr.testing.assert_identical(collect(out), collect(tmp_path / "inline"))
