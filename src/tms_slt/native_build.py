"""Building the fused C kernels (`sampling/tms_sgld.c`, `tms_train.c`) on first use.

A kernel is compiled with the system C compiler (`$CC`, default `cc`) for this machine
(`-march=native`) into a private cache directory (`$TMS_SLT_CACHE`, default
`~/.cache/tms_slt`; see `cache_dir`),
keyed by the source, the flags, the compiler and the CPU, then loaded with ctypes; no build
step at install time. Small models get a build specialized to their shape (m, n).
"""

from __future__ import annotations

import atexit
import ctypes
import functools
import hashlib
import os
import platform
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Callable
from importlib import resources
from pathlib import Path

# No -ffast-math: it assumes finite values and would hide diverging (NaN) chains. The
# reassociation flags let the compiler vectorize the batch sums.
FLAGS = (
    "-O3",
    "-march=native",
    "-fPIC",
    "-shared",
    "-fno-math-errno",
    "-fno-trapping-math",
    "-fassociative-math",
    "-fno-signed-zeros",
    "-ffp-contract=fast",
)
#: Models with at most this many weights get a build specialized to their (m, n): the
#: 8-sample block kernel whose accumulators fit in (or just beyond) the vector registers.
MAX_SPECIALIZED_WEIGHTS = 64


class NativeUnavailableError(RuntimeError):
    """A fused kernel cannot be built or loaded here (no C compiler, say)."""


def loads(load: Callable[[], ctypes.CDLL]) -> bool:
    """Whether `load` (a kernel's build-and-load) succeeds on this machine."""
    try:
        load()
    except NativeUnavailableError:
        return False
    return True


def cache_dir() -> Path:
    """Where built kernels are kept: $TMS_SLT_CACHE, else $XDG_CACHE_HOME/tms_slt (default
    ~/.cache/tms_slt), else <tmp>/tms_slt-<uid>: the first that is a private directory
    (`private_dir`), else a fresh one for this process (the kernel is then rebuilt).

    A shared temporary directory has a predictable name anyone could create first and fill
    with a library of theirs, which loading would run: one that is not ours is never used.
    """
    if os.environ.get("TMS_SLT_CACHE"):
        candidates = [Path(os.environ["TMS_SLT_CACHE"])]
    else:
        user_cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        candidates = [
            Path(user_cache) / "tms_slt",
            Path(tempfile.gettempdir()) / f"tms_slt-{os.getuid()}",
        ]
    for path in candidates:
        if private_dir(path):
            return path
    return _fresh_dir()


def _ours(info: os.stat_result) -> bool:
    """Owned by this user and writable by no one else."""
    return info.st_uid == os.getuid() and not info.st_mode & 0o022


def private_dir(path: Path) -> bool:
    """Whether `path` is (or could be made, mode 0700) a directory we own, no symlink, that
    neither the group nor others can write to."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISDIR(info.st_mode) and _ours(info) and os.access(path, os.W_OK)


@functools.cache
def _fresh_dir() -> Path:
    """A new private directory (mkdtemp: mode 0700), removed when the process exits."""
    path = Path(tempfile.mkdtemp(prefix="tms_slt-"))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def _trusted(lib_path: Path) -> bool:
    """Whether an existing library file is ours to load (see `cache_dir`)."""
    try:
        info = os.lstat(lib_path)
    except OSError:
        return False
    return stat.S_ISREG(info.st_mode) and _ours(info)


def cpu_id() -> str:
    """Identifies the instruction set `-march=native` compiled for."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return line
    except OSError:
        pass
    return platform.processor() or platform.machine()


def shape_defines(m: int | None, n: int | None) -> tuple[str, ...]:
    """The defines of a build specialized to (m, n), or () for the generic build."""
    if m is None or n is None or m * n > MAX_SPECIALIZED_WEIGHTS:
        return ()
    return (f"-DTMS_M={m}", f"-DTMS_N={n}")


def build_library(package: str, source_name: str, defines: tuple[str, ...]) -> ctypes.CDLL:
    """Compile (once per machine, source, flags and compiler) and load `source_name` from
    `package` with `$CC`.

    Raises:
        NativeUnavailableError: no C compiler, or compiling or loading failed; the message
            carries the compiler's output.
    """
    return _build(os.environ.get("CC", "cc"), package, source_name, defines)


def library_name(compiler: str, package: str, source_name: str, defines: tuple[str, ...]) -> str:
    """The cache file name of a build: <source stem>-<hash of source, flags, compiler and
    CPU>.so.

    Raises:
        NativeUnavailableError: no such compiler, or it does not say its version.
    """
    if shutil.which(compiler) is None:
        raise NativeUnavailableError(f"no C compiler ({compiler!r} not found; set $CC)")
    source = resources.files(package).joinpath(source_name).read_bytes()
    try:
        version = subprocess.run(
            [compiler, "--version"], capture_output=True, text=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError) as err:
        raise NativeUnavailableError(f"{compiler} --version failed: {err}") from err
    flags = (*FLAGS, *defines)
    key = hashlib.sha256(
        b"\0".join([source, " ".join(flags).encode(), version.encode(), cpu_id().encode()])
    ).hexdigest()[:16]
    return f"{Path(source_name).stem}-{key}.so"


@functools.cache
def _build(compiler: str, package: str, source_name: str, defines: tuple[str, ...]) -> ctypes.CDLL:
    flags = (*FLAGS, *defines)
    name = library_name(compiler, package, source_name, defines)
    lib_path = cache_dir() / name
    source = resources.files(package).joinpath(source_name).read_bytes()
    if os.path.lexists(lib_path) and not _trusted(lib_path):
        lib_path = _fresh_dir() / lib_path.name  # never load a library someone else made
    if not lib_path.exists():
        with tempfile.TemporaryDirectory(dir=lib_path.parent) as tmp:
            src = Path(tmp) / source_name
            src.write_bytes(source)
            out = Path(tmp) / "lib.so"
            # Some compilers (Apple clang on arm64) reject -march=native: retry without.
            for attempt in (flags, tuple(f for f in flags if f != "-march=native")):
                proc = subprocess.run(
                    [compiler, *attempt, "-o", str(out), str(src), "-lm"],
                    capture_output=True,
                    text=True,
                )
                if proc.returncode == 0:
                    break
            else:
                raise NativeUnavailableError(
                    f"compiling {source_name} failed:\n{proc.stderr.strip()}"
                )
            os.replace(out, lib_path)  # atomic: concurrent builders race harmlessly
    try:
        return ctypes.CDLL(str(lib_path))
    except OSError as err:
        raise NativeUnavailableError(f"loading {lib_path} failed: {err}") from err
