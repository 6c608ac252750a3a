from __future__ import annotations

import json

import pytest

from tms_slt.cli import main
from tms_slt.config import config_to_toml
from tms_slt.io import read_dataset


@pytest.fixture
def tiny_toml(tmp_path, tiny_config):
    path = tmp_path / "tiny.toml"
    path.write_text(config_to_toml(tiny_config))
    return path


def test_quickstart_writes_a_run_directory(tmp_path, tiny_toml, capsys):
    out = tmp_path / "run"
    assert main(["quickstart", "--config", str(tiny_toml), "--out", str(out), "--quiet"]) == 0
    for name in ("results.nc", "meta.json", "config.toml", "quickstart.png"):
        assert (out / name).stat().st_size > 0
    ds = read_dataset(out / "results.nc")
    for var in ("loss", "llc_mean", "llc_std", "feature_count", "gram_eigenvalues", "kgon"):
        assert var in ds
    assert ds["llc_mean"].dims == ("checkpoint", "instance")
    meta = json.loads((out / "meta.json").read_text())
    assert meta["seed"] == 3 and meta["torch_version"]
    printed = capsys.readouterr().out
    assert "k-gon" in printed and str(out / "results.nc") in printed


def test_train_then_llc_reproduces_quickstart(tmp_path, tiny_toml):
    """`train` + `llc RUN_DIR` is the quickstart split in two: same seed, same numbers."""
    whole, split = tmp_path / "whole", tmp_path / "split"
    assert main(["quickstart", "--config", str(tiny_toml), "--out", str(whole), "--quiet"]) == 0
    assert main(["train", "--config", str(tiny_toml), "--out", str(split), "--quiet"]) == 0
    assert "llc_mean" not in read_dataset(split / "results.nc")
    trained = (split / "results.nc").read_bytes()
    assert main(["llc", str(split), "--quiet", "--out", str(tmp_path / "llc")]) == 0
    assert (split / "results.nc").read_bytes() == trained  # the trained run is untouched
    a, b = read_dataset(whole / "results.nc"), read_dataset(tmp_path / "llc" / "results.nc")
    assert (a["loss"] == b["loss"]).all()
    assert a["llc_mean"].shape == b["llc_mean"].shape
    assert json.loads((tmp_path / "llc" / "meta.json").read_text())["source"] == str(split)


def test_bad_config_is_one_line_and_exit_2(tmp_path, capsys):
    path = tmp_path / "bad.toml"
    path.write_text("[data]\nsparsity = 1.5\n")
    assert main(["quickstart", "--config", str(path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert "data.sparsity" in err and "[0, 1]" in err and "\n" not in err
    assert not (tmp_path / "o").exists()


def test_unknown_key_is_rejected(tmp_path, capsys):
    path = tmp_path / "bad.toml"
    path.write_text("[train]\nsteps = 10\n")
    assert main(["train", "--config", str(path), "--out", str(tmp_path / "o")]) == 2
    assert "train.steps" in capsys.readouterr().err


def test_quickstart_instance_out_of_range(tmp_path, tiny_toml, capsys):
    out = tmp_path / "o"
    assert (
        main(
            [
                "quickstart",
                "--config",
                str(tiny_toml),
                "--out",
                str(out),
                "--quiet",
                "--instance",
                "5",
            ]
        )
        == 2
    )
    assert "--instance must be in [0, 2)" in capsys.readouterr().err
    assert not out.exists()  # stopped before any work


def test_llc_on_a_non_run_directory(tmp_path, capsys):
    assert main(["llc", str(tmp_path)]) == 2
    assert "not a run directory" in capsys.readouterr().err


@pytest.fixture
def trained_run(tmp_path, tiny_toml):
    out = tmp_path / "trained"
    assert main(["quickstart", "--config", str(tiny_toml), "--out", str(out), "--quiet"]) == 0
    return out


def test_detect_writes_transitions(trained_run, tmp_path, capsys):
    capsys.readouterr()
    out = tmp_path / "det"
    assert main(["detect", str(trained_run), "--out", str(out)]) == 0
    records = json.loads((out / "transitions.json").read_text())["transitions"]
    assert (out / "transitions.png").stat().st_size > 0
    assert main(["detect", str(trained_run), "--out", str(out)]) == 1  # never overwritten
    printed = capsys.readouterr().out
    assert ("interval" in printed) == bool(records)
    assert main(["detect", str(trained_run), "--min-confidence", "2"]) == 2


def test_calibrate_shows_the_automatic_choice_in_a_grid(trained_run, tmp_path, capsys):
    grid = ["1e-4", "1e-3"]
    out = tmp_path / "cal"
    argv = ["calibrate", str(trained_run), "--quiet", "--step-sizes", *grid, "--out", str(out)]
    assert main(argv) == 0
    report = read_dataset(out / "results.nc")
    assert sorted(report["step_size"].values.tolist()) == [1e-4, 1e-3]
    assert "auto_step_size" in report and (out / "calibrate.png").exists()
    printed = capsys.readouterr().out
    assert "automatic settings" in printed and "reliable" in printed
    assert main(["calibrate", str(trained_run), "--checkpoint", "99"]) == 2


def test_sweep_run_status_collect(tmp_path, tiny_config, capsys):
    spec = tmp_path / "sweep.toml"
    spec.write_text(
        config_to_toml(tiny_config)
        + '\n[sweep]\nllc = false\ncheckpoints = "final"\n"data.active_features" = [1, 2]\n'
    )
    out = tmp_path / "sweep"
    assert main(["sweep", str(spec), "--out", str(out), "--quiet"]) == 0
    assert main(["sweep", "status", str(out)]) == 0
    assert "2/2 done" in capsys.readouterr().out
    assert main(["sweep", "collect", str(out)]) == 0
    collected = read_dataset(out / "results.nc")
    assert collected.sizes["data.active_features"] == 2
    bad = tmp_path / "bad.toml"
    bad.write_text(config_to_toml(tiny_config) + '\n[sweep]\n"data.nope" = [1]\n')
    assert main(["sweep", str(bad), "--out", str(tmp_path / "never")]) == 2
    assert not (tmp_path / "never").exists()


def test_train_follows_a_schedule_table_and_detect_labels_drivers(tmp_path, capsys):
    from tms_slt.config import (
        DataConfig,
        ExperimentConfig,
        ModelConfig,
        RampConfig,
        TrainConfig,
    )

    config = ExperimentConfig(
        data=DataConfig(n_features=5, sparsity=0.6, active_features=None, n_train=0),
        model=ModelConfig(n_hidden=2),
        train=TrainConfig(
            optimizer="adam",
            lr=0.01,
            num_steps=400,
            num_instances=2,
            num_checkpoints=30,
            batch_size=64,
        ),
        schedule=(RampConfig("sparsity", 0.6, 0.97, begin=100, finish=300, shape="cyclic"),),
    )
    path = tmp_path / "moving.toml"
    path.write_text(config_to_toml(config))
    run = tmp_path / "run"
    assert main(["train", "--config", str(path), "--out", str(run), "--quiet"]) == 0
    assert "[[schedule]]" in (run / "config.toml").read_text()  # kept with the run
    windows = read_dataset(run / "results.nc").attrs["schedule_change_points"]
    assert json.loads(windows) == [100, 300]
    assert main(["detect", str(run), "--out", str(tmp_path / "det")]) == 0
    records = json.loads((tmp_path / "det" / "transitions.json").read_text())["transitions"]
    for r in records:  # the detector read the ramp's window [100, 300] from results.nc
        lo, hi = r["interval"]
        if hi < 100:
            assert r["driver"] == "learning"
        if 100 <= lo and hi <= 300:
            assert r["driver"] == "schedule"
    assert any(r["driver"] == "schedule" for r in records)
