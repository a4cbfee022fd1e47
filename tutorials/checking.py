"""What every exercise checker uses: the error a wrong answer raises, the exercise record, a tolerant
comparison and fixed random inputs (tutorials/exercises.py and tutorials/exercises_models.py)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from whitebox.tensor import Tensor


class WrongAnswerError(AssertionError):
    """An answer that disagrees with the library; the message says where."""


@dataclass(frozen=True)
class Exercise:
    checker: Callable[[Any], None]
    solution: str  # the name of the reference solution in solutions.py


def close(got: Any, want: Any, what: str, rtol: float = 1e-7, atol: float = 1e-9) -> None:
    """Raise WrongAnswerError unless ``got`` and ``want`` have one shape and agree within tolerance."""
    got = got.numpy() if isinstance(got, Tensor) else np.asarray(got, dtype=float)
    want = want.numpy() if isinstance(want, Tensor) else np.asarray(want, dtype=float)
    if got.shape != want.shape:
        raise WrongAnswerError(f"{what}: shape {got.shape}, expected {want.shape}")
    if not np.allclose(got, want, rtol=rtol, atol=atol):
        err = np.abs(got - want).max()
        raise WrongAnswerError(
            f"{what}: off by up to {err:.3g} (e.g. got {got.flat[0]:.6g}, expected {want.flat[0]:.6g})"
        )


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def mixture(seed: int, N: int = 24, K: int = 3, p: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Tokens (N, K p) on K orthonormal p-dim blocks plus noise, and the blocks U (K, d, p)."""
    gen = rng(seed)
    d = K * p
    Q, _ = np.linalg.qr(gen.standard_normal((d, d)))
    U = Q.reshape(d, K, p).transpose(1, 0, 2)
    Z = np.stack([U[k] @ gen.standard_normal(p) for k in gen.integers(0, K, N)]) / np.sqrt(p)
    return Z + 0.1 * gen.standard_normal((N, d)), U
