"""The standard layers: Linear, LayerNorm, Embedding, Dropout and activations."""

from __future__ import annotations

from typing import Any

import numpy as np

import whitebox.functional as F
from whitebox import backend
from whitebox.nn import init
from whitebox.nn.module import Module, Parameter
from whitebox.tensor import Tensor


def _param(values: np.ndarray, dtype: Any, device: str | None) -> Parameter:
    return Parameter(values, dtype=dtype or backend.DEFAULT_DTYPE, device=device)


class Linear(Module):
    """y = x W^T + b with W of shape (out_features, in_features), PyTorch's layout and init."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        dtype: Any = None,
        device: str | None = None,
    ) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = _param(init.kaiming_uniform((out_features, in_features), in_features), dtype, device)
        self.bias = (
            _param(init.uniform((out_features,), 1 / np.sqrt(in_features)), dtype, device) if bias else None
        )

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, bias={self.bias is not None}"


class LayerNorm(Module):
    """Normalize the last axis to zero mean and unit variance, then scale and shift."""

    def __init__(
        self,
        dim: int,
        eps: float = 1e-5,
        elementwise_affine: bool = True,
        dtype: Any = None,
        device: str | None = None,
    ) -> None:
        super().__init__()
        self.dim, self.eps = dim, eps
        self.weight = _param(np.ones(dim), dtype, device) if elementwise_affine else None
        self.bias = _param(np.zeros(dim), dtype, device) if elementwise_affine else None

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] != self.dim:
            raise ValueError(
                f"LayerNorm({self.dim}): input's last axis has {x.shape[-1]} features (shape {x.shape})"
            )
        return F.layer_norm(x, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return f"{self.dim}, eps={self.eps}"


class Embedding(Module):
    """A lookup table: row i of ``weight`` (num_embeddings x dim, N(0, std^2) init) for id i."""

    def __init__(
        self, num_embeddings: int, dim: int, dtype: Any = None, device: str | None = None, std: float = 1.0
    ) -> None:
        super().__init__()
        self.num_embeddings, self.dim = num_embeddings, dim
        self.weight = _param(init.normal((num_embeddings, dim), std), dtype, device)

    def forward(self, ids: Any) -> Tensor:
        return F.embedding(ids, self.weight)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.dim}"


class Dropout(Module):
    """Inverted dropout with probability ``p`` in training mode; identity in eval mode."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        if not 0 <= p < 1:
            raise ValueError(f"Dropout: p must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        return F.dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class Identity(Module):
    """y = x (no parameters): where the official code uses ``nn.Identity``."""

    def forward(self, x: Tensor) -> Tensor:
        return x


class ReLU(Module):
    def forward(self, x: Tensor) -> Tensor:
        return F.relu(x)


class GELU(Module):
    def __init__(self, approximate: str = "none") -> None:
        super().__init__()
        self.approximate = approximate

    def forward(self, x: Tensor) -> Tensor:
        return F.gelu(x, self.approximate)


class Tanh(Module):
    def forward(self, x: Tensor) -> Tensor:
        return F.tanh(x)
