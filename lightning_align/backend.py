"""Import MLX once, fast: on Linux CPUs make it use a real BLAS before its first import.

MLX's Linux CPU wheels link the reference BLAS (~5 GFLOP/s for Whisper's matmuls). Loading the
system OpenBLAS with RTLD_GLOBAL *before* `mlx.core` is imported makes MLX resolve its BLAS symbols
there (~180 GFLOP/s on the same machine). This module is the only place that imports `mlx.core`
for the first time; every other module imports `mx` from here.
"""

from __future__ import annotations

import ctypes
import glob
import logging
import os
import platform
import sys

log = logging.getLogger("lightning_align")

_OPENBLAS_CANDIDATES = (
    "/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0",
    "/usr/lib/aarch64-linux-gnu/openblas-pthread/libopenblas.so.0",
    "/usr/lib/x86_64-linux-gnu/libopenblas.so.0",
    "/usr/lib/aarch64-linux-gnu/libopenblas.so.0",
    "/usr/lib64/libopenblas.so.0",
    "/usr/lib/libopenblas.so.0",
)

BLAS_LIBRARY: str | None = None
"""Path of the BLAS library loaded for MLX on Linux, or None (macOS uses Accelerate)."""


def _preload_blas() -> str | None:
    if platform.system() != "Linux" or "mlx.core" in sys.modules:
        return None
    wanted = os.environ.get("LIGHTNING_ALIGN_BLAS")
    candidates = [wanted] if wanted else list(_OPENBLAS_CANDIDATES)
    candidates += sorted(glob.glob("/usr/lib/*/libopenblas*.so*"))
    for path in candidates:
        if path and os.path.exists(path):
            try:
                ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
                return path
            except OSError:
                continue
    return None


BLAS_LIBRARY = _preload_blas()

import mlx.core as mx  # noqa: E402  (must follow the BLAS preload)

_warned = False


def cache_root() -> str:
    """This library's cache: $LIGHTNING_ALIGN_CACHE, else $XDG_CACHE_HOME (~/.cache)/lightning-align."""
    return os.environ.get("LIGHTNING_ALIGN_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "lightning-align")


def _default_ptx_cache() -> None:
    # MLX's CUDA backend compiles every kernel variant with NVRTC on first use (4-9 s each on
    # the H100 hosts measured) and keeps the results under the system's temporary directory by
    # default, which containers and reboots empty: then every process starts with minutes of
    # compiling again. Beside the converted weights they last as long as those. MLX reads the
    # variable at its first compile, so setting it here, before any GPU work, is in time.
    if platform.system() == "Linux" and "MLX_PTX_CACHE_DIR" not in os.environ:
        os.environ["MLX_PTX_CACHE_DIR"] = os.path.join(cache_root(), "mlx-ptx", mx.__version__)


_default_ptx_cache()


def ptx_cache_dir() -> str | None:
    """Where MLX's CUDA backend keeps the GPU kernels it compiles ($MLX_PTX_CACHE_DIR; by default
    set by this library, on Linux, to `mlx-ptx/<MLX version>` in its cache), or None where MLX
    picks (macOS: Metal's kernels are built ahead of time)."""
    return os.environ.get("MLX_PTX_CACHE_DIR")


def gpu_available() -> bool:
    """True when MLX has a GPU backend (Metal on macOS, CUDA on Linux) that works."""
    try:
        return bool(mx.is_available(mx.gpu))
    except (AttributeError, RuntimeError):
        return False


def warn_if_slow_blas() -> None:
    """Warn once, with the fix, when MLX runs on a Linux CPU with the reference BLAS."""
    global _warned
    if _warned or platform.system() != "Linux" or BLAS_LIBRARY or gpu_available():
        return
    _warned = True
    if "mlx.core" in sys.modules and BLAS_LIBRARY is None:
        log.warning(
            "MLX is using its bundled reference BLAS, which is ~30x slower on CPU. Install "
            "OpenBLAS (Debian/Ubuntu: `apt-get install libopenblas0-pthread`) or point "
            "LIGHTNING_ALIGN_BLAS at a libopenblas.so, and import lightning_align before mlx."
        )


__all__ = ["mx", "BLAS_LIBRARY", "cache_root", "gpu_available", "ptx_cache_dir", "warn_if_slow_blas"]
