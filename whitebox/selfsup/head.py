"""DINO's projection head: an MLP, an L2-normalized bottleneck, a weight-normalized last layer.

    h = MLP(x)                     in_dim -> hidden -> ... -> bottleneck (GELU between layers)
    z = h / max(||h||_2, eps)      the bottleneck on the unit sphere
    y = z W^T,  W_k = g_k v_k / ||v_k||_2     (weight normalization, one row per output k)

With ``norm_last_layer=True`` the gains g_k are fixed at 1 (a buffer, not trained), so
every output is a cosine similarity between z and a learned direction v_k, bounded in [-1, 1];
DINO found this stabilizes training. Everything is built from whitebox ops, so autograd
differentiates through the normalizations.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

from whitebox import backend, ops
from whitebox.nn import GELU, Linear, Module, Parameter, Sequential, init
from whitebox.tensor import Tensor


def l2_normalize(x: Tensor, axis: int = -1, eps: float = 1e-12) -> Tensor:
    """x / max(||x||_2, eps) along ``axis`` (eps keeps a zero vector finite)."""
    norm = ops.sqrt((x * x).sum(axis=axis, keepdims=True))
    return x / ops.maximum(norm, eps)


class WeightNormLinear(Module):
    """y = x W^T with W_k = g_k v_k / ||v_k|| (no bias): the direction ``weight_v`` (out, in)
    and the gain ``weight_g`` (out, 1) are separate; with ``train_gain=False`` the gain is a
    buffer of ones and W has unit rows."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        train_gain: bool = True,
        dtype: Any = None,
        device: str | None = None,
    ) -> None:
        super().__init__()
        if in_features < 1 or out_features < 1:
            raise ValueError(
                "WeightNormLinear: in_features and out_features must be >= 1, "
                f"got {in_features}, {out_features}"
            )
        self.in_features, self.out_features = in_features, out_features
        dtype = dtype or backend.DEFAULT_DTYPE
        self.weight_v = Parameter(init.trunc_normal((out_features, in_features), 0.02), dtype, device)
        gain = np.ones((out_features, 1))
        if train_gain:
            self.weight_g = Parameter(gain, dtype, device)
        else:
            self.register_buffer("weight_g", Tensor(gain, dtype=dtype, device=device))

    def weight(self) -> Tensor:
        """W = g v / ||v||, row by row (differentiable in v and, when trained, in g)."""
        return l2_normalize(self.weight_v, axis=1) * self.weight_g

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] != self.in_features:
            raise ValueError(
                f"WeightNormLinear({self.in_features}, {self.out_features}): input has "
                f"{x.shape[-1]} features (shape {x.shape})"
            )
        return x @ self.weight().mT

    def extra_repr(self) -> str:
        trained = isinstance(self.weight_g, Parameter)
        return f"{self.in_features}, {self.out_features}, train_gain={trained}"


class DINOHead(Module):
    """The projection head: ``mlp`` (``nlayers`` Linear layers, GELU between them, ending at
    ``bottleneck_dim``), L2 normalization, then ``last_layer`` (WeightNormLinear to ``out_dim``,
    the K "prototype" scores that the softmax turns into a distribution). The MLP keeps
    ``Linear``'s default initialization; the directions v start trunc-normal (std 0.02)."""

    def __init__(  # noqa: PLR0917
        self,
        in_dim: int,
        out_dim: int,
        hidden_dim: int = 512,
        bottleneck_dim: int = 64,
        nlayers: int = 3,
        norm_last_layer: bool = True,
    ) -> None:
        super().__init__()
        for name, value in (
            ("in_dim", in_dim),
            ("out_dim", out_dim),
            ("hidden_dim", hidden_dim),
            ("bottleneck_dim", bottleneck_dim),
            ("nlayers", nlayers),
        ):
            if int(value) != value or value < 1:
                raise ValueError(f"DINOHead: {name} must be a positive integer, got {value!r}")
        dims = [in_dim] + [hidden_dim] * (nlayers - 1) + [bottleneck_dim]
        layers: list[Module] = []
        for i, (a, b) in enumerate(itertools.pairwise(dims)):
            layers.append(Linear(a, b))
            if i < nlayers - 1:
                layers.append(GELU())
        self.in_dim, self.out_dim = in_dim, out_dim
        self.mlp = Sequential(*layers)
        self.last_layer = WeightNormLinear(bottleneck_dim, out_dim, train_gain=not norm_last_layer)

    def forward(self, x: Tensor) -> Tensor:
        """Scores (..., out_dim) for features (..., in_dim)."""
        if x.shape[-1] != self.in_dim:
            raise ValueError(f"DINOHead: expected features with {self.in_dim} channels, got shape {x.shape}")
        return self.last_layer(l2_normalize(self.mlp(x)))
