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
    assert main(["llc", str(split), "--quiet"]) == 0
    a, b = read_dataset(whole / "results.nc"), read_dataset(split / "results.nc")
    assert (a["loss"] == b["loss"]).all()
    assert a["llc_mean"].shape == b["llc_mean"].shape


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


def test_llc_on_a_non_run_directory(tmp_path, capsys):
    assert main(["llc", str(tmp_path)]) == 2
    assert "not a run directory" in capsys.readouterr().err
