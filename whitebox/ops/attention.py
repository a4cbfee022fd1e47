"""Fused multi-head self-attention with one hand-written backward.

``tied_attention`` is CRATE's subspace self-attention (query = key = value = w);
``attention`` is the standard one with separate q, k, v (packed in one array). Both take and return
tokens as rows with the heads side by side in the feature axis, ``(..., N, H*p)``,
the layout a linear projection produces and consumes, so no head split or merge
appears as a separate op in the graph.

Per head, with S the scaled scores, A = softmax(S) over each row (masked scores
are -inf and get probability 0) and out = A v, the VJPs for g = dL/d(out) are

    dv = A^T g,   dA = g v^T,   dS = A * (dA - rowsum(dA * A)),
    tied (S = s w w^T):          dw = A^T g + s (dS + dS^T) w,
    separate (S = s q k^T):      dq = s dS k,   dk = s dS^T q.

Attention dropout (as in the official CRATE and ViT code) multiplies A by a
keep mask / (1 - p) before the product with v; the backward applies the same
mask to dA and uses the undropped A in the softmax VJP.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from whitebox import backend
from whitebox.host_threads import for_blocks
from whitebox.tensor import Tensor, make


def _split_heads(x: Any, heads: int) -> Any:
    """(..., N, H*p) -> (..., H, N, p), a strided view (no copy)."""
    *lead, n, hp = x.shape
    if hp % heads:
        raise ValueError(f"attention: feature axis {hp} (shape {x.shape}) is not divisible by {heads} heads")
    return x.reshape(*lead, n, heads, hp // heads).swapaxes(-3, -2)


def _merge_heads(x: Any) -> Any:
    """(..., H, N, p) -> (..., N, H*p), one contiguous copy."""
    *lead, h, n, p = x.shape
    return x.swapaxes(-3, -2).reshape(*lead, n, h * p)


def _mask_array(mask: Any, like: Tensor, scores: tuple[int, ...]) -> Any:
    """The boolean mask as a device array, checked to broadcast to the ``scores`` shape."""
    if mask is None:
        return None
    m = mask.data if isinstance(mask, Tensor) else mask
    m = backend.to_device(like.xp.asarray(m), like.device)
    if m.dtype != bool:
        raise TypeError(f"attention: mask must be boolean (True = may attend), got dtype {m.dtype}")
    try:
        if np.broadcast_shapes(m.shape, scores) != scores:
            raise ValueError
    except ValueError:
        raise ValueError(
            f"attention: mask of shape {m.shape} does not broadcast to the scores {scores} "
            "(batch, heads, N, N)"
        ) from None
    return m


def _block(a: Any, r: slice, ndim: int) -> Any:
    """Rows ``r`` of the leading axis of an array broadcast against ``ndim``-dimensional scores:
    the array itself where that axis is missing or has length 1 (it broadcasts)."""
    return a if a is None or a.ndim < ndim or a.shape[0] == 1 else a[r]


def _rowsum(x: Any) -> Any:
    """Sum over the last axis, keeping it: a matrix-vector product, much faster than
    ``x.sum(-1)`` over short rows."""
    xp = backend.array_module(x)
    return (x @ xp.ones(x.shape[-1], dtype=x.dtype))[..., None]


def _probabilities(S: Any, mask: Any, scale: float, symmetric: bool = False) -> Any:
    """Row softmax of the scores ``scale * S``, in place; entries where ``mask`` is False get 0.

    A row masked entirely gives all zeros (no NaN). For a ``symmetric`` S without mask the
    shift is the column max, the same numbers as the row max but a faster reduction.
    """
    xp = backend.array_module(S)
    if mask is not None:
        xp.copyto(S, -xp.inf, where=~mask)
        m = S.max(axis=-1, keepdims=True)
        m = xp.where(xp.isfinite(m), m, 0).astype(S.dtype, copy=False)
    elif symmetric:
        m = S.max(axis=-2, keepdims=True).swapaxes(-1, -2)
    else:
        m = S.max(axis=-1, keepdims=True)
    S -= m
    S *= scale
    xp.exp(S, out=S)
    total = _rowsum(S)
    if mask is not None:
        total = xp.where(total > 0, total, 1)
    S /= total
    return S


def _dropout_mask(shape: tuple[int, ...], p: float, like: Any) -> Any:
    keep = backend.device_rng(backend.device_of(like)).random(shape, dtype=np.float32) >= p
    return keep.astype(like.dtype) * (1 / (1 - p))


def _head_rowsum(x: Any, heads: int) -> Any:
    """(..., N, H*p) -> (..., H, N, 1): the sum of each head's p features."""
    *lead, n, hp = x.shape
    xp = backend.array_module(x)
    sums = x.reshape(-1, hp // heads) @ xp.ones(hp // heads, dtype=x.dtype)
    return sums.reshape(*lead, n, heads).swapaxes(-1, -2)[..., None]


def _softmax_vjp(dA: Any, A: Any, rowsum: Any) -> Any:
    """dS = A * (dA - rowsum(dA * A)), computed in the buffer of ``dA``; ``rowsum`` given."""
    dA -= rowsum
    dA *= A
    return dA


def _check(p: float, scale: float | None, head_dim: int) -> float:
    if not 0 <= p < 1:
        raise ValueError(f"attention: dropout must be in [0, 1), got {p}")
    return head_dim**-0.5 if scale is None else scale


def _attend(
    load: Callable[[slice], None],
    Q: Any,
    Kt: Any,
    V: Any,
    *,
    mask: Any,
    scale: float,
    keep: Any,
    symmetric: bool,
    out_heads: Any,
) -> tuple[Any, Any]:
    """Per head A = softmax(scale Q Kt) (masked) and Ad = A * keep (dropout's mask, or None);
    writes Ad V into ``out_heads``, the output's (..., H, N, p) view, and returns (A, Ad).
    Q, Kt, V are (..., H, N, p), (..., H, p, N), (..., H, N, p) arrays that ``load(r)`` fills
    for the leading indices r. The heads of each leading index are independent, so blocks of
    the leading axis do all of it, the head-splitting copies included, on the host's threads
    (``host_threads``)."""
    xp = backend.array_module(Q)
    A = xp.empty((*Q.shape[:-1], Kt.shape[-1]), dtype=Q.dtype)
    Ad = A if keep is None else xp.empty_like(A)

    def block(r: slice) -> None:
        load(r)
        S = xp.matmul(Q[r], Kt[r], out=A[r])
        _probabilities(S, _block(mask, r, A.ndim), scale, symmetric)
        if keep is not None:
            xp.multiply(S, keep[r], out=Ad[r])
        out_heads[r] = Ad[r] @ V[r]

    for_blocks(block, A.shape[0], A)
    return A, Ad


def tied_attention(
    w: Tensor,
    heads: int,
    scale: float | None = None,
    mask: Any = None,
    *,
    dropout: float = 0.0,
    training: bool = True,
) -> tuple[Tensor, Any]:
    """Self-attention with query = key = value = w, per head: softmax(s w w^T) w.

    ``w`` has shape (..., N, H*p) (H = ``heads`` blocks of p features); ``scale`` s
    defaults to 1/sqrt(p); ``mask`` is boolean, broadcastable to (..., H, N, N),
    True where a token may attend. Returns ``(out, attn)``: out (..., N, H*p) and
    the attention probabilities attn (..., H, N, N) as a backend array (before
    dropout), which the op keeps anyway for its backward.

    The backward uses rowsum(dA * A) = rowsum(g * out) per head (no N x N temporary).
    """
    xp = w.xp
    w_heads = _split_heads(w.data, heads)  # (..., H, N, p), a view
    W = xp.empty(w_heads.shape, dtype=w.dtype)  # contiguous copies: faster batched products
    Wt = xp.empty((*W.shape[:-2], W.shape[-1], W.shape[-2]), dtype=w.dtype)

    def load(r: slice) -> None:
        W[r] = w_heads[r]
        Wt[r] = W[r].swapaxes(-1, -2)

    s = _check(dropout, scale, W.shape[-1])
    scores = (*W.shape[:-1], W.shape[-2])
    keep = _dropout_mask(scores, dropout, W) if training and dropout > 0 else None
    out = xp.empty(w.shape, dtype=w.dtype)
    m = _mask_array(mask, w, scores)
    A, Ad = _attend(
        load, W, Wt, W, mask=m, scale=s, keep=keep, symmetric=True, out_heads=_split_heads(out, heads)
    )

    def backward(g: Any) -> tuple[Any]:
        g_heads = _split_heads(g, heads)
        rowsum = _head_rowsum(g * out, heads)
        grad = xp.empty(w.shape, dtype=xp.result_type(g.dtype, A.dtype))
        grad_heads = _split_heads(grad, heads)

        def block(r: slice) -> None:  # the heads of leading indices r (host_threads' contract)
            G = xp.ascontiguousarray(g_heads[r])
            dW = Ad[r].swapaxes(-1, -2) @ G
            dA = G @ Wt[r]
            if keep is not None:
                dA *= keep[r]
            dS = _softmax_vjp(dA, A[r], rowsum[r])
            dS *= s
            # s (dS + dS^T) w as two products: forming dS + dS^T reads dS across its rows, a
            # strided pass over N x N that costs more than the second product (4.6x at N = 1024)
            dW += dS @ W[r]
            dW += dS.swapaxes(-1, -2) @ W[r]
            grad_heads[r] = dW

        for_blocks(block, A.shape[0], A)
        return (grad,)

    return make(out, (w,), backward), A


def attention(
    qkv: Tensor,
    heads: int,
    scale: float | None = None,
    mask: Any = None,
    *,
    dropout: float = 0.0,
    training: bool = True,
) -> tuple[Tensor, Any]:
    """Standard scaled dot-product self-attention, per head: softmax(s q k^T) v.

    ``qkv`` has shape (..., N, 3*H*p): q, k, v side by side, as one linear layer
    with three times the width produces them (``to_qkv(x).chunk(3, dim=-1)`` in
    PyTorch). Otherwise as ``tied_attention``; returns ``(out, attn)``.
    """
    xp = qkv.xp
    if qkv.shape[-1] % 3:
        raise ValueError(f"attention: the last axis of qkv {qkv.shape} must hold q, k and v (3 equal parts)")
    views = [_split_heads(t, heads) for t in xp.split(qkv.data, 3, axis=-1)]  # q, k, v (..., H, N, p)
    Q, K, V = (xp.empty(views[0].shape, dtype=qkv.dtype) for _ in range(3))

    def load(r: slice) -> None:
        for dst, src in zip((Q, K, V), views, strict=True):
            dst[r] = src[r]

    s = _check(dropout, scale, Q.shape[-1])
    scores = (*Q.shape[:-1], K.shape[-2])
    keep = _dropout_mask(scores, dropout, Q) if training and dropout > 0 else None
    out = xp.empty((*qkv.shape[:-1], qkv.shape[-1] // 3), dtype=qkv.dtype)
    m = _mask_array(mask, qkv, scores)
    A, Ad = _attend(
        load,
        Q,
        K.swapaxes(-1, -2),
        V,
        mask=m,
        scale=s,
        keep=keep,
        symmetric=False,
        out_heads=_split_heads(out, heads),
    )

    def backward(g: Any) -> tuple[Any]:
        g_heads = _split_heads(g, heads)
        rowsum = _head_rowsum(g * out, heads)
        grad = xp.empty(qkv.shape, dtype=xp.result_type(g.dtype, A.dtype))
        dQ, dK, dV = (_split_heads(t, heads) for t in xp.split(grad, 3, axis=-1))

        def block(r: slice) -> None:  # the heads of leading indices r (host_threads' contract)
            G = xp.ascontiguousarray(g_heads[r])
            dA = G @ V[r].swapaxes(-1, -2)
            if keep is not None:
                dA *= keep[r]
            dS = _softmax_vjp(dA, A[r], rowsum[r])
            dS *= s
            dQ[r] = dS @ K[r]
            dK[r] = dS.swapaxes(-1, -2) @ Q[r]
            dV[r] = Ad[r].swapaxes(-1, -2) @ G

        for_blocks(block, A.shape[0], A)
        return (grad,)

    return make(out, (qkv,), backward), A


def cached_attention(
    q: Any, k: Any, v: Any, heads: int, *, scale: float | None = None, mask: Any = None
) -> tuple[Any, Any]:
    """Attention of new queries over stored keys and values, for generation (no graph, no backward).

    Per head softmax(s q k^T) v, with ``q`` (..., t, H*p) the t new tokens' queries and ``k``,
    ``v`` (..., T, H*p) the keys and values of all T tokens (past and new); ``mask`` is
    boolean, broadcastable to (..., H, t, T), True where a token may attend. Takes and returns
    backend arrays: ``(out, attn)``, out (..., t, H*p) and attn (..., H, t, T).
    """
    xp = backend.array_module(q)
    Q, K, V = (xp.ascontiguousarray(_split_heads(t, heads)) for t in (q, k, v))
    if mask is not None:
        mask = backend.to_device(xp.asarray(mask), backend.device_of(q))
    A = _probabilities(Q @ K.swapaxes(-1, -2), mask, _check(0.0, scale, Q.shape[-1]))
    return _merge_heads(A @ V), A
