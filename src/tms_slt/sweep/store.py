"""The on-disk side of a sweep: directory layout, point files, manifest and lock.

A sweep directory holds::

    DIR/sweep.toml       the sweep (base config, options, resolved axes)
    DIR/manifest.json    status per point: pending / running / done / failed + error
    DIR/points/<id>.nc   one netCDF file per finished point, written atomically
    DIR/.lock            pid and host of the process running the sweep, while it runs

A point counts as done only if its file opens, loads, and carries the exact
TOML text of the point it was computed for (`point_toml` attribute); anything
else is recomputed. Files are only ever replaced atomically (temp file, then
rename), so a finished result is never overwritten by a partial one.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import xarray as xr

from tms_slt.io import write_json

SWEEP_FILE = "sweep.toml"
MANIFEST_FILE = "manifest.json"
POINTS_DIR = "points"
LOCK_FILE = ".lock"
STATUSES = ("pending", "running", "done", "failed")


def point_path(out_dir: Path, point_id: str) -> Path:
    """Where the result of point `point_id` lives."""
    return out_dir / POINTS_DIR / f"{point_id}.nc"


def is_done(path: Path, point_toml: str) -> bool:
    """True if `path` opens, loads fully, and was computed for exactly `point_toml`."""
    try:
        with xr.open_dataset(path, engine="h5netcdf") as ds:
            if ds.attrs.get("point_toml") != point_toml:
                return False
            ds.load()
    except Exception:  # missing, truncated or foreign file: all mean "not done"
        return False
    return True


def remove_stale_temp_files(out_dir: Path) -> list[Path]:
    """Delete temp files left by an atomic write that was killed before its rename.

    Only call this while holding the sweep's lock: then no writer is active.
    """
    removed = []
    for folder in (out_dir, out_dir / POINTS_DIR):
        for tmp in folder.glob(".*.tmp"):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def _lock_info(out_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((out_dir / LOCK_FILE).read_text())
    except (OSError, ValueError):
        return None


def lock_is_live(out_dir: Path) -> bool:
    """True if a process that is still alive holds the sweep's lock.

    A lock from another host cannot be checked and counts as live.
    """
    info = _lock_info(out_dir)
    if info is None:
        return False
    if info.get("host") != socket.gethostname():
        return True
    try:
        os.kill(int(info["pid"]), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except (KeyError, TypeError, ValueError):
        return False
    return True


def acquire_lock(out_dir: Path) -> None:
    """Take the sweep's lock, replacing a stale one; raise if a live process holds it."""
    path = out_dir / LOCK_FILE
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            if lock_is_live(out_dir):
                info = _lock_info(out_dir) or {}
                raise RuntimeError(
                    f"{out_dir} is already being swept by pid {info.get('pid')} on "
                    f"{info.get('host')}; if no such run is active, delete {path}"
                ) from None
            path.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as fh:
            json.dump({"pid": os.getpid(), "host": socket.gethostname()}, fh)
        return
    raise RuntimeError(f"could not take the lock {path}")


def release_lock(out_dir: Path) -> None:
    """Drop the lock if this process holds it."""
    info = _lock_info(out_dir)
    if info and info.get("pid") == os.getpid() and info.get("host") == socket.gethostname():
        (out_dir / LOCK_FILE).unlink(missing_ok=True)


def read_manifest(out_dir: Path) -> dict[str, dict[str, Any]]:
    """Manifest entries by point id ({} if there is no readable manifest)."""
    try:
        return json.loads((out_dir / MANIFEST_FILE).read_text())["points"]
    except (OSError, ValueError, KeyError):
        return {}


class Manifest:
    """Status per point, flushed atomically to manifest.json at most every `interval` s."""

    def __init__(self, out_dir: Path, entries: Iterable[tuple[str, dict[str, Any]]]) -> None:
        self.path = out_dir / MANIFEST_FILE
        self.points = {
            pid: {"status": "pending", "error": None, "overrides": ov} for pid, ov in entries
        }
        self.interval = 1.0
        self._last_flush = 0.0

    def set(self, point_id: str, status: str, error: str | None = None) -> None:
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
        self.points[point_id].update(status=status, error=error)

    def flush(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last_flush >= self.interval:
            write_json(self.path, {"points": self.points})
            self._last_flush = now
