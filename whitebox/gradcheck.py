"""Check autograd against central finite differences (use float64 inputs)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from whitebox import backend
from whitebox.tensor import Tensor, no_grad


def numerical_grad(
    fn: Callable[..., Tensor], inputs: Sequence[Tensor], index: int, h: float = 1e-6
) -> np.ndarray:
    """d sum(fn(*inputs) * w) / d inputs[index] by central differences, w fixed random weights."""
    x = inputs[index]
    host = backend.to_numpy(x.data).astype(np.float64).copy()
    grad = np.zeros_like(host)
    weights = _weights(fn, inputs)
    flat, gflat = host.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        orig = flat[i]
        flat[i] = orig + h
        plus = _weighted(fn, inputs, index, host, weights)
        flat[i] = orig - h
        minus = _weighted(fn, inputs, index, host, weights)
        flat[i] = orig
        gflat[i] = (plus - minus) / (2 * h)
    return grad


def _weights(fn: Callable[..., Tensor], inputs: Sequence[Tensor]) -> np.ndarray:
    out = fn(*inputs)
    return np.random.default_rng(1234).standard_normal(out.shape)


def _weighted(
    fn: Callable[..., Tensor], inputs: Sequence[Tensor], index: int, value: np.ndarray, weights: np.ndarray
) -> float:
    args = list(inputs)
    args[index] = Tensor(backend.to_device(value.astype(inputs[index].dtype), inputs[index].device))
    with no_grad():  # values only: recording a graph per evaluation would be wasted work
        out = fn(*args)
    return float((backend.to_numpy(out.data).astype(np.float64) * weights).sum())


def gradcheck(
    fn: Callable[..., Tensor], *inputs: Tensor, atol: float = 1e-6, rtol: float = 1e-5, h: float = 1e-6
) -> None:
    """Raise AssertionError if autograd's gradient of sum(fn(*inputs) * w) differs from finite differences.

    Every input with ``requires_grad`` is checked; ``w`` are fixed random weights,
    so non-scalar outputs test the full vector-Jacobian product.
    """
    weights = _weights(fn, inputs)
    for t in inputs:
        t.grad = None
    out = fn(*inputs)
    out.backward(Tensor(backend.to_device(weights.astype(out.dtype), out.device)).data)
    for i, t in enumerate(inputs):
        if not t.requires_grad:
            continue
        expected = numerical_grad(fn, inputs, i, h)
        got = np.zeros_like(expected) if t.grad is None else backend.to_numpy(t.grad)
        np.testing.assert_allclose(
            got,
            expected,
            atol=atol,
            rtol=rtol,
            err_msg=f"gradient of input {i} (shape {t.shape}) differs from finite differences",
        )
