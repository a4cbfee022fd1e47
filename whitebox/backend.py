"""Array backends: NumPy on the CPU, CuPy on the GPU.

Dispatch is per array (the "array module" pattern): every op asks
``xp = array_module(x)`` and calls ``xp.exp``, ``xp.matmul`` ... on it, so CPU
and GPU tensors live side by side in one process. CuPy is imported lazily, only
when a CUDA array is first asked for.

Random numbers come in two kinds:

* weight initialization draws from one *host* NumPy ``Generator`` (``host_rng``),
  so a seed gives bit-identical initial weights on either device;
* dropout and masking draw on the tensor's own device (``device_rng``).
"""

from __future__ import annotations

import ctypes
import os
import sys
import types
from typing import Any

import numpy as np

DEFAULT_DTYPE = np.float32
DEVICES = ("cpu", "cuda")

_cupy: types.ModuleType | None = None
_default_device = "cpu"
_host_rng = np.random.default_rng(0)
_device_rngs: dict[str, Any] = {}
_seed = 0


def cupy() -> types.ModuleType:
    """Import CuPy on first use, or raise an error that says how to install it."""
    global _cupy
    if _cupy is None:
        try:
            import cupy as cp

            cp.cuda.runtime.getDeviceCount()
        except Exception as exc:  # ImportError, or CUDA present but no device
            raise RuntimeError(
                "device 'cuda' needs CuPy and a working NVIDIA GPU "
                f"({type(exc).__name__}: {exc}). Install it with "
                "`pip install 'whitebox[gpu]'` (cupy-cuda12x)."
            ) from exc
        _cupy = cp
    return _cupy


def cuda_available() -> bool:
    """True when CuPy imports and sees at least one GPU."""
    try:
        cupy()
    except RuntimeError:
        return False
    return True


def check_device(device: str) -> str:
    """Normalize a device name ('cpu', 'cuda', 'cuda:0' -> 'cuda') or raise."""
    name = str(device).split(":")[0]
    if name not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
    return name


def array_module(x: Any) -> types.ModuleType:
    """NumPy or CuPy, whichever owns array ``x``."""
    if isinstance(x, np.ndarray | np.generic) or _cupy is None:
        return np
    return _cupy.get_array_module(x)


def device_of(x: Any) -> str:
    """'cpu' for NumPy arrays, 'cuda' for CuPy arrays."""
    return "cpu" if array_module(x) is np else "cuda"


def xp_for(device: str) -> types.ModuleType:
    """The array module of a device."""
    return np if check_device(device) == "cpu" else cupy()


def to_device(x: Any, device: str) -> Any:
    """Move (or keep) an array on ``device``; a no-op when it is already there."""
    device = check_device(device)
    if device_of(x) == device:
        return x
    if device == "cuda":
        return cupy().asarray(x)
    return x.get()


def to_numpy(x: Any) -> np.ndarray:
    """A host NumPy copy (or view, on the CPU) of any backend array."""
    return x if array_module(x) is np else x.get()


def set_default_device(device: str) -> None:
    """Device for tensors created without an explicit ``device=``."""
    global _default_device
    device = check_device(device)
    if device == "cuda":
        cupy()
    _default_device = device


def default_device() -> str:
    return _default_device


def manual_seed(seed: int) -> None:
    """Seed the host initializer RNG and every device RNG."""
    global _host_rng, _seed
    _seed = int(seed)
    _host_rng = np.random.default_rng(_seed)
    _device_rngs.clear()


def host_rng() -> np.random.Generator:
    """The NumPy Generator all weight initializers draw from."""
    return _host_rng


def device_rng(device: str) -> Any:
    """A Generator on ``device`` (for dropout and masking), seeded by ``manual_seed``."""
    device = check_device(device)
    if device not in _device_rngs:
        xp = xp_for(device)
        _device_rngs[device] = xp.random.default_rng(_seed + 1)
    return _device_rngs[device]


def erf(x: Any) -> Any:
    """Elementwise error function on either backend (needed by the exact GELU)."""
    if array_module(x) is np:
        from scipy.special import erf as _erf

        return _erf(x)
    from cupyx.scipy.special import erf as _erf

    return _erf(x)


def scatter_add(target: Any, index: Any, values: Any) -> None:
    """``target[index] += values`` with repeated indices accumulated, in place."""
    if array_module(target) is np:
        np.add.at(target, index, values)
    else:
        import cupyx

        cupyx.scatter_add(target, index, values)


def tune_malloc() -> bool:
    """Ask glibc's malloc to keep freed memory for reuse instead of returning it to the OS.

    NumPy takes every large temporary from malloc. Above the mmap threshold (adaptive,
    128 KiB to 32 MiB) each one is a fresh mmap whose pages fault in on first touch, which
    costs more than the arithmetic of an elementwise op on it; raising the mmap and trim
    thresholds (``mallopt(M_MMAP_THRESHOLD, 1 GiB)``, ``mallopt(M_TRIM_THRESHOLD, 1 GiB)``)
    lets malloc serve them from its heap, as CuPy's memory pool does on the GPU. Peak memory
    is unchanged; the process just does not shrink afterwards.

    It changes the whole process (every library in it), so importing whitebox never does it:
    the command line and the training entry points call it, and a script may. Returns True
    when the thresholds were set; False (and nothing changed) off Linux, off glibc (e.g.
    musl), or with the environment variable WHITEBOX_KEEP_HOST_MEMORY=0.
    """
    if os.environ.get("WHITEBOX_KEEP_HOST_MEMORY", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        libc.mallopt(m_mmap_threshold, 1 << 30)
        libc.mallopt(m_trim_threshold, 1 << 30)
    except (OSError, AttributeError):  # not glibc: keep its defaults
        return False
    return True
