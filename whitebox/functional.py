"""Functional interface (``import whitebox.functional as F``), NumPy-style ``axis=``.

Every function takes and returns Tensors and is differentiable. The primitives
live in ``whitebox.ops``; this module adds the few compositions layers use.
"""

from __future__ import annotations

from typing import Any

from whitebox.ops import (
    cholesky,
    cross_entropy,
    dropout,
    embedding,
    gelu,
    layer_norm,
    log_softmax,
    logdet,
    logsumexp,
    relu,
    sigmoid,
    soft_threshold,
    softmax,
    solve,
    tanh,
)
from whitebox.ops.attention import attention, tied_attention
from whitebox.tensor import Tensor

__all__ = [
    "attention",
    "cholesky",
    "cross_entropy",
    "dropout",
    "embedding",
    "gelu",
    "layer_norm",
    "linear",
    "log_softmax",
    "logdet",
    "logsumexp",
    "mse_loss",
    "relu",
    "sigmoid",
    "soft_threshold",
    "softmax",
    "solve",
    "tanh",
    "tied_attention",
]


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """y = x W^T + b, with W of shape (out, in) as in PyTorch."""
    if x.shape[-1] != weight.shape[-1]:
        raise ValueError(
            f"linear: input has {x.shape[-1]} features (shape {x.shape}) but the weight "
            f"{weight.shape} expects {weight.shape[-1]}"
        )
    if x.ndim > 2:  # one GEMM over all rows, not one per leading index (NumPy loops over them)
        y = (x.reshape(-1, x.shape[-1]) @ weight.mT).reshape(*x.shape[:-1], weight.shape[0])
    else:
        y = x @ weight.mT
    return y if bias is None else y + bias


def mse_loss(pred: Tensor, target: Any) -> Tensor:
    """Mean squared error mean((pred - target)^2)."""
    diff = pred - target
    return (diff * diff).mean()
