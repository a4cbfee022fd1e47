"""Multi-head subspace self-attention (MSSA): CRATE's compression step.

docs/math.md §3.3 and tutorial 03, eqs. (6)-(8). Gradient descent on the coding
rate of the tokens against K subspaces, with the Neumann and softmax
approximations, gives per head the subspace self-attention (column form)

    SSA(Z | U_k) = (U_k^T Z) softmax((U_k^T Z)^T (U_k^T Z)),

in which query = key = value = U_k^T Z. In row form, with w_k = x U_k (N, p),
the official code computes softmax(w_k w_k^T / sqrt(p)) w_k per head and
replaces alpha [U_1, ..., U_K] by a learned output projection; ``tied_out=True``
keeps the derivation's map back through the same bases instead.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from whitebox import backend
from whitebox.crate.attention import MultiHeadAttention
from whitebox.crate.kv_cache import LayerCache
from whitebox.nn import Dropout, Parameter
from whitebox.ops.attention import tied_attention
from whitebox.tensor import Tensor


class MSSA(MultiHeadAttention):
    """Multi-head subspace self-attention, the official CRATE ``Attention``.

    Row form, x of shape (B, N, dim), W = ``qkv.weight`` of shape (heads*p, dim),
    U_k = rows k*p..(k+1)*p of W, transposed (dim, p):

        w_k = x U_k,   A_k = softmax(w_k w_k^T / sqrt(p)),   MSSA(x) = [A_1 w_1, ..., A_K w_K] W_o^T + b_o

    (tutorial 03, eq. (7); docs/math.md eq. (4.1)). It approximates ``whitebox.rate.mssa``:
    head k equals p^{1/4} ``whitebox.rate.ssa``(x, U_k / p^{1/4}), and ``to_out``
    (W_o, b_o) stands in for alpha [U_1, ..., U_K]. As in the official code, one head with
    p == dim has no ``to_out`` (Identity: MSSA(x) = A_1 w_1).

    ``tied_out=True`` (not in the official code) maps the heads back through their own bases,
    as the derivation does (docs/math.md eq. (3.5)), times one learned step size s (``step``,
    initialized to 1), in place of ``to_out`` (which is then None):

        MSSA(x) = s [A_1 w_1, ..., A_K w_K] W = s sum_k (A_k w_k) U_k^T
                = s (sqrt(p) / alpha) rate.mssa(x, U / p^{1/4}, eps),    alpha = p / (N eps^2),

    so that the block's x + MSSA(x) is eq. (3.7)'s (1 - c) x + c MSSA(x), c = s / (1 + s), up to
    the scale the next LayerNorm removes. Keys: ``qkv.weight`` and ``step``.

    The frame (masking, dropout, ``keep_attention``) is ``MultiHeadAttention``'s; the
    state_dict keys are the official ``qkv.weight``, ``to_out.0.weight``, ``to_out.0.bias``.
    Its key/value cache keeps one array per layer, w = x W^T of every head.
    """

    projection = "qkv"
    width = 1
    rule = staticmethod(tied_attention)

    def __init__(  # noqa: PLR0917
        self,
        dim: int,
        heads: int,
        dim_head: int | None = None,
        dropout: float = 0.0,
        out_bias: bool = True,
        tied_out: bool = False,
    ) -> None:
        super().__init__(dim, heads, dim_head, dropout, out_bias)
        self.tied_out = tied_out
        if tied_out:
            self.to_out = None  # type: ignore[assignment]  (unregistered: no weights)
            self.step = Parameter(np.ones(1), dtype=backend.DEFAULT_DTYPE)
            self.out_dropout = Dropout(dropout)

    def output(self, heads_out: Tensor) -> Tensor:
        """``to_out``, or with ``tied_out`` s [A_1 w_1, ..., A_K w_K] W (class docstring)."""
        if not self.tied_out:
            return self.to_out(heads_out)
        return self.out_dropout((heads_out @ self.qkv.weight) * self.step)

    def extra_repr(self) -> str:
        return super().extra_repr() + (", tied_out=True" if self.tied_out else "")

    def remember(self, projected: Any, cache: LayerCache) -> tuple[Any, Any, Any]:
        """Cache w alone (query = key = value): one array (B, T, heads * p) per layer."""
        (w,) = cache.extend(projected)
        return projected, w, w
