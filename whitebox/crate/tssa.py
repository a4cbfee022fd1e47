"""Token-statistics self-attention (TSSA) layers: ToST's compression step, linear in N.

The op is ``whitebox.ops.tssa`` (its docstring has the equations). Per head k, with
w_k = x U_k (N, p) and memberships Pi (each token's softmax over the heads),

    TSSA(x)_k = -(Pi_k * w_k) / (1 + m_k),   m_kj = sum_i Pi_ki w_kij^2 / sum_i Pi_ki,

a gradient step on a variational upper bound of the coding rate of the tokens whose
only statistics are the Pi-weighted second moments m_k of each feature: no N x N
scores, so forward and backward cost O(N) per head. The causal form takes the moments
over the prefix t <= i (cumulative sums), as a language model needs.

``TSSA`` has the official vision layer's state-dict keys, ``CausalTSSA`` the official
language layer's. Both are generic blocks' attention: forward(x, mask=None) -> (B, N, dim).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from whitebox import backend
from whitebox.nn import Dropout, Linear, Module, Parameter, Sequential
from whitebox.ops.tssa import tssa
from whitebox.tensor import Tensor


def _mask_array(mask: Any) -> np.ndarray:
    m = backend.to_numpy(mask.data if isinstance(mask, Tensor) else mask)
    if m.dtype != bool:
        raise TypeError(f"TSSA: mask must be boolean (True = may attend), got dtype {m.dtype}")
    return m


def _check_mask(mask: Any, n: int, causal: bool, name: str) -> None:
    """TSSA has no scores to mask: only the masks it already implies are accepted."""
    if mask is None:
        return
    m = _mask_array(mask)
    if m.ndim < 2 or m.shape[-2:] != (n, n):
        raise ValueError(f"{name}: mask must have shape (..., {n}, {n}) for {n} tokens, got {m.shape}")
    expected = np.tril(np.ones((n, n), dtype=bool)) if causal else np.ones((n, n), dtype=bool)
    if not (m == expected).all():
        kind = "the causal mask tril(ones(N, N))" if causal else "no mask (all True)"
        raise ValueError(
            f"{name}: TSSA cannot apply an arbitrary attention mask; it accepts only {kind} "
            f"(use CausalTSSA for causal attention, TSSA for bidirectional)"
        )


def _check_tokens(x: Tensor, dim: int, name: str) -> None:
    if x.ndim != 3 or x.shape[-1] != dim:
        raise ValueError(f"{name}: expected tokens of shape (B, N, {dim}), got {x.shape}")


class TSSA(Module):
    """Bidirectional token-statistics self-attention, the official ToST vision ``AttentionTSSA``.

    x (B, N, dim) -> w = x W^T (heads blocks of p = dim_head features) ->
    ``ops.tssa(w, temp)`` -> W_o (.) + b_o. Keys: ``qkv.weight`` (+ ``qkv.bias`` with
    ``qkv_bias``), ``temp`` (heads, 1), ``to_out.0.weight``, ``to_out.0.bias``.
    The memberships Pi (B, heads, N) of the last forward are kept in ``attention`` when
    ``keep_attention`` is True. ``mask`` may only be None or all True.
    """

    def __init__(
        self,
        dim: int,
        heads: int = 8,
        dim_head: int | None = None,
        dropout: float = 0.0,
        qkv_bias: bool = False,
    ) -> None:
        super().__init__()
        if dim_head is None:
            if dim % heads:
                raise ValueError(f"TSSA: dim {dim} is not divisible by {heads} heads; pass dim_head")
            dim_head = dim // heads
        self.dim, self.heads, self.dim_head = dim, heads, dim_head
        self.qkv = Linear(dim, heads * dim_head, bias=qkv_bias)
        self.temp = Parameter(np.ones((heads, 1)), dtype=backend.DEFAULT_DTYPE)
        self.to_out = Sequential(Linear(heads * dim_head, dim), Dropout(dropout))
        self.keep_attention = False
        self.attention: Any = None

    def forward(self, x: Tensor, mask: Any = None) -> Tensor:
        """``x`` (B, N, dim); ``mask`` None (or all True)."""
        _check_tokens(x, self.dim, "TSSA")
        _check_mask(mask, x.shape[1], causal=False, name="TSSA")
        out, pi = tssa(self.qkv(x), self.temp, self.heads)
        self.attention = pi if self.keep_attention else None
        return self.to_out(out)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, heads={self.heads}, dim_head={self.dim_head}"


class CausalTSSA(Module):
    """Causal token-statistics self-attention, the official ToST language ``CausalSelfAttention_TSSA``.

    As ``TSSA`` with the cumulative (prefix) statistics and a learned position bias
    b (heads, block_size, 1) in the membership logits. Keys: ``c_attn.weight``,
    ``c_proj.weight`` (+ ``c_attn.bias``, ``c_proj.bias`` with ``bias``), ``temp``
    (heads, 1), ``denom_bias`` (heads, block_size, 1). ``mask`` may be None or the
    causal mask tril(ones(N, N)); the attention is causal either way.
    """

    def __init__(
        self, dim: int, heads: int, block_size: int, dropout: float = 0.0, bias: bool = True
    ) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"CausalTSSA: dim {dim} is not divisible by {heads} heads")
        if block_size < 1:
            raise ValueError(f"CausalTSSA: block_size must be >= 1, got {block_size}")
        self.dim, self.heads, self.block_size, self.dim_head = dim, heads, block_size, dim // heads
        self.c_attn = Linear(dim, dim, bias=bias)
        self.c_proj = Linear(dim, dim, bias=bias)
        self.resid_dropout = Dropout(dropout)
        self.temp = Parameter(np.ones((heads, 1)), dtype=backend.DEFAULT_DTYPE)
        self.denom_bias = Parameter(np.zeros((heads, block_size, 1)), dtype=backend.DEFAULT_DTYPE)
        self.keep_attention = False
        self.attention: Any = None

    def forward(self, x: Tensor, mask: Any = None) -> Tensor:
        """``x`` (B, T, dim) with T <= block_size; ``mask`` None or the causal mask."""
        _check_tokens(x, self.dim, "CausalTSSA")
        if x.shape[1] > self.block_size:
            raise ValueError(f"CausalTSSA: {x.shape[1]} tokens exceed block_size {self.block_size}")
        _check_mask(mask, x.shape[1], causal=True, name="CausalTSSA")
        out, pi = tssa(self.c_attn(x), self.temp, self.heads, causal=True, bias=self.denom_bias)
        self.attention = pi if self.keep_attention else None
        return self.resid_dropout(self.c_proj(out))

    def extra_repr(self) -> str:
        return f"dim={self.dim}, heads={self.heads}, block_size={self.block_size}"
