"""Ops that move values around without arithmetic: views, indexing, joining."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np

from whitebox import backend
from whitebox.tensor import Tensor, make


def reshape(a: Tensor, shape: Sequence[int]) -> Tensor:
    """A view with a new shape (one entry may be -1)."""
    src = a.shape
    try:
        out = a.data.reshape(tuple(shape))
    except ValueError as exc:
        raise ValueError(f"reshape: cannot reshape a tensor of shape {src} into {tuple(shape)}") from exc
    return make(out, (a,), lambda g: (g.reshape(src),))


def transpose(a: Tensor, axes: Sequence[int] | None = None) -> Tensor:
    """Permute axes (reverse them when ``axes`` is None); a view."""
    if axes is None:
        axes = tuple(range(a.ndim))[::-1]
    else:
        given = tuple(axes)
        if any(not -a.ndim <= ax < a.ndim for ax in given):
            raise ValueError(
                f"transpose: axes {given} are out of range for a tensor with {a.ndim} dimensions"
            )
        axes = tuple(ax % a.ndim for ax in given)
    if sorted(axes) != list(range(a.ndim)):
        raise ValueError(f"transpose: axes {axes} are not a permutation of {a.ndim} axes")
    inverse = tuple(sorted(range(a.ndim), key=axes.__getitem__))
    return make(a.data.transpose(axes), (a,), lambda g: (g.transpose(inverse),))


permute = transpose


def swapaxes(a: Tensor, axis1: int, axis2: int) -> Tensor:
    return make(a.data.swapaxes(axis1, axis2), (a,), lambda g: (g.swapaxes(axis1, axis2),))


def expand(a: Tensor, shape: Sequence[int]) -> Tensor:
    """Broadcast to ``shape`` (a read-only view); the gradient sums back."""
    return make(a.xp.broadcast_to(a.data, tuple(shape)), (a,), lambda g: (g,))


def _selects_once(index: Any) -> bool:
    """True when ``index`` cannot pick one element twice: slices, ints, None, ..., one mask."""
    items = index if isinstance(index, tuple) else (index,)
    if len(items) == 1 and getattr(getattr(items[0], "dtype", None), "kind", None) == "b":
        return True
    return all(isinstance(i, int | np.integer | slice) or i is None or i is Ellipsis for i in items)


def _raw_index(index: Any) -> Any:
    if isinstance(index, Tensor):
        return index.data
    if isinstance(index, tuple):
        return tuple(i.data if isinstance(i, Tensor) else i for i in index)
    return index


def getitem(a: Tensor, index: Any) -> Tensor:
    """``a[index]``: basic slicing (a view) or gather by integer/boolean arrays.

    Backward scatters the gradient into zeros; gathered positions that repeat
    accumulate (scatter-add).
    """
    index = _raw_index(index)
    out = a.data[index]
    once = _selects_once(index)

    def backward(g: Any) -> tuple[Any]:
        full = a.xp.zeros(a.shape, dtype=g.dtype)
        if once:
            full[index] = g
        else:
            backend.scatter_add(full, index, g)
        return (full,)

    return make(out, (a,), backward)


def concat(tensors: Sequence[Tensor], axis: int = 0) -> Tensor:
    """Join along an existing axis."""
    tensors = tuple(tensors)
    xp = tensors[0].xp
    out = xp.concatenate([t.data for t in tensors], axis=axis)
    bounds = []
    total = 0
    for t in tensors[:-1]:
        total += t.shape[axis]
        bounds.append(total)
    return make(out, tensors, lambda g: tuple(xp.split(g, bounds, axis=axis)))


def stack(tensors: Sequence[Tensor], axis: int = 0) -> Tensor:
    """Join along a new axis."""
    tensors = tuple(tensors)
    xp = tensors[0].xp
    out = xp.stack([t.data for t in tensors], axis=axis)
    lead = (slice(None),) * (axis % out.ndim)
    # basic indexing: each gradient is a view of g (xp.take would copy it)
    return make(out, tensors, lambda g: tuple(g[(*lead, i)] for i in range(len(tensors))))


def split(a: Tensor, sections: int | Sequence[int], axis: int = 0) -> list[Tensor]:
    """Split into equal parts (int) or at the given indices, as ``numpy.split``."""
    return [
        getitem(a, (slice(None),) * (axis % a.ndim) + (slice(lo, hi),))
        for lo, hi in _split_bounds(a.shape[axis], sections)
    ]


def _split_bounds(n: int, sections: int | Sequence[int]) -> list[tuple[int, int]]:
    if isinstance(sections, int):
        if sections <= 0 or n % sections:
            raise ValueError(f"split: an axis of length {n} does not split into {sections} equal parts")
        step = n // sections
        cuts = [step * i for i in range(1, sections)]  # not range(step, n, step): step is 0 when n is
    else:
        cuts = list(sections)
    edges = [0, *cuts, n]
    return list(itertools.pairwise(edges))
