"""Multi-head subspace self-attention (MSSA): CRATE's compression step.

CRATE.md sec. 3 and tutorial 03, eqs. (6)-(8). Gradient descent on the coding
rate of the tokens against K subspaces, with the Neumann and softmax
approximations, gives per head the subspace self-attention (column form)

    SSA(Z | U_k) = (U_k^T Z) softmax((U_k^T Z)^T (U_k^T Z)),

in which query = key = value = U_k^T Z. In row form, with w_k = x U_k (N, p),
the official code computes softmax(w_k w_k^T / sqrt(p)) w_k per head and
replaces alpha [U_1, ..., U_K] by a learned output projection.
"""

from __future__ import annotations

from typing import Any

from whitebox.nn import Dropout, Linear, Module, Sequential
from whitebox.ops.attention import tied_attention
from whitebox.tensor import Tensor


class MSSA(Module):
    """Multi-head subspace self-attention, the official CRATE ``Attention``.

    Row form, x of shape (B, N, dim), W = ``qkv.weight`` of shape (heads*p, dim),
    U_k = rows k*p..(k+1)*p of W, transposed (dim, p):

        w_k = x U_k,   A_k = softmax(w_k w_k^T / sqrt(p)),   MSSA(x) = [A_1 w_1, ..., A_K w_K] W_o^T + b_o

    (tutorial 03, eq. (7); CRATE.md sec. 3). It approximates ``whitebox.rate.mssa``:
    head k equals p^{1/4} ``whitebox.rate.ssa``(x, U_k / p^{1/4}), and ``to_out``
    (W_o, b_o) stands in for alpha [U_1, ..., U_K]. Unlike the official code, ``to_out``
    is kept even when heads == 1 and p == dim.

    Submodules: ``qkv`` (Linear, no bias) and ``to_out`` = Sequential(Linear, Dropout),
    so the state_dict keys are ``qkv.weight``, ``to_out.0.weight``, ``to_out.0.bias``.
    With ``keep_attention = True`` the last forward's attention probabilities are kept
    in ``attention`` (a backend array of shape (B, heads, N, N)); off by default.
    """

    def __init__(self, dim: int, heads: int, dim_head: int | None = None, dropout: float = 0.0) -> None:
        super().__init__()
        if dim_head is None:
            if dim % heads:
                raise ValueError(f"MSSA: dim {dim} is not divisible by {heads} heads; pass dim_head")
            dim_head = dim // heads
        self.dim, self.heads, self.dim_head = dim, heads, dim_head
        self.scale = dim_head**-0.5
        self.dropout = dropout
        self.qkv = Linear(dim, heads * dim_head, bias=False)
        self.to_out = Sequential(Linear(heads * dim_head, dim), Dropout(dropout))
        self.keep_attention = False
        self.attention: Any = None

    def forward(self, x: Tensor, mask: Any = None) -> Tensor:
        """``x`` (B, N, dim); ``mask`` boolean, broadcastable to (B, heads, N, N), True = may attend."""
        if x.ndim != 3 or x.shape[-1] != self.dim:
            raise ValueError(f"MSSA: expected tokens of shape (B, N, {self.dim}), got {x.shape}")
        out, attn = tied_attention(
            self.qkv(x), self.heads, self.scale, mask, dropout=self.dropout, training=self.training
        )
        self.attention = attn if self.keep_attention else None
        return self.to_out(out)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, heads={self.heads}, dim_head={self.dim_head}"
