"""Matrix products and the linear algebra the coding rate needs.

All ops work on stacks of matrices (leading batch axes).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from whitebox.host_threads import for_blocks
from whitebox.ops.elementwise import operands
from whitebox.tensor import Tensor, make, sum_to_shape

MIN_ROWS = 16  # rows of a block of a split product


def matmul_arrays(a: Any, b: Any) -> Any:
    """a @ b on backend arrays. For a 2-D ``b`` (a linear layer's weight, a gradient's product
    with it) the rows of ``a`` (flattened over its leading axes) run in blocks on the host's
    threads (``host_threads``): each block is one BLAS product of its rows, so each output row
    is computed as one product over all rows computes it. A block has at least ``MIN_ROWS``
    rows: NumPy hands a one-row product to a matrix-vector routine, which sums differently."""
    if not (isinstance(a, np.ndarray) and a.ndim >= 2 and getattr(b, "ndim", 0) == 2):
        return a @ b
    a2 = a.reshape(math.prod(a.shape[:-1]), a.shape[-1])  # not -1: ambiguous when an axis is empty
    out = np.empty((a2.shape[0], b.shape[1]), dtype=np.result_type(a, b))
    like = max(out, a2, key=lambda x: x.size)
    for_blocks(lambda r: np.matmul(a2[r], b, out=out[r]), a2.shape[0], like, min_rows=MIN_ROWS)
    return out.reshape(*a.shape[:-1], b.shape[1])


def matmul(a: Any, b: Any) -> Tensor:
    """a @ b (NumPy semantics: batched, broadcasting, 1-D operands promoted).

    VJPs: dL/da = g b^T, dL/db = a^T g. When a batched ``a`` meets a 2-D ``b``
    (a linear layer), dL/db is one GEMM over the flattened batch, not a stack
    of products summed afterwards.
    """
    a, b = operands(a, b, "matmul")
    if a.ndim == 0 or b.ndim == 0:
        raise ValueError(
            f"matmul: operands must have at least 1 dimension, got shapes {a.shape} and {b.shape}"
        )
    k_b = b.shape[-2] if b.ndim > 1 else b.shape[0]
    if a.shape[-1] != k_b:
        raise ValueError(
            f"matmul: shapes {a.shape} and {b.shape} do not align: the last axis of the "
            f"first ({a.shape[-1]}) must equal the {'second-to-last' if b.ndim > 1 else 'only'} "
            f"axis of the second ({k_b})"
        )
    try:
        out = matmul_arrays(a.data, b.data)
    except ValueError as exc:
        raise ValueError(
            f"matmul: the batch axes of shapes {a.shape} and {b.shape} do not broadcast"
        ) from exc

    def backward(g: Any) -> tuple[Any, Any]:
        A = a.data if a.ndim > 1 else a.data[None, :]
        B = b.data if b.ndim > 1 else b.data[:, None]
        if a.ndim == 1:
            g = g[..., None, :] if b.ndim > 1 else g[..., None]
        if b.ndim == 1:
            g = g[..., None]
        ga = gb = None
        if a.requires_grad:
            ga = matmul_arrays(g, B.swapaxes(-1, -2))
            ga = sum_to_shape(ga, A.shape).reshape(a.shape)
        if b.requires_grad:
            if B.ndim == 2:  # one product over all rows (a 2-D ``a`` included), in blocks of b's rows
                rows = math.prod(A.shape[:-1])  # not -1: ambiguous when an axis is empty
                gb = matmul_arrays(A.reshape(rows, A.shape[-1]).T, g.reshape(rows, g.shape[-1]))
            else:
                gb = sum_to_shape(A.swapaxes(-1, -2) @ g, B.shape)
            gb = gb.reshape(b.shape)
        return ga, gb

    return make(out, (a, b), backward)


def _check_square(A: Tensor, op: str) -> None:
    if A.ndim < 2 or A.shape[-1] != A.shape[-2]:
        raise ValueError(f"{op}: expected square matrices of shape (..., n, n), got {A.shape}")


def _cholesky_array(A: Tensor, op: str) -> Any:
    xp = A.xp
    if not bool(xp.isfinite(A.data).all()):
        raise ValueError(f"{op}: the matrix of shape {A.shape} has NaN or infinite entries")
    try:
        L = xp.linalg.cholesky(A.data)
    except Exception as exc:  # numpy.linalg.LinAlgError
        raise ValueError(
            f"{op}: a matrix of shape {A.shape[-2:]} is not symmetric positive-definite"
        ) from exc
    if xp is not np and bool(xp.isnan(L).any()):  # CuPy signals with NaN
        raise ValueError(f"{op}: a matrix of shape {A.shape[-2:]} is not symmetric positive-definite")
    return L


def _tri_inverse(L: Any, xp: Any) -> Any:
    """L^{-1} of lower-triangular L, by a solve against the identity."""
    eye = xp.broadcast_to(xp.eye(L.shape[-1], dtype=L.dtype), L.shape)
    return xp.linalg.solve(L, eye)


def cholesky(A: Tensor) -> Tensor:
    """Lower-triangular L with L L^T = A, for symmetric positive-definite A.

    VJP (Murray 2016), with Phi = lower triangle with the diagonal halved:
    dL/dA = sym(L^{-T} Phi(L^T Gbar) L^{-1}).
    """
    _check_square(A, "cholesky")
    L = _cholesky_array(A, "cholesky")

    def backward(g: Any) -> tuple[Any]:
        xp = A.xp
        Linv = _tri_inverse(L, xp)
        P = xp.tril(L.swapaxes(-1, -2) @ g)
        P -= 0.5 * xp.tril(xp.triu(P))  # halve the diagonal
        S = Linv.swapaxes(-1, -2) @ P @ Linv
        return (0.5 * (S + S.swapaxes(-1, -2)),)

    return make(L, (A,), backward)


def logdet(A: Tensor) -> Tensor:
    """log det A of symmetric positive-definite A = 2 sum_i log L_ii, via Cholesky.

    VJP: d logdet / dA = A^{-1} = L^{-T} L^{-1}, with L^{-1} from a triangular solve.
    """
    _check_square(A, "logdet")
    L = _cholesky_array(A, "logdet")
    xp = A.xp
    out = 2 * xp.log(xp.diagonal(L, axis1=-2, axis2=-1)).sum(axis=-1)

    def backward(g: Any) -> tuple[Any]:
        Linv = _tri_inverse(L, xp)
        return (g[..., None, None] * (Linv.swapaxes(-1, -2) @ Linv),)

    return make(out, (A,), backward)


def solve(A: Tensor, B: Tensor) -> Tensor:
    """X = A^{-1} B for A of shape (..., n, n) and B of shape (..., n, k).

    VJPs: dL/dB = A^{-T} g, dL/dA = -(dL/dB) X^T.
    """
    A, B = operands(A, B, "solve")
    _check_square(A, "solve")
    if B.ndim < 2 or B.shape[-2] != A.shape[-1]:
        raise ValueError(
            f"solve: B must have shape (..., {A.shape[-1]}, k) for A of shape {A.shape}, got {B.shape}"
        )
    xp = A.xp
    X = xp.linalg.solve(A.data, B.data)

    def backward(g: Any) -> tuple[Any, Any]:
        gB = xp.linalg.solve(A.data.swapaxes(-1, -2), g)
        gA = -gB @ X.swapaxes(-1, -2) if A.requires_grad else None
        return gA, gB

    return make(X, (A, B), backward)
