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


def test_files_are_readable_by_group_and_others_as_the_umask_allows(tmp_path, tiny_config):
    import os
    import stat

    ds = xr.Dataset({"a": (("c",), np.arange(3.0))})
    old = os.umask(0o022)
    try:
        save_run(tmp_path / "run", ds, tiny_config, command="test")
        os.umask(0o077)
        write_dataset(tmp_path / "private.nc", ds)
    finally:
        os.umask(old)
    for path in (tmp_path / "run", *(tmp_path / "run").iterdir()):
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o755 if path.is_dir() else 0o644), (path, oct(mode))
    assert stat.S_IMODE((tmp_path / "private.nc").stat().st_mode) == 0o600


def test_a_write_that_fills_the_disk_midway_leaves_nothing(tmp_path, monkeypatch):
    """Past the free-space check (a disk filled by another process meanwhile): the staging
    directory goes and DiskFullError names the run."""
    import subprocess

    from tms_slt import io

    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        monkeypatch.setattr(io, "_free_bytes", lambda path: 1 << 40)
        with pytest.raises(io.DiskFullError, match=f"disk full: cannot write {disk / 'run'}"):
            io.publish(disk / "run", {"a.bin": b"x" * 40_000, "b.bin": b"y" * 40_000})
        assert list(disk.iterdir()) == []
    finally:
        subprocess.run(["umount", str(disk)], check=False)
