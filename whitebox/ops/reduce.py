"""Reductions over axes: sum, mean, max, var (with NumPy's ``axis``/``keepdims``)."""

from __future__ import annotations

from typing import Any

from whitebox.tensor import Tensor, make


def normalize_axes(axis: Any, ndim: int) -> tuple[int, ...]:
    """``axis`` (None, int or tuple, possibly negative) as a sorted tuple of non-negative axes."""
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if hasattr(axis, "__index__") else tuple(axis)  # an int or a NumPy integer
    out = []
    for ax in axes:
        if not -ndim <= ax < ndim:
            raise ValueError(f"axis {ax} is out of range for a tensor with {ndim} dimensions")
        out.append(int(ax) % ndim)
    return tuple(sorted(set(out)))


def _keep(g: Any, axes: tuple[int, ...], keepdims: bool, shape: tuple[int, ...]) -> Any:
    """Reinsert the reduced axes (as size 1) so ``g`` broadcasts against an input of ``shape``."""
    if keepdims:
        return g
    return g.reshape(tuple(1 if i in axes else n for i, n in enumerate(shape)))


def sum(a: Tensor, axis: Any = None, keepdims: bool = False) -> Tensor:  # noqa: A001
    axes = normalize_axes(axis, a.ndim)
    shape = a.shape
    out = a.data.sum(axis=axes, keepdims=keepdims)
    return make(out, (a,), lambda g: (a.xp.broadcast_to(_keep(g, axes, keepdims, shape), shape),))


def mean(a: Tensor, axis: Any = None, keepdims: bool = False) -> Tensor:
    axes = normalize_axes(axis, a.ndim)
    count = 1
    for ax in axes:
        count *= a.shape[ax]
    shape = a.shape
    out = a.data.mean(axis=axes, keepdims=keepdims)
    return make(out, (a,), lambda g: (a.xp.broadcast_to(_keep(g, axes, keepdims, shape) / count, shape),))


def max(a: Tensor, axis: Any = None, keepdims: bool = False) -> Tensor:  # noqa: A001
    """Maximum; tied maxima share the gradient equally."""
    axes = normalize_axes(axis, a.ndim)
    shape = a.shape
    out_keep = a.data.max(axis=axes, keepdims=True)
    out = out_keep if keepdims else out_keep.reshape(tuple(n for i, n in enumerate(a.shape) if i not in axes))

    def backward(g: Any) -> tuple[Any]:
        hit = a.data == out_keep
        share = hit / hit.sum(axis=axes, keepdims=True, dtype=a.dtype)  # in a's dtype, no float64 detour
        return (share * _keep(g, axes, keepdims, shape),)

    return make(out, (a,), backward)


def var(a: Tensor, axis: Any = None, keepdims: bool = False, ddof: int = 0) -> Tensor:
    """Variance sum((a - mean)^2) / (n - ddof); d/da = 2 (a - mean) / (n - ddof)."""
    axes = normalize_axes(axis, a.ndim)
    count = 1
    for ax in axes:
        count *= a.shape[ax]
    shape = a.shape
    centered = a.data - a.data.mean(axis=axes, keepdims=True)
    denom = count - ddof
    out = (centered * centered).sum(axis=axes, keepdims=keepdims) / denom
    return make(out, (a,), lambda g: (_keep(g, axes, keepdims, shape) * centered * (2 / denom),))
