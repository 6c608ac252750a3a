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
TRACES_FILE = "traces.nc"


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
        "torch_version": str(torch.__version__),
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


class RunExistsError(FileExistsError):
    """A run directory already holds results: tms-slt never overwrites them."""


def save_run(
    run_dir: str | Path,
    results: xr.Dataset,
    config: ExperimentConfig | None,
    *,
    traces: Any = None,
    **meta_extra: Any,
) -> Path:
    """Write config.toml, results.nc and meta.json (and `traces`, an ArviZ InferenceData,
    as traces.nc) into `run_dir`, which must not hold results yet.

    The resolved config, seed and versions also go into results.nc's attributes, so the
    file alone says how it was made.

    Raises:
        RunExistsError: `run_dir` already has a results.nc (from any command): results and
            their provenance are never overwritten; pick another directory.
    """
    run_dir = Path(run_dir)
    if (run_dir / RESULTS_FILE).exists():
        raise RunExistsError(
            f"{run_dir} already holds results ({RESULTS_FILE}); tms-slt never overwrites a run: "
            "choose another --out"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    meta = run_meta(config, **meta_extra)
    if config is not None:
        atomic_write_text(run_dir / CONFIG_FILE, config_to_toml(config))
    if traces is not None:
        atomic_write(run_dir / TRACES_FILE, lambda p: traces.to_netcdf(str(p), engine="h5netcdf"))
    write_dataset(run_dir / RESULTS_FILE, _with_provenance(results, meta))
    write_json(run_dir / META_FILE, meta)
    return run_dir


def _with_provenance(results: xr.Dataset, meta: dict[str, Any]) -> xr.Dataset:
    """`results` with the run's meta as netCDF attributes (nested values as JSON text)."""
    attrs = {**results.attrs, **{k: v for k, v in meta.items() if v is not None}}
    return results.assign_attrs({k: _attr_value(v) for k, v in attrs.items()})


def _attr_value(value: Any) -> Any:
    """A value netCDF stores as an attribute: str, int or float; anything else as JSON."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, str):
        return str(value)  # a str subclass (torch's TorchVersion) is not storable as such
    if isinstance(value, int | float):
        return value
    return json.dumps(value, default=_json_default)


def _unique(path: Path) -> Path:
    """`path`, or `path-2`, `path-3`, ... : the first that does not exist yet."""
    candidate, i = path, 2
    while candidate.exists():
        candidate = path.with_name(f"{path.name}-{i}")
        i += 1
    return candidate


def default_run_dir(command: str, root: str | Path = "runs") -> Path:
    """runs/<command>-<time>, made unique (two runs in one second get -2, -3, ...)."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return _unique(Path(root) / f"{command}-{stamp}")


def derived_run_dir(source: str | Path, command: str) -> Path:
    """<source>/<command>-<time>: where a command that reads a run writes its own results."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return _unique(Path(source) / f"{command}-{stamp}")
