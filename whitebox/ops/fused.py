"""Fused ops: each has one hand-written backward instead of a chain of small ones.

softmax, log_softmax and logsumexp are stable (shift by the max) and give no
NaN on a row masked entirely with -inf: softmax is 0 there, logsumexp -inf,
and no gradient flows. A NaN anywhere in a row makes the whole row NaN, as in
NumPy and PyTorch.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from whitebox import backend
from whitebox.host_threads import for_blocks
from whitebox.tensor import Tensor, make


def _shifted_exp(x: Any, axis: int) -> tuple[Any, Any, Any]:
    """(e, s, m): e = exp(x - m), s = sum(e), with m the row max (0 on an all -inf row).

    A NaN in a row makes its max NaN, so NaN spreads over the whole row.
    """
    xp = backend.array_module(x)
    m = x.max(axis=axis, keepdims=True)
    m = xp.where(m == -xp.inf, 0, m).astype(x.dtype, copy=False)
    e = x - m
    xp.exp(e, out=e)
    return e, e.sum(axis=axis, keepdims=True), m


def softmax(x: Tensor, axis: int = -1) -> Tensor:
    """softmax(x)_i = e^{x_i} / sum_j e^{x_j}; VJP: p * (g - sum(g p))."""
    xp = x.xp
    p, s, _ = _shifted_exp(x.data, axis)
    p /= xp.where(s > 0, s, 1)  # e is a fresh array: normalize it in place

    def backward(g: Any) -> tuple[Any]:
        dx = g - (g * p).sum(axis=axis, keepdims=True)
        dx *= p
        return (dx,)

    return make(p, (x,), backward)


def log_softmax(x: Tensor, axis: int = -1) -> Tensor:
    """x_i - logsumexp(x); VJP: g - softmax(x) sum(g)."""
    xp = x.xp
    e, s, m = _shifted_exp(x.data, axis)
    with np.errstate(divide="ignore"):
        lse = m + xp.log(xp.where(s > 0, s, 1))
    out = x.data - lse
    p = e
    p /= xp.where(s > 0, s, 1)

    def backward(g: Any) -> tuple[Any]:
        dx = p * g.sum(axis=axis, keepdims=True)
        xp.subtract(g, dx, out=dx)
        return (dx,)

    return make(out, (x,), backward)


def logsumexp(x: Tensor, axis: int = -1, keepdims: bool = False) -> Tensor:
    """log sum_j e^{x_j}; -inf on an all -inf row. VJP: g softmax(x)."""
    xp = x.xp
    e, s, m = _shifted_exp(x.data, axis)
    with np.errstate(divide="ignore"):
        out = m + xp.log(s)
    p = e / xp.where(s > 0, s, 1)
    if not keepdims:
        out = out.squeeze(axis)

    def backward(g: Any) -> tuple[Any]:
        return (p * (g if keepdims else xp.expand_dims(g, axis)),)

    return make(out, (x,), backward)


def layer_norm(
    x: Tensor, weight: Tensor | None = None, bias: Tensor | None = None, eps: float = 1e-5
) -> Tensor:
    """LayerNorm over the last axis: (x - mean) / sqrt(var + eps) * weight + bias.

    VJP with xhat the normalized input, r = 1/sqrt(var + eps), gh = g * weight:
    dx = r (gh - mean(gh) - xhat mean(gh xhat)); dweight = sum g xhat; dbias = sum g.
    The backward forms P = g xhat once: its column sums are dweight and P @ weight / d is
    mean(gh xhat); sums over rows (of length d) and columns are matrix-vector products.
    The elementwise passes run over blocks of rows on the host's threads (``host_threads``).
    """
    d = x.shape[-1]
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None and t.shape != (d,):
            raise ValueError(f"layer_norm: {name} must have shape ({d},) for input {x.shape}, got {t.shape}")
    xp = x.xp
    x2 = x.data.reshape(-1, d)
    rows = x2.shape[0]
    mean_vec = xp.full(d, 1 / d, dtype=x.dtype)  # row means as matrix-vector products (fast)
    mean = x2 @ mean_vec
    xhat, out = xp.empty_like(x2), xp.empty_like(x2)
    rstd = xp.empty((rows, 1), dtype=x.dtype)

    def normalize(r: slice) -> None:  # rows r of xhat, rstd and out (host_threads' contract)
        xh = xp.subtract(x2[r], mean[r, None], out=xhat[r])
        rstd[r] = (1 / xp.sqrt(xp.einsum("ij,ij->i", xh, xh) / d + eps))[:, None]
        xh *= rstd[r]
        if weight is not None:
            xp.multiply(xh, weight.data, out=out[r])
        else:
            out[r] = xh
        if bias is not None:
            out[r] += bias.data

    for_blocks(normalize, rows, x2)
    parents = tuple(t for t in (x, weight, bias) if t is not None)

    def backward(g: Any) -> tuple[Any, ...]:
        g2 = g.reshape(-1, d)
        P, gh = xp.empty_like(g2), xp.empty_like(g2)

        def products(r: slice) -> None:
            xp.multiply(g2[r], xhat[r], out=P[r])
            if weight is not None:
                xp.multiply(g2[r], weight.data, out=gh[r])
            else:
                gh[r] = g2[r]

        for_blocks(products, rows, g2)
        ones = xp.ones(rows, dtype=g2.dtype)
        dweight = ones @ P if weight is not None and weight.requires_grad else None
        proj = (P @ weight.data) * (1 / d) if weight is not None else P @ mean_vec
        mean_gh = gh @ mean_vec

        def combine(r: slice) -> None:
            p = xp.multiply(xhat[r], proj[r, None], out=P[r])  # P is free again: xhat mean(gh xhat)
            h = gh[r]
            h -= p
            h -= mean_gh[r, None]
            h *= rstd[r]

        for_blocks(combine, rows, g2)
        grads = [gh.reshape(x.shape)]
        if weight is not None:
            grads.append(dweight)
        if bias is not None:
            grads.append(ones @ g2 if bias.requires_grad else None)
        return tuple(grads)

    return make(out.reshape(x.shape), parents, backward)


def cross_entropy(
    logits: Tensor,
    targets: Any,
    label_smoothing: float = 0.0,
    ignore_index: int | None = None,
    reduction: str = "mean",
) -> Tensor:
    """Cross-entropy of integer ``targets`` (shape ``(...)``) under ``logits`` (``(..., C)``).

    With smoothing s the target distribution is q = (1 - s) onehot(t) + s / C and
    loss_i = -sum_c q_c log p_c. Positions whose target is ``ignore_index`` get no
    loss and no gradient; 'mean' averages over the others. VJP: (p - q) / n.
    """
    t = targets.data if isinstance(targets, Tensor) else targets
    t = backend.to_device(t if hasattr(t, "dtype") else logits.xp.asarray(t), logits.device)
    C = logits.shape[-1]
    if t.shape != logits.shape[:-1]:
        raise ValueError(
            f"cross_entropy: targets have shape {t.shape}; logits {logits.shape} need {logits.shape[:-1]}"
        )
    if t.dtype.kind not in "iu":
        raise TypeError(f"cross_entropy: targets must be integer class indices, got dtype {t.dtype}")
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"cross_entropy: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    xp = logits.xp
    x = logits.data.reshape(-1, C)
    t = t.reshape(-1)
    valid = t != ignore_index if ignore_index is not None else xp.ones(t.shape, dtype=bool)
    safe_t = xp.where(valid, t, 0)
    bad = (safe_t < 0) | (safe_t >= C)
    if t.size and bool(bad.any()):
        raise ValueError(
            f"cross_entropy: targets must lie in [0, {C}) (or equal ignore_index), "
            f"got {backend.to_numpy(t[bad])[:5]}"
        )
    e, s, m = _shifted_exp(x, -1)
    logp = x - (m + xp.log(s))
    rows = xp.arange(x.shape[0])
    nll = -logp[rows, safe_t]
    if label_smoothing:
        nll = (1 - label_smoothing) * nll - label_smoothing * logp.mean(axis=-1)
    nll = nll * valid
    n_valid = max(int(valid.sum()), 1)
    if reduction == "mean":
        out = nll.sum() / n_valid
    elif reduction == "sum":
        out = nll.sum()
    else:
        out = nll.reshape(logits.shape[:-1])

    def backward(g: Any) -> tuple[Any]:
        grad = e / s
        if label_smoothing:
            grad -= label_smoothing / C
        grad[rows, safe_t] -= 1 - label_smoothing
        grad *= valid[:, None]
        scale = g.reshape(-1, 1) if reduction == "none" else (g / n_valid if reduction == "mean" else g)
        return ((grad * scale).reshape(logits.shape),)

    return make(out.astype(logits.dtype, copy=False), (logits,), backward)


def dropout(x: Tensor, p: float, training: bool = True) -> Tensor:
    """Zero each entry with probability p and scale the rest by 1/(1-p) (inverted dropout)."""
    if not 0 <= p < 1:
        raise ValueError(f"dropout: p must be in [0, 1), got {p}")
    if not training or p == 0:
        return x
    keep = backend.device_rng(x.device).random(x.shape, dtype=np.float32) >= p
    mask = keep.astype(x.dtype) * (1 / (1 - p))
    return make(x.data * mask, (x,), lambda g: (g * mask,))


def embedding(ids: Any, weight: Tensor) -> Tensor:
    """Rows of ``weight`` picked by integer ``ids``; VJP scatter-adds into the rows used."""
    idx = ids.data if isinstance(ids, Tensor) else backend.to_device(weight.xp.asarray(ids), weight.device)
    if idx.dtype.kind not in "iu":
        raise TypeError(f"embedding: ids must be integers, got dtype {idx.dtype}")
    n = weight.shape[0]
    if idx.size and (int(idx.min()) < 0 or int(idx.max()) >= n):
        raise ValueError(
            f"embedding: ids must lie in [0, {n}), got values in [{int(idx.min())}, {int(idx.max())}]"
        )

    def backward(g: Any) -> tuple[Any]:
        full = weight.xp.zeros(weight.shape, dtype=g.dtype)
        backend.scatter_add(full, idx.reshape(-1), g.reshape(-1, weight.shape[1]))
        return (full,)

    return make(weight.data[idx], (weight,), backward)
