"""Weight initializers. All draw from the host NumPy Generator (``backend.host_rng``)
so that one seed gives identical weights on the CPU and the GPU."""

from __future__ import annotations

import math

import numpy as np

from whitebox import backend


def uniform(shape: tuple[int, ...], bound: float) -> np.ndarray:
    """Samples of U(-bound, bound)."""
    return backend.host_rng().uniform(-bound, bound, size=shape)


def normal(shape: tuple[int, ...], std: float = 1.0) -> np.ndarray:
    """Samples of N(0, std^2)."""
    return backend.host_rng().normal(0.0, std, size=shape)


def kaiming_uniform(shape: tuple[int, ...], fan_in: int) -> np.ndarray:
    """PyTorch's default for Linear weights: U(-b, b) with b = 1/sqrt(fan_in)
    (kaiming-uniform with a = sqrt(5))."""
    return uniform(shape, 1 / math.sqrt(fan_in))


def trunc_normal(shape: tuple[int, ...], std: float = 0.02) -> np.ndarray:
    """N(0, std^2) truncated to +-2 std (resampled), as ViT-style models use."""
    rng = backend.host_rng()
    out = rng.normal(0.0, std, size=shape)
    bad = np.abs(out) > 2 * std
    while bad.any():
        out[bad] = rng.normal(0.0, std, size=int(bad.sum()))
        bad = np.abs(out) > 2 * std
    return out
