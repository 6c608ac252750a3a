"""Sweeps: grid expansion, validation, resumable in-process and process-pool runs, collect."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import xarray as xr

from tms_slt.config import ConfigError, config_from_dict
from tms_slt.sweep import (
    Sweep,
    SweepOptions,
    axis_values,
    collect,
    load_sweep,
    run_point,
    run_sweep,
    sweep_from_dict,
    sweep_status,
)

REPO = Path(__file__).resolve().parents[2]

TINY = {
    "seed": 0,
    "data": {"n_features": 5, "n_train": 64, "sparsity": 0.5},
    "model": {"n_hidden": 2},
    "train": {
        "num_steps": 30,
        "batch_size": 32,
        "num_checkpoints": 3,
        "num_instances": 2,
        "optimizer": "adam",
        "lr": 0.01,
    },
    "llc": {"num_chains": 2, "num_draws": 10, "num_burnin": 2, "batch_size": 32},
}


def tiny_sweep(axes=None, **options) -> Sweep:
    if axes is None:
        axes = {"data.sparsity": [0.9, 0.0], "seed": [0, 1]}
    return Sweep(config_from_dict(TINY), axes, SweepOptions(**options))


def no_temp_files(out: Path) -> bool:
    return not list(out.rglob("*.tmp"))


# ---------------------------------------------------------------- grid and validation


def test_axis_specs_expand_to_values():
    assert axis_values("a", [0.0, 0.5]) == (0.0, 0.5)
    assert axis_values("a", {"start": 0.5, "stop": 1.0, "num": 3}) == (0.5, 0.75, 1.0)
    assert axis_values("a", {"start": 0, "stop": 4, "num": 3}) == (0, 2, 4)
    logs = axis_values("a", {"start": 1e-3, "stop": 1e-1, "num": 3, "log": True})
    assert logs == pytest.approx((1e-3, 1e-2, 1e-1), rel=1e-12)
    assert axis_values("a", {"start": 10, "stop": 1000, "num": 3, "log": True}) == (10, 100, 1000)
    assert axis_values("a", [[0.1, 0.2], [0.3, 0.4]]) == ((0.1, 0.2), (0.3, 0.4))
    n = axis_values("a", {"start": 100, "stop": 10000, "num": 5, "log": True}, integer=True)
    assert n == (100, 316, 1000, 3162, 10000)


@pytest.mark.parametrize(
    ("axes", "match"),
    [
        ({"data.sparsty": [0.1]}, "not a config field.*data.sparsity"),
        ({"data": [0.1]}, "not a config field"),
        ({"nonsense": [1]}, "not a config field"),
        ({"seed": []}, "empty"),
        ({"seed": {"start": 0, "stop": 3, "num": 0}}, "empty"),
        ({"seed": {"start": 0, "stop": 3}}, "start, stop, num"),
        ({"seed": {"start": 0, "stop": 3, "num": 2, "step": 1}}, "start, stop, num"),
        ({"train.lr": {"start": 0, "stop": 1, "num": 3, "log": True}}, "log range"),
        ({"seed": 3}, "must be a list or a table"),
        ({"seed": [1, 1]}, "repeated"),
        ({"data.sparsity": [0.5, 1.5]}, "1.5"),
        ({}, "at least one axis"),
    ],
)
def test_bad_axes_raise_config_error(axes, match):
    with pytest.raises(ConfigError, match=match):
        tiny_sweep(axes)


def test_bad_options_raise():
    with pytest.raises(ConfigError, match="checkpoints"):
        SweepOptions(checkpoints="some")
    with pytest.raises(ConfigError, match="n_train"):
        tiny_sweep({"data.n_train": [0, 64]}, llc=True)
    tiny_sweep({"data.n_train": [0, 64]}, llc=False)  # online training is fine without LLC


def test_bad_input_does_no_work(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(ConfigError):
        run_sweep(tiny_sweep({"data.sparsity": [0.5, 2.0]}), out, progress=False)
    with pytest.raises(ValueError, match="executor"):
        run_sweep(tiny_sweep(), out, executor="threads", progress=False)
    assert not out.exists()


def test_points_are_a_cartesian_grid_with_stable_distinct_ids():
    sweep = tiny_sweep({"data.sparsity": [0.9, 0.0, 0.5], "seed": [0, 1]})
    points = sweep.points()
    assert sweep.shape == (3, 2)
    assert [p.index for p in points] == [(i, j) for i in range(3) for j in range(2)]
    assert points[3].overrides == {"data.sparsity": 0.0, "seed": 1}
    assert points[3].config.data.sparsity == 0.0 and points[3].config.seed == 1
    ids = [p.id for p in points]
    assert len(set(ids)) == 6
    assert ids == [
        p.id for p in tiny_sweep({"data.sparsity": [0.9, 0.0, 0.5], "seed": [0, 1]}).points()
    ]
    other = tiny_sweep({"data.sparsity": [0.9, 0.0, 0.5], "seed": [0, 1]}, checkpoints="final")
    assert not set(ids) & {p.id for p in other.points()}


def test_load_sweep_reads_quoted_and_dotted_keys(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text(
        textwrap.dedent(
            """
            seed = 3
            [data]
            n_features = 5
            n_train = 200
            sparsity = 0.5
            [model]
            n_hidden = 2
            [sweep]
            llc = false
            checkpoints = "final"
            "data.importance_decay" = {start = 0.5, stop = 1.0, num = 3}
            train.lr = {start = 1e-3, stop = 1e-1, num = 3, log = true}
            seed = [0, 1]
            """
        )
    )
    sweep = load_sweep(path)
    assert list(sweep.axes) == ["data.importance_decay", "train.lr", "seed"]
    assert sweep.options == SweepOptions(llc=False, checkpoints="final")
    assert sweep.base.seed == 3 and len(sweep.points()) == 18
    import tomllib

    again = sweep_from_dict(tomllib.loads(sweep.to_toml()))
    assert again == sweep and again.to_toml() == sweep.to_toml()


def test_load_sweep_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_sweep(tmp_path / "missing.toml")
    path = tmp_path / "s.toml"
    path.write_text("seed = 0\n")
    with pytest.raises(ConfigError, match=r"\[sweep\]"):
        load_sweep(path)
    path.write_text("[sweep]\nseed = [0]\n[bogus]\nx = 1\n")
    with pytest.raises(ConfigError, match="bogus"):
        load_sweep(path)


def test_example_sweeps_load():
    examples = sorted((REPO / "experiments" / "sweeps").glob("*.toml"))
    assert examples
    for path in examples:
        assert load_sweep(path).points()


# ---------------------------------------------------------------- running


def test_run_point_is_deterministic_in_its_seed():
    config = tiny_sweep().points()[0].config
    a, b = run_point(config, SweepOptions()), run_point(config, SweepOptions())
    xr.testing.assert_identical(a, b)
    c = run_point(config.__class__(**{**config.__dict__, "seed": 7}), SweepOptions())
    assert not a["W"].equals(c["W"])
    final = run_point(config, SweepOptions(llc=False, checkpoints="final"))
    assert "checkpoint" not in final.dims and int(final["final_step"]) == 30
    assert "llc_mean" not in final and "llc_mean" in a


def test_run_collect_and_resume(tmp_path):
    sweep = tiny_sweep({"data.sparsity": [0.9, 0.0, 0.5], "seed": [0, 1]}, checkpoints="final")
    out = tmp_path / "out"
    first = run_sweep(sweep, out, progress=False)
    assert (first.computed, first.skipped, first.failed) == (6, 0, {})
    ds = collect(out)
    assert ds.sizes["data.sparsity"] == 3 and ds.sizes["seed"] == 2
    assert list(ds["data.sparsity"].values) == [0.9, 0.0, 0.5]
    assert ds["llc_mean"].dims == ("data.sparsity", "seed", "instance")
    p = sweep.points()[3]
    assert str(ds["point_id"].sel({"data.sparsity": 0.0, "seed": 1}).values) == p.id
    single = run_point(p.config, sweep.options)
    xr.testing.assert_allclose(
        ds["W"].sel({"data.sparsity": 0.0, "seed": 1}, drop=True), single["W"], rtol=0, atol=0
    )

    again = run_sweep(sweep, out, progress=False)
    assert (again.computed, again.skipped) == (0, 6)

    # Corrupt one point, delete another, leave a stale temp file: only those two rerun.
    points_dir = out / "points"
    (points_dir / f"{sweep.points()[0].id}.nc").write_bytes(b"not netcdf")
    (points_dir / f"{sweep.points()[1].id}.nc").unlink()
    (points_dir / f".{sweep.points()[1].id}.nc.abc.tmp").write_bytes(b"partial")
    assert len(sweep_status(out).pending) == 2
    resumed = run_sweep(sweep, out, progress=False)
    assert (resumed.computed, resumed.skipped) == (2, 4)
    xr.testing.assert_identical(collect(out), ds)
    assert no_temp_files(out)
    assert sweep_status(out).complete


def test_failing_point_is_recorded_and_others_finish(tmp_path):
    base = {**TINY, "train": {**TINY["train"], "optimizer": "sgd"}}
    sweep = Sweep(config_from_dict(base), {"train.lr": [0.01, 1e30]}, SweepOptions(llc=False))
    out = tmp_path / "out"
    summary = run_sweep(sweep, out, progress=False)
    bad = sweep.points()[1].id
    assert summary.computed == 1 and list(summary.failed) == [bad]
    assert "TrainingDivergedError" in summary.failed[bad]
    status = sweep_status(out)
    assert status.done == (sweep.points()[0].id,) and status.failed == summary.failed
    assert not status.complete
    with pytest.raises(ValueError, match="1 of 2 points"):
        collect(out)


def test_other_sweep_in_same_dir_is_refused(tmp_path):
    run_sweep(tiny_sweep({"seed": [0]}, llc=False), tmp_path, progress=False)
    with pytest.raises(ValueError, match="different sweep"):
        run_sweep(tiny_sweep({"seed": [0, 1]}, llc=False), tmp_path, progress=False)
    with pytest.raises(ValueError, match="not a sweep directory"):
        sweep_status(tmp_path / "points")


def test_process_pool_matches_in_process(tmp_path):
    sweep = tiny_sweep()
    run_sweep(sweep, tmp_path / "inline", progress=False)
    summary = run_sweep(sweep, tmp_path / "pool", executor="process", max_workers=2, progress=False)
    assert summary.ok and summary.computed == 4
    xr.testing.assert_identical(collect(tmp_path / "inline"), collect(tmp_path / "pool"))


def test_importing_sweep_does_not_import_dask():
    code = (
        "import sys, tms_slt, tms_slt.sweep; "
        "print('distributed' in sys.modules or 'dask' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.slow
def test_sigkill_mid_sweep_then_resume_equals_uninterrupted(tmp_path):
    # Slower points, so that the kill lands with some points done and some not.
    base = {**TINY, "train": {**TINY["train"], "num_steps": 150}}
    sweep = Sweep(config_from_dict(base), {"seed": list(range(8))}, SweepOptions())
    spec = tmp_path / "sweep.toml"
    spec.write_text(sweep.to_toml())
    out = tmp_path / "killed"
    code = (
        "from tms_slt.sweep import load_sweep, run_sweep; "
        f"run_sweep(load_sweep({str(spec)!r}), {str(out)!r}, progress=False)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code])
    deadline = time.monotonic() + 120
    while len(list((out / "points").glob("*.nc"))) < 2 and time.monotonic() < deadline:
        assert proc.poll() is None, "the sweep subprocess ended before it could be killed"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_at_kill = len(sweep_status(out).done)
    assert 2 <= done_at_kill < 8

    resumed = run_sweep(load_sweep(spec), out, progress=False)
    assert resumed.ok and resumed.skipped == done_at_kill
    assert resumed.computed == 8 - done_at_kill
    assert sorted(f.stem for f in (out / "points").iterdir()) == sorted(
        p.id for p in sweep.points()
    )
    assert no_temp_files(out) and not (out / ".lock").exists()
    run_sweep(sweep, tmp_path / "clean", progress=False)
    xr.testing.assert_identical(collect(out), collect(tmp_path / "clean"))
