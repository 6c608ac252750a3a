"""Run directories: config.toml, results.nc, meta.json, written atomically.

A file is written to a temporary name in the same directory and renamed into
place, so a reader (or a resumed sweep) never sees a partial file.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from tms_slt.config import ExperimentConfig, config_to_dict, config_to_toml

RESULTS_FILE = "results.nc"
META_FILE = "meta.json"
CONFIG_FILE = "config.toml"


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call `write(tmp_path)` then rename tmp_path onto `path` (same filesystem)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda p: p.write_text(text))


def write_dataset(path: str | Path, ds: xr.Dataset) -> Path:
    """Save as netCDF (h5netcdf engine) atomically; string arrays become variable-length."""
    return atomic_write(path, lambda p: ds.to_netcdf(p, engine="h5netcdf"))


def read_dataset(path: str | Path) -> xr.Dataset:
    """Load a netCDF file fully into memory (the file is closed afterwards)."""
    with xr.open_dataset(path, engine="h5netcdf") as ds:
        return ds.load()


def git_sha(cwd: str | Path | None = None) -> str | None:
    """The current commit of the repository holding `cwd`, if any."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=cwd or Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def run_meta(config: ExperimentConfig | None, **extra: Any) -> dict[str, Any]:
    """Provenance: versions, seed, git SHA, time and the resolved config."""
    import torch

    from tms_slt import __version__

    meta: dict[str, Any] = {
        "tms_slt_version": __version__,
        "torch_version": torch.__version__,
        "numpy_version": np.__version__,
        "python_version": platform.python_version(),
        "platform": platform.platform(),
        "git_sha": git_sha(),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    if config is not None:
        meta["seed"] = config.seed
        meta["config"] = config_to_dict(config)
    meta.update(extra)
    return meta


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


def write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, default=_json_default) + "\n")


def save_run(
    run_dir: str | Path,
    results: xr.Dataset,
    config: ExperimentConfig | None,
    **meta_extra: Any,
) -> Path:
    """Write config.toml, results.nc and meta.json into `run_dir`."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if config is not None:
        atomic_write_text(run_dir / CONFIG_FILE, config_to_toml(config))
    write_dataset(run_dir / RESULTS_FILE, results)
    write_json(run_dir / META_FILE, run_meta(config, **meta_extra))
    return run_dir


def default_run_dir(command: str, root: str | Path = "runs") -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path(root) / f"{command}-{stamp}"
