"""Multi-head subspace self-attention (MSSA): CRATE's compression step.

docs/math.md §3.3 and tutorial 03, eqs. (6)-(8). Gradient descent on the coding
rate of the tokens against K subspaces, with the Neumann and softmax
approximations, gives per head the subspace self-attention (column form)

    SSA(Z | U_k) = (U_k^T Z) softmax((U_k^T Z)^T (U_k^T Z)),

in which query = key = value = U_k^T Z. In row form, with w_k = x U_k (N, p),
the official code computes softmax(w_k w_k^T / sqrt(p)) w_k per head and
replaces alpha [U_1, ..., U_K] by a learned output projection.
"""

from __future__ import annotations

from whitebox.crate.attention import MultiHeadAttention
from whitebox.ops.attention import tied_attention


class MSSA(MultiHeadAttention):
    """Multi-head subspace self-attention, the official CRATE ``Attention``.

    Row form, x of shape (B, N, dim), W = ``qkv.weight`` of shape (heads*p, dim),
    U_k = rows k*p..(k+1)*p of W, transposed (dim, p):

        w_k = x U_k,   A_k = softmax(w_k w_k^T / sqrt(p)),   MSSA(x) = [A_1 w_1, ..., A_K w_K] W_o^T + b_o

    (tutorial 03, eq. (7); docs/math.md eq. (4.1)). It approximates ``whitebox.rate.mssa``:
    head k equals p^{1/4} ``whitebox.rate.ssa``(x, U_k / p^{1/4}), and ``to_out``
    (W_o, b_o) stands in for alpha [U_1, ..., U_K]. As in the official code, one head with
    p == dim has no ``to_out`` (Identity: MSSA(x) = A_1 w_1).

    The frame (masking, dropout, ``keep_attention``) is ``MultiHeadAttention``'s; the
    state_dict keys are the official ``qkv.weight``, ``to_out.0.weight``, ``to_out.0.bias``.
    """

    projection = "qkv"
    width = 1
    rule = staticmethod(tied_attention)
