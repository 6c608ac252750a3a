"""Run directories: config.toml, results.nc, meta.json, written atomically.

A file is written to a temporary name in the same directory and renamed into
place, so a reader (or a resumed sweep) never sees a partial file. A run directory
is assembled in a hidden staging directory beside it and renamed into place whole,
so a full disk, a crash or Ctrl-C leaves either the complete run or nothing.
Files are serialized in memory first: HDF5 writing into a full disk can crash the
process, while a plain write of bytes fails cleanly with ENOSPC.
"""

from __future__ import annotations

import errno
import io
import json
import os
import platform
import shutil
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


#: long_name and units of every variable tms-slt writes (one name per quantity everywhere:
#: the same names appear in transitions.json as delta_<name> and in printed tables).
VARIABLES: dict[str, tuple[str, str]] = {
    "loss": ("training loss L_n (importance-weighted squared reconstruction error)", "1"),
    "feature_count": ("feature count ‖W‖²_F (Elhage et al. 2022)", "1"),
    "dims_per_feature": ("dimensions per feature m/‖W‖²_F", "1"),
    "gram_eigenvalues": ("eigenvalues of WWᵀ, ascending", "1"),
    "eig_gap": ("gap between the two largest eigenvalues of WWᵀ", "1"),
    "eig_multiplicity": ("multiplicity of the largest eigenvalue of WWᵀ", "1"),
    "feature_dimensionality": ("feature dimensionality D_i (Elhage et al. 2022)", "1"),
    "kgon": ("k-gon configuration label (geometry.classify)", ""),
    "regular_residual": ("distance from a regular k-gon (geometry.classify)", "1"),
    "W": ("weights W (hidden × feature)", "1"),
    "b": ("bias b", "1"),
    "importance": ("feature importance I_i", "1"),
    "train_data": ("training set D_n", "1"),
    "llc_mean": ("local learning coefficient λ̂, mean over chains (Lau et al. 2023)", "1"),
    "llc_std": ("standard deviation of λ̂ over chains", "1"),
    "llc_rhat": ("rank-normalized R-hat of the λ̂ trace", "1"),
    "llc_mcse": ("Monte Carlo standard error of λ̂", "1"),
    "llc_reliable": ("λ̂ passes every diagnostic check", "bool"),
    "llc_reasons": ("the diagnostic checks λ̂ failed (empty: none)", ""),
    "llc_theory": ("λ of the regular k-gon (theory.kgon_llc; NaN where unknown)", "1"),
    "llc_step_size": ("SGLD step size ε used", "1"),
    "llc_localization": ("SGLD localization γ used", "1"),
    "num_divergent": ("number of divergent SGLD chains", "1"),
}


def describe(ds: xr.Dataset) -> xr.Dataset:
    """`ds` with long_name (and units) on every data variable: from VARIABLES where known,
    else the name itself (so no variable goes without one)."""
    out = ds.copy()
    for name in out.data_vars:
        long_name, units = VARIABLES.get(str(name), (str(name).replace("_", " "), ""))
        out[name].attrs.setdefault("long_name", long_name)
        if units:
            out[name].attrs.setdefault("units", units)
    return out


class DiskFullError(OSError):
    """No space left for a file tms-slt writes; nothing half-written was left behind."""

    def __init__(self, message: str) -> None:
        super().__init__(message)  # one argument: str() is the message alone, no "[Errno 28]"
        self.errno = errno.ENOSPC


_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def _disk_full(path: Path, needed: int | None = None) -> DiskFullError:
    free = _free_bytes(path)
    need = f"{needed} bytes needed, " if needed is not None else ""
    return DiskFullError(
        f"disk full: cannot write {path} ({need}{free} bytes free); nothing written"
    )


def _free_bytes(path: Path) -> int:
    for folder in (path, *path.parents):
        if folder.exists():
            return shutil.disk_usage(folder).free
    return 0


def check_space(path: Path, needed: int) -> None:
    """Raise DiskFullError (naming `path`) before writing `needed` bytes to `path` where
    they cannot fit."""
    if _free_bytes(path) < needed:
        raise _disk_full(path, needed)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode open() gives a new file under this process's umask (mkstemp gives 0600,
    which would hide run files from the group and other users)."""
    return 0o666 & ~_umask()


def dir_mode() -> int:
    """The mode mkdir() gives a new directory under the umask (mkdtemp gives 0700)."""
    return 0o777 & ~_umask()


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call `write(tmp_path)` then rename tmp_path onto `path` (same filesystem).

    Raises:
        DiskFullError: the disk (or quota) is full; `path` is untouched and no temp file stays.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        os.chmod(tmp_path, file_mode())
        os.replace(tmp_path, path)
    except OSError as err:
        tmp_path.unlink(missing_ok=True)
        if err.errno in _NO_SPACE:
            raise _disk_full(path) from None
        raise
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    return path


def _write_bytes(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    path = Path(path)
    check_space(path, len(data))
    return atomic_write(path, lambda p: _write_bytes(p, data))


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode())


#: Resolution of every figure tms-slt writes.
FIGURE_DPI = 120


def figure_png(fig: Any, *, dpi: int = FIGURE_DPI) -> bytes:
    """A matplotlib Figure as PNG bytes, without a date or software version in its metadata,
    so the same figure rebuilt from the same data is the same file."""
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=dpi, format="png", metadata={"Software": None})
    return buffer.getvalue()


def save_figure(fig: Any, path: str | Path, *, dpi: int = FIGURE_DPI) -> Path:
    """A matplotlib Figure as PNG (`figure_png`), atomically."""
    return atomic_write_bytes(path, figure_png(fig, dpi=dpi))


def dataset_bytes(ds: xr.Dataset) -> bytes:
    """`ds` as netCDF (h5netcdf engine) in memory; string arrays become variable-length.

    The store is opened with the HDF5 lock alone, the bytes `Dataset.to_netcdf` gives: left
    to itself, xarray asks a running Dask client for a lock named after the target, which
    fails for an in-memory file (a sweep on Dask stores its points from such a process)."""
    from xarray.backends import H5NetCDFStore
    from xarray.backends.locks import HDF5_LOCK

    buffer = io.BytesIO()
    store = H5NetCDFStore.open(buffer, mode="w", lock=HDF5_LOCK)
    try:
        ds.dump_to_store(store)
    finally:
        store.close()
    return buffer.getvalue()


def inference_data_bytes(idata: Any) -> bytes:
    """An ArviZ InferenceData as netCDF in memory (one group per node, as
    `InferenceData.to_netcdf` writes it, numeric variables zlib-compressed likewise).

    Written node by node as `DataTree.to_netcdf` does, into a store opened with the HDF5
    lock alone (as `dataset_bytes`): the same bytes, without `to_netcdf` asking Dask for
    its scheduler, which imports `distributed` (0.4 s of the quickstart)."""
    from xarray.backends import H5NetCDFStore
    from xarray.backends.locks import HDF5_LOCK

    tree = idata.to_datatree()
    buffer = io.BytesIO()
    root = H5NetCDFStore.open(buffer, mode="w", format="NETCDF4", lock=HDF5_LOCK)
    try:
        for node in tree.subtree:
            ds = node.to_dataset(inherit=node is tree)
            encoding = {
                name: {"zlib": True}
                for name, var in ds.data_vars.items()
                if np.issubdtype(var.dtype, np.number) or var.dtype == bool
            }
            store = root if node is tree else root.get_child_store(node.path)
            ds.dump_to_store(store, encoding=encoding)
    finally:
        root.close()
    return buffer.getvalue()


def write_dataset(path: str | Path, ds: xr.Dataset) -> Path:
    """Save as netCDF (`dataset_bytes`) atomically."""
    return atomic_write_bytes(path, dataset_bytes(ds))


def read_dataset(path: str | Path) -> xr.Dataset:
    """Load a netCDF file fully into memory (the file is closed afterwards).

    Raises:
        ValueError: the file is missing, empty, truncated or not netCDF (one line).
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path} not found")
    try:
        with xr.open_dataset(path, engine="h5netcdf") as ds:
            return ds.load()
    except (OSError, ValueError, KeyError, RuntimeError) as err:
        raise ValueError(
            f"{path} is not a readable netCDF file (empty or truncated?): {type(err).__name__}"
        ) from None


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


def json_text(obj: Any) -> str:
    """`obj` as indented JSON (numpy scalars and arrays as plain numbers and lists)."""
    return json.dumps(obj, indent=2, default=_json_default) + "\n"


def write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_text(path, json_text(obj))


class RunExistsError(FileExistsError):
    """A run directory already holds results: tms-slt never overwrites them."""


def refuse_existing_run(run_dir: str | Path) -> None:
    """Raise RunExistsError when `run_dir` already holds a results.nc: call it before any
    work, so that nothing is computed only to be refused at the end."""
    if (Path(run_dir) / RESULTS_FILE).exists():
        raise RunExistsError(
            f"{run_dir} already holds results ({RESULTS_FILE}); tms-slt never overwrites a run: "
            "choose another --out"
        )


def save_run(
    run_dir: str | Path,
    results: xr.Dataset,
    config: ExperimentConfig | None,
    *,
    traces: Any = None,
    figures: dict[str, Any] | None = None,
    **meta_extra: Any,
) -> Path:
    """Write config.toml, results.nc and meta.json (and `traces`, an ArviZ InferenceData,
    as traces.nc; and `figures`, {file name: matplotlib Figure}, as PNG) into `run_dir`,
    which must not hold results yet: all of them, or (disk full, interrupted) none.

    The resolved config, seed and versions also go into results.nc's attributes, so the
    file alone says how it was made.

    Raises:
        RunExistsError: `run_dir` already has a results.nc (from any command): results and
            their provenance are never overwritten; pick another directory.
        DiskFullError: the files do not fit; nothing was written.
    """
    run_dir = Path(run_dir)
    refuse_existing_run(run_dir)
    meta = run_meta(config, **meta_extra)
    files: dict[str, bytes] = {}
    if config is not None:
        files[CONFIG_FILE] = config_to_toml(config).encode()
    if traces is not None:
        files[TRACES_FILE] = inference_data_bytes(traces)
    for name, fig in (figures or {}).items():
        files[name] = figure_png(fig)
    files[META_FILE] = json_text(meta).encode()
    # results.nc last: its presence is what marks a run directory as complete
    files[RESULTS_FILE] = dataset_bytes(describe(_with_provenance(results, meta)))
    publish(run_dir, files)
    return run_dir


def publish(run_dir: Path, files: dict[str, bytes]) -> None:
    """Write `files` into a staging directory beside `run_dir`, then move them into place:
    a rename each, which needs no space, so a full disk stops before `run_dir` changes."""
    check_space(run_dir, sum(len(data) for data in files.values()))
    parent = run_dir.parent
    parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=parent, prefix=f".{run_dir.name}.", suffix=".tmp"))
    try:
        for name, data in files.items():
            _write_bytes(staging / name, data)
            os.chmod(staging / name, file_mode())
        if run_dir.exists():
            for name in files:
                os.replace(staging / name, run_dir / name)
            staging.rmdir()
        else:
            os.chmod(staging, dir_mode())
            os.rename(staging, run_dir)
    except OSError as err:
        shutil.rmtree(staging, ignore_errors=True)
        if err.errno in _NO_SPACE:
            raise _disk_full(run_dir) from None
        raise
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


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
