"""Building the fused C kernels (`sampling/tms_sgld.c`, `tms_train.c`) on first use.

A kernel is compiled with the system C compiler (`$CC`, default `cc`) for this machine
(`-march=native`) into a cache directory (`$TMS_SLT_CACHE`, default `~/.cache/tms_slt`),
keyed by the source, the flags, the compiler and the CPU, then loaded with ctypes; no build
step at install time. Small models get a build specialized to their shape (m, n).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
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
    """$TMS_SLT_CACHE, else ~/.cache/tms_slt, else a per-user temporary directory."""
    if os.environ.get("TMS_SLT_CACHE"):
        return Path(os.environ["TMS_SLT_CACHE"])
    candidates = (
        Path.home() / ".cache" / "tms_slt",
        Path(tempfile.gettempdir()) / f"tms_slt-{os.getuid()}",
    )
    for path in candidates:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(path, os.W_OK):
            return path
    raise NativeUnavailableError("no writable cache directory for the kernel (set TMS_SLT_CACHE)")


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


@functools.cache
def _build(compiler: str, package: str, source_name: str, defines: tuple[str, ...]) -> ctypes.CDLL:
    flags = (*FLAGS, *defines)
    if shutil.which(compiler) is None:
        raise NativeUnavailableError(f"no C compiler ({compiler!r} not found; set $CC)")
    source = resources.files(package).joinpath(source_name).read_bytes()
    try:
        version = subprocess.run(
            [compiler, "--version"], capture_output=True, text=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError) as err:
        raise NativeUnavailableError(f"{compiler} --version failed: {err}") from err
    key = hashlib.sha256(
        b"\0".join([source, " ".join(flags).encode(), version.encode(), cpu_id().encode()])
    ).hexdigest()[:16]
    cache = cache_dir()
    lib_path = cache / f"{Path(source_name).stem}-{key}.so"
    if not lib_path.exists():
        cache.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cache) as tmp:
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
