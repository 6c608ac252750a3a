from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from tms_slt.io import atomic_write, read_dataset, save_run, write_dataset


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "x.txt"
    target.write_text("old")

    def boom(path):
        path.write_text("partial")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        atomic_write(target, boom)
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.txt"]


def test_dataset_round_trip_with_strings(tmp_path):
    ds = xr.Dataset(
        {"a": (("c",), np.arange(3.0)), "label": (("c",), np.array(["5+", "4++", "6"]))},
        coords={"c": [0, 10, 100]},
    )
    write_dataset(tmp_path / "r.nc", ds)
    back = read_dataset(tmp_path / "r.nc")
    xr.testing.assert_identical(back, ds)


def test_save_run_writes_three_files(tmp_path, tiny_config):
    ds = xr.Dataset({"a": (("c",), np.arange(3.0))})
    save_run(tmp_path / "run", ds, tiny_config, command="test")
    names = sorted(p.name for p in (tmp_path / "run").iterdir())
    assert names == ["config.toml", "meta.json", "results.nc"]
