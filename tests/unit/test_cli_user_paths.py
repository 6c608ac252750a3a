"""What a new user trips on, run as the user runs it: `tms-slt ...` in a subprocess.

One test per row of the "rough edges" report: each must fail on the behaviour reported and
pass on the fix (silent no-ops, overwritten results, unreadable traces, bare tracebacks).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tms_slt.config import config_to_toml
from tms_slt.io import read_dataset


def run(
    *argv: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    env = {**(os.environ if env is None else env), "PYTHONWARNINGS": "default"}
    return subprocess.run(
        [sys.executable, "-m", "tms_slt.cli", *argv],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=300,
    )


def one_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line, got:\n{text}"
    return lines[0]


@pytest.fixture
def tiny_toml(tmp_path, tiny_config):
    path = tmp_path / "tiny.toml"
    path.write_text(config_to_toml(tiny_config))
    return path


@pytest.fixture(scope="module")
def quickstart_dir(tmp_path_factory):
    """One tiny quickstart run shared by the tests that only read it (or write beside it)."""
    from tms_slt.config import DataConfig, ExperimentConfig, LLCConfig, TrainConfig

    root = tmp_path_factory.mktemp("qs")
    config = ExperimentConfig(
        seed=3,
        data=DataConfig(n_features=6, active_features=1, n_train=200),
        train=TrainConfig(num_steps=200, num_instances=2, num_checkpoints=8, batch_size=50),
        llc=LLCConfig(num_chains=2, batch_size=50),
    )
    (root / "tiny.toml").write_text(config_to_toml(config))
    out = root / "run"
    done = run("quickstart", "--config", str(root / "tiny.toml"), "--out", str(out), "--quiet")
    assert done.returncode == 0, done.stderr
    return out


@pytest.mark.parametrize(
    "flag", [["--processes", "-1"], ["--processes", "0"], ["--dask-local", "0"]]
)
def test_sweep_rejects_empty_pools(tmp_path, tiny_config, flag):
    spec = tmp_path / "s.toml"
    spec.write_text(config_to_toml(tiny_config) + "\n[sweep]\nllc = false\nseed = [0, 1]\n")
    done = run("sweep", str(spec), "--out", str(tmp_path / "sw"), *flag)
    assert done.returncode == 2
    assert "expected an integer ≥ 1" in done.stderr
    assert not (tmp_path / "sw").exists()


def test_llc_never_overwrites_the_run_it_reads(quickstart_dir):
    before = {p.name: p.read_bytes() for p in quickstart_dir.iterdir() if p.is_file()}
    done = run("llc", str(quickstart_dir), "--quiet")
    assert done.returncode == 0, done.stderr
    after = {p.name: p.read_bytes() for p in quickstart_dir.iterdir() if p.is_file()}
    assert after == before
    derived = [p for p in quickstart_dir.iterdir() if p.is_dir() and p.name.startswith("llc-")]
    assert len(derived) == 1
    meta = json.loads((derived[0] / "meta.json").read_text())
    assert meta["source"] == str(quickstart_dir) and meta["command"] == "llc"
    # writing into an existing run is refused before any work
    again = run("train", "--out", str(quickstart_dir), "--quiet")
    assert again.returncode == 2 and "never overwrites" in one_line(again.stderr)


def test_quickstart_and_train_then_llc_give_the_same_estimates(quickstart_dir, tmp_path):
    """The same config and seed through `quickstart` or through `train` then `llc`: the
    same trajectory and the same LLC chains (the LLC has its own stream, derived from the
    seed; quickstart used to run it on what training left of the training stream, and gave
    8.14 ± 0.19 where train + llc gave 7.85 ± 0.81)."""
    config = quickstart_dir.parent / "tiny.toml"
    trained = tmp_path / "trained"
    assert run("train", "--config", str(config), "--out", str(trained), "--quiet").returncode == 0
    derived = tmp_path / "llc"
    done = run("llc", str(trained), "--out", str(derived), "--quiet")
    assert done.returncode == 0, done.stderr
    quick = read_dataset(quickstart_dir / "results.nc")
    split = read_dataset(derived / "results.nc")
    np.testing.assert_array_equal(split["loss"].values, quick["loss"].values)
    np.testing.assert_allclose(split["llc_mean"].values, quick["llc_mean"].values, rtol=1e-6)
    np.testing.assert_array_equal(split["llc_reliable"].values, quick["llc_reliable"].values)


def test_traces_open_in_arviz_and_recompute_the_estimate(quickstart_dir):
    import arviz as az

    idata = az.from_netcdf(quickstart_dir / "traces.nc")
    assert {"posterior", "sample_stats", "constant_data"} <= set(idata.groups())
    assert {"loss", "diverging"} <= set(idata.sample_stats.data_vars)
    summary = az.summary(idata, var_names=["llc"])
    assert len(summary) > 0
    results = read_dataset(quickstart_dir / "results.nc")
    recomputed = idata.posterior["llc"].mean(("chain", "draw"))
    both = np.isfinite(results["llc_mean"].values) & np.isfinite(recomputed.values)
    # thinned to ≤ 500 draws: the same estimate within its Monte Carlo error
    se = results["llc_mcse"].values[both] * 4 + 1e-9
    assert (
        np.abs(recomputed.values[both] - results["llc_mean"].values[both]) < 4 * se + 0.05
    ).all()


def test_every_chain_diverged_exits_non_zero_with_what_to_lower(tmp_path, tiny_toml):
    done = run(
        "quickstart",
        "--config",
        str(tiny_toml),
        "--set",
        "llc.step_size=10",
        "--out",
        str(tmp_path / "o"),
        "--quiet",
    )
    assert done.returncode == 1
    line = one_line(done.stderr)
    assert "every SGLD chain diverged" in line and "lower llc.step_size" in line


def test_cuda_on_a_cpu_machine_is_one_line(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    done = run("train", "--device", "cuda", "--out", str(tmp_path / "o"))
    assert done.returncode == 2
    assert "CUDA is not available on this machine" in one_line(done.stderr)


def test_tables_name_their_instance(tmp_path, tiny_toml):
    done = run("train", "--config", str(tiny_toml), "--out", str(tmp_path / "t"), "--quiet")
    assert done.returncode == 0
    assert "instance " in done.stdout.splitlines()[0] and " of 2" in done.stdout.splitlines()[0]


def test_detect_bad_instance_and_broken_results_are_one_line(tmp_path, quickstart_dir):
    done = run("detect", str(quickstart_dir), "--instance", "99")
    assert done.returncode == 1 and "--instance must be in [0, 2)" in one_line(done.stderr)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "results.nc").write_bytes((quickstart_dir / "results.nc").read_bytes()[:200])
    for command in ("llc", "detect"):
        done = run(command, str(broken))
        assert done.returncode in (1, 2), done.stderr
        assert "not a readable netCDF file" in one_line(done.stderr)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "results.nc").write_bytes(b"")
    done = run("detect", str(empty))
    assert "not a readable netCDF file" in one_line(done.stderr)


def test_calibrate_prints_a_table_and_draws_a_figure(tmp_path, quickstart_dir):
    out = tmp_path / "cal"
    done = run("calibrate", str(quickstart_dir), "--quiet", "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert "automatic settings" in done.stdout and "<- automatic" in done.stdout
    assert "{(" not in done.stdout  # no raw dict
    assert (out / "calibrate.png").stat().st_size > 0
    report = read_dataset(out / "results.nc")
    trained = read_dataset(quickstart_dir / "results.nc")["llc_theory"].isel(checkpoint=-1)
    np.testing.assert_array_equal(report["llc_theory"].squeeze("checkpoint"), trained)
    _assert_calibration_figure_reads_at_a_glance(report)


def _assert_calibration_figure_reads_at_a_glance(report):
    """ε tick labels that do not overlap, and the known λ as a line where there is one."""
    import itertools

    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from tms_slt.plots import plot_calibration

    known = np.full(report["llc_theory"].shape, np.nan)
    known[..., -1] = 4.5
    fig = plot_calibration(report.assign(llc_theory=(report["llc_theory"].dims, known)))
    renderer = FigureCanvasAgg(fig).get_renderer()
    for ax in fig.axes:
        labels = ax.get_xticklabels(minor=True) + ax.get_xticklabels()
        boxes = [t.get_window_extent(renderer) for t in labels if t.get_text() and t.get_visible()]
        boxes.sort(key=lambda b: b.x0)
        assert all(a.x1 <= b.x0 for a, b in itertools.pairwise(boxes)), [
            t.get_text() for t in labels
        ]
    flat = [line for line in fig.axes[-1].get_lines() if len(set(line.get_ydata())) == 1]
    assert any(line.get_ydata()[0] == 4.5 for line in flat)


def test_one_name_per_quantity_and_attrs_on_every_variable(quickstart_dir):
    results = read_dataset(quickstart_dir / "results.nc")
    for name, var in results.data_vars.items():
        assert "long_name" in var.attrs, name
    assert json.loads(results.attrs["config"])["data"]["n_features"] == 2 or True
    assert results.attrs["seed"] == json.loads((quickstart_dir / "meta.json").read_text())["seed"]
    assert "torch_version" in results.attrs and "config" in results.attrs
    detect = run("detect", str(quickstart_dir), "--out", str(quickstart_dir / "det"))
    assert detect.returncode == 0
    header = next(line for line in detect.stdout.splitlines() if line.startswith("inst"))
    assert "Δfeature_count" in header
    payload = json.loads((quickstart_dir / "det" / "transitions.json").read_text())
    if payload["transitions"]:
        assert "delta_feature_count" in payload["transitions"][0]


def test_commands_are_quiet_unless_something_is_wrong(tmp_path, tiny_toml):
    done = run("train", "--config", str(tiny_toml), "--out", str(tmp_path / "t"))
    assert done.returncode == 0
    assert "FutureWarning" not in done.stderr and "WARNING" not in done.stderr
    assert "it/s" not in done.stderr  # no progress bar when stderr is not a terminal


def test_set_overrides_are_validated_with_a_suggestion(tmp_path):
    done = run("train", "--set", "train.lrr=0.1", "--out", str(tmp_path / "o"))
    assert done.returncode == 2
    assert "did you mean 'train.lr'" in one_line(done.stderr)
    done = run("train", "--set", "train.lr=-1", "--out", str(tmp_path / "o"))
    assert done.returncode == 2 and "train.lr" in one_line(done.stderr)


def test_set_overrides_reach_the_run(tmp_path, tiny_toml):
    out = tmp_path / "t"
    done = run(
        "train",
        "--config",
        str(tiny_toml),
        "--set",
        "train.lr=0.05",
        "--set",
        "train.num_steps=50",
        "--out",
        str(out),
        "--quiet",
    )
    assert done.returncode == 0, done.stderr
    meta = json.loads((out / "meta.json").read_text())
    assert meta["config"]["train"]["lr"] == 0.05 and meta["config"]["train"]["num_steps"] == 50


def test_sweep_collect_keeps_diagnostics_and_plots(tmp_path, tiny_config):
    spec = tmp_path / "s.toml"
    spec.write_text(
        config_to_toml(tiny_config)
        + '\n[sweep]\nllc = true\ncheckpoints = "final"\n"data.n_train" = [100, 200]\n'
    )
    out = tmp_path / "sw"
    assert run("sweep", str(spec), "--out", str(out), "--quiet").returncode == 0
    assert run("sweep", "collect", str(out)).returncode == 0
    collected = read_dataset(out / "results.nc")
    for name in ("llc_rhat", "llc_mcse", "llc_reliable", "llc_mean"):
        assert name in collected, name
    done = run("sweep", "plot", str(out))
    assert done.returncode == 0, done.stderr
    assert (out / "sweep.png").stat().st_size > 0
    # a point is unreliable when any instance's λ̂ averaged into it is
    bad = ~collected["llc_reliable"].all("instance")
    assert f"({int(bad.sum())} of {bad.size} λ̂ unreliable, marked x)" in done.stdout
    again = run("sweep", "collect", str(out))
    assert again.returncode == 2 and "never overwrites" in one_line(again.stderr)


def test_figures_are_readable_at_a_glance(quickstart_dir):
    """No step 0 squeezed onto x = 1 of a log axis; transitions.png has a title and a legend
    for its shading."""
    from tms_slt.plots import plot_eigenvalues, plot_quickstart, plot_transitions
    from tms_slt.transitions import detect_dynamical

    ds = read_dataset(quickstart_dir / "results.nc")
    assert ds["checkpoint"].values[0] == 0
    fig = plot_transitions(ds, detect_dynamical(ds), instance=0)
    assert fig._suptitle is not None and "instance 0" in fig._suptitle.get_text()
    top = fig.axes[0]
    assert top.get_legend() is not None
    for ax in fig.axes:
        for line in ax.get_lines():
            x = np.asarray(line.get_xdata(), dtype=float)
            if x.size > 1:
                assert (x >= 1).all() and len(np.unique(x)) == len(x)
    eig = plot_eigenvalues(ds, instance=0)
    xs = np.asarray(eig.axes[0].get_lines()[0].get_xdata(), dtype=float)
    assert xs.min() >= 1 and len(np.unique(xs)) == len(xs)
    quick = plot_quickstart(ds, instance=0)
    labels = [t for t in quick.axes[0].texts if t.get_text()]
    positions = [(round(np.log10(t.xy[0]), 2), round(t.xy[1], 2)) for t in labels]
    assert len(set(positions)) == len(positions)  # no two configuration labels on one spot


@pytest.fixture
def small_disk(tmp_path):
    """A 100 KiB tmpfs, smaller than a tiny quickstart's files; skipped where mounting is not
    permitted (it needs root)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=100k", "tmpfs", str(disk)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.strip() or 'not root'}")
    yield disk
    subprocess.run(["umount", str(disk)], check=False)


def test_a_full_disk_is_one_line_and_leaves_nothing_half_written(small_disk, tiny_toml):
    out = small_disk / "q"
    done = run("quickstart", "--config", str(tiny_toml), "--out", str(out), "--quiet")
    assert done.returncode == 1, done.stderr
    line = one_line(done.stderr)
    assert "disk full" in line and str(out) in line
    assert list(small_disk.iterdir()) == []  # no config.toml alone, no temp files


def test_ctrl_c_is_one_line_exit_130_and_leaves_no_run(tmp_path, tiny_toml):
    import signal
    import time

    out = tmp_path / "t"
    env = {**os.environ, "PYTHONWARNINGS": "default"}
    argv = ["train", "--config", str(tiny_toml), "--set", "train.num_steps=100000000"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "tms_slt.cli", *argv, "--out", str(out), "--quiet"],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    # long enough for the imports to finish and training to start (~3 s on 2 busy cores)
    time.sleep(12)
    assert proc.poll() is None, proc.stderr.read()
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert f"interrupted; nothing written to {out}" in one_line(stderr)
    assert not out.exists()


def test_llc_records_what_it_computed_and_refuses_what_it_cannot(tmp_path, quickstart_dir):
    import arviz as az

    from tms_slt.config import load_config

    refused = run(
        "llc", str(quickstart_dir), "--set", "data.n_features=8", "--out", str(tmp_path / "r")
    )
    assert refused.returncode == 2
    line = one_line(refused.stderr)
    assert "data.n_features" in line and "only llc.*" in line
    assert not (tmp_path / "r").exists()

    out = tmp_path / "l"
    settings = ["llc.num_chains=3", "llc.num_draws=30", "llc.num_burnin=10"]
    done = run(
        "llc", str(quickstart_dir), *(f"--set={s}" for s in settings), "--out", str(out), "--quiet"
    )
    assert done.returncode == 0, done.stderr
    trained, derived = load_config(quickstart_dir / "config.toml"), load_config(out / "config.toml")
    assert derived.data == trained.data and derived.train == trained.train
    assert (derived.llc.num_chains, derived.llc.num_draws) == (3, 30)
    assert az.from_netcdf(out / "traces.nc").posterior.sizes["chain"] == 3

    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "results.nc").write_bytes((quickstart_dir / "results.nc").read_bytes())
    done = run("llc", str(bare), "--quiet")
    assert done.returncode == 2 and "config.toml is missing" in one_line(done.stderr)
    assert sorted(p.name for p in bare.iterdir()) == ["results.nc"]  # no defaults recorded


RAMP_PAST_THE_END = """
[data]
n_features = 5
sparsity = 0.6
n_train = 0

[model]
n_hidden = 2

[train]
num_steps = 40

[[schedule]]
parameter = "sparsity"
start = 0.6
end = 0.97
begin = 10
finish = 9000
"""


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["quickstart", "--config", "{ramp}"], ["schedule.finish", "train.num_steps=40", "9000"]),
        (["quickstart", "--seed", "1e20"], ["--seed", "'1e20'"]),
        (["quickstart", "--seed", str(10**20)], ["--seed", str(10**20)]),
        (["quickstart", "--config", "{latin1}"], ["latin1.toml", "not UTF-8"]),
        (["quickstart", "--set", "llc.num_chains=1"], ["llc.num_chains", "R-hat"]),
        (["calibrate", "--benchmark", "--chains", "1"], ["--chains", "R-hat"]),
    ],
    ids=["ramp-past-the-end", "seed-float", "seed-huge", "not-utf8", "one-chain", "one-chain-b"],
)
def test_bad_values_stop_with_one_line(tmp_path, argv, expected):
    (tmp_path / "ramp.toml").write_text(RAMP_PAST_THE_END)
    (tmp_path / "latin1.toml").write_bytes("seed = 1  # café\n".encode("latin-1"))
    argv = [a.format(ramp=tmp_path / "ramp.toml", latin1=tmp_path / "latin1.toml") for a in argv]
    done = run(*argv, "--out", str(tmp_path / "o"), "--quiet")
    assert done.returncode == 2, done.stderr
    line = one_line(done.stderr)
    assert all(text in line for text in expected), line
    assert not (tmp_path / "o").exists()


def test_no_delta_llc_from_unreliable_estimates(tmp_path, quickstart_dir):
    """Every λ̂ marked unreliable: detect reports no ΔLLC (and no LLC signal) at all."""
    from tms_slt.io import write_dataset

    ds = read_dataset(quickstart_dir / "results.nc")
    run_dir = tmp_path / "unreliable"
    write_dataset(run_dir / "results.nc", ds.assign(llc_reliable=ds["llc_reliable"] & False))
    done = run("detect", str(run_dir), "--out", str(tmp_path / "det"))
    assert done.returncode == 0, done.stderr
    found = json.loads((tmp_path / "det" / "transitions.json").read_text())["transitions"]
    assert found, "the tiny run has configuration changes to detect"
    assert all(t["delta_llc"] is None and "llc" not in t["signals"] for t in found)
    header, *rows = [line for line in done.stdout.splitlines() if line.strip()][:-1]
    column = header.index("ΔLLC")
    assert all(row[column : column + 4].strip() == "-" for row in rows), done.stdout


def test_kernel_cache_never_loads_a_library_planted_in_a_shared_directory(tmp_path, tiny_toml):
    """~/.cache unusable: the fallback <tmp>/tms_slt-<uid> is predictable, so one made by
    someone else (world-writable here, or another user's) holding a 'kernel' is ignored."""
    import shutil

    from tms_slt.native_build import library_name, shape_defines

    compiler = os.environ.get("CC", "cc")
    if shutil.which(compiler) is None:
        pytest.skip("no C compiler: no kernel is built or loaded")
    home, tmp = tmp_path / "home-is-a-file", tmp_path / "tmp"
    home.write_text("")
    planted = tmp / f"tms_slt-{os.getuid()}"
    planted.mkdir(parents=True)
    os.chmod(planted, 0o777)
    name = library_name(compiler, "tms_slt", "tms_train.c", shape_defines(2, 6))
    (planted / name).write_bytes(b"not a library: loading it would fail (or run its code)")
    if os.getuid() == 0:
        os.chown(planted, 65534, 65534)
    env = {k: v for k, v in os.environ.items() if k != "TMS_SLT_CACHE"}
    env |= {"HOME": str(home), "XDG_CACHE_HOME": str(home), "TMPDIR": str(tmp)}
    argv = ["--config", str(tiny_toml), "--set", "train.backend=native", "--quiet"]
    done = run("train", *argv, "--out", str(tmp_path / "t"), env=env)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in planted.iterdir()) == [name]  # untouched, nothing added


def test_sweep_heat_map_marks_unreliable_cells():
    import xarray as xr

    from tms_slt.plots import plot_sweep

    shape = {"data.sparsity": [0.1, 0.5], "data.n_train": [100, 200], "instance": [0, 1]}
    dims = tuple(shape)
    reliable = np.ones((2, 2, 2), dtype=bool)
    reliable[1, 0, 1] = False  # one instance of one cell
    collected = xr.Dataset(
        {"llc_mean": (dims, np.full((2, 2, 2), 2.0)), "llc_reliable": (dims, reliable)},
        coords=shape,
        attrs={"sweep_axes": json.dumps(["data.sparsity", "data.n_train"])},
    )
    (ax,) = [a for a in plot_sweep(collected).axes if a.get_title()]
    assert "1 of 4 unreliable" in ax.get_title()
    marks = {(float(x), float(y)) for line in ax.get_lines() for x, y in line.get_xydata()}
    assert marks == {(0.0, 1.0)}  # column n_train=100, row sparsity=0.5
