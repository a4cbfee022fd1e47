"""The Tensor and reverse-mode automatic differentiation.

A ``Tensor`` wraps one backend array (``.data``, NumPy or CuPy). Every op that
involves a tensor with ``requires_grad`` records, on its output, the tuple of
input tensors (``_parents``) and a closure ``_backward(g)`` that maps the
gradient g = dL/d(out) to the vector-Jacobian products dL/d(input) = g . d(out)/d(input),
one per parent.

``loss.backward()`` sorts the graph topologically (iteratively, so a graph
10,000 ops deep is fine), walks it from the loss to the leaves, sums gradients
that reach a tensor along several paths, undoes broadcasting in one place
(``sum_to_shape``), accumulates into the leaves' ``.grad`` and frees the graph.
"""

from __future__ import annotations

import contextlib
import operator
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from whitebox import backend

_grad_enabled = True


class no_grad(contextlib.ContextDecorator):
    """Context manager / decorator: ops inside record no graph."""

    def __init__(self) -> None:
        # a stack, not one slot: a decorated function that recurses re-enters this same instance
        self._prev: list[bool] = []

    def __enter__(self) -> None:
        global _grad_enabled
        self._prev.append(_grad_enabled)
        _grad_enabled = False

    def __exit__(self, *exc: object) -> None:
        global _grad_enabled
        _grad_enabled = self._prev.pop()


def is_grad_enabled() -> bool:
    return _grad_enabled


def sum_to_shape(g: Any, shape: tuple[int, ...]) -> Any:
    """Undo broadcasting: sum ``g`` over the axes that broadcasting added or stretched."""
    if g.shape == shape:
        return g
    lead = g.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(
        lead + i for i, n in enumerate(shape) if n == 1 and g.shape[lead + i] != 1
    )
    out = g.sum(axis=axes, keepdims=True) if axes else g
    if lead:
        out = out.reshape(out.shape[lead:])
    return out.reshape(shape)


def _as_array(data: Any, dtype: Any, device: str | None) -> Any:
    """A backend array from ``data``; Python floats (float64 by NumPy's rule) become float32."""
    if isinstance(data, Tensor):
        data = data.data
    if _is_backend_array(data):
        arr = data if device is None else backend.to_device(data, device)
    else:
        arr = np.asarray(data)
        if dtype is None and arr.dtype == np.float64:
            dtype = backend.DEFAULT_DTYPE
        arr = backend.xp_for(device or backend.default_device()).asarray(arr)
    if dtype is not None and arr.dtype != dtype:
        arr = arr.astype(dtype)
    if arr.dtype.kind not in "biufc":
        raise TypeError(f"Tensor: data must be numbers or booleans, got dtype {arr.dtype}")
    return arr


def _comparison(op: Callable[[Any, Any], Any]) -> Callable[[Tensor, Any], Tensor]:
    """The method ``self <op> other`` on the arrays, as a boolean Tensor outside the graph."""
    return lambda self, other: Tensor(op(self.data, _raw(other)))


def _is_backend_array(x: Any) -> bool:
    return isinstance(x, np.ndarray) or hasattr(x, "__cuda_array_interface__")


class Tensor:
    """An n-dimensional array that can record the ops applied to it.

    ``Tensor(data)`` keeps a NumPy/CuPy array's dtype (float64 stays float64);
    Python floats and lists become float32 (``backend.DEFAULT_DTYPE``).
    """

    __slots__ = ("__weakref__", "_backward", "_parents", "data", "grad", "requires_grad")
    __array_priority__ = 1000  # so ndarray + Tensor defers to Tensor.__radd__

    def __init__(
        self,
        data: Any,
        requires_grad: bool = False,
        dtype: Any = None,
        device: str | None = None,
    ) -> None:
        self.data = _as_array(data, dtype, device)
        if requires_grad and self.data.dtype.kind not in "fc":
            raise TypeError(
                f"Tensor: only floating-point tensors can require gradients, got dtype {self.data.dtype}"
            )
        self.grad: Any = None
        self.requires_grad = bool(requires_grad)
        self._parents: tuple[Tensor, ...] = ()
        self._backward: Callable[[Any], Sequence[Any]] | None = None

    # ---- array facts -------------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        return self.data.shape

    @property
    def dtype(self) -> Any:
        return self.data.dtype

    @property
    def ndim(self) -> int:
        return self.data.ndim

    @property
    def size(self) -> int:
        return self.data.size

    @property
    def device(self) -> str:
        return backend.device_of(self.data)

    @property
    def xp(self) -> Any:
        return backend.array_module(self.data)

    def __len__(self) -> int:
        return len(self.data)

    def __repr__(self) -> str:
        grad = ", requires_grad=True" if self.requires_grad else ""
        dev = "" if self.device == "cpu" else f", device='{self.device}'"
        return f"Tensor({backend.to_numpy(self.data)!r}{dev}{grad})"

    def numpy(self) -> np.ndarray:
        """A host NumPy array of the values (a copy when the tensor is on the GPU)."""
        return backend.to_numpy(self.data)

    def item(self) -> float:
        return self.data.item()

    def tolist(self) -> Any:
        return self.numpy().tolist()

    def detach(self) -> Tensor:
        """The same values, cut from the graph (shares memory)."""
        return Tensor(self.data)

    def to(self, device: str) -> Tensor:
        """A copy on ``device`` ('cpu' or 'cuda'), differentiable; self when already there."""
        device = backend.check_device(device)
        if self.device == device:
            return self
        src = self.device
        return make(
            backend.to_device(self.data, device),
            (self,),
            lambda g: (backend.to_device(g, src),),
        )

    def astype(self, dtype: Any) -> Tensor:
        """Cast to ``dtype``; the gradient is cast back."""
        if self.dtype == dtype:
            return self
        src = self.dtype
        return make(self.data.astype(dtype), (self,), lambda g: (g.astype(src),))

    def zero_grad(self) -> None:
        self.grad = None

    # ---- autograd ----------------------------------------------------------
    def backward(self, grad: Any = None, retain_graph: bool = False) -> None:
        """Accumulate dL/d(leaf) into every leaf's ``.grad``, L being this tensor.

        ``grad`` is dL/d(self); it may be omitted only for a one-element tensor.
        """
        if not self.requires_grad:
            raise RuntimeError(
                "backward() on a tensor that does not require grad: no input of the "
                "ops that made it has requires_grad=True (or it was made under no_grad)"
            )
        if grad is None:
            if self.size != 1:
                raise RuntimeError(
                    f"backward() on a non-scalar tensor of shape {self.shape} needs "
                    "grad= (dL/d(this tensor), same shape); only a one-element tensor "
                    "gets the implicit gradient 1"
                )
            grad = self.xp.ones_like(self.data)
        else:
            grad = _as_array(grad, self.dtype, self.device)
            if grad.shape != self.shape:
                raise ValueError(f"backward(grad=...): grad has shape {grad.shape}, the tensor {self.shape}")
        grads: dict[int, Any] = {id(self): grad}
        for node in reversed(_toposort(self)):
            g = grads.pop(id(node), None)
            if g is None:
                continue
            if node._backward is None:  # a leaf: keep an owned copy
                node.grad = g.copy() if node.grad is None else node.grad + g
                continue
            for parent, vjp in zip(node._parents, node._backward(g), strict=True):
                if vjp is None or not parent.requires_grad:
                    continue
                pg = vjp
                if pg.shape != parent.shape:
                    pg = sum_to_shape(pg, parent.shape)
                if pg.dtype != parent.dtype:  # e.g. a float32 weight used with float64 data
                    pg = pg.astype(parent.dtype)
                key = id(parent)
                grads[key] = grads[key] + pg if key in grads else pg
            if not retain_graph:  # free the graph; a later backward through it raises
                node._backward, node._parents = _freed, ()

    # ---- operators (implemented in whitebox.ops) ----------------------------
    def __add__(self, other: Any) -> Tensor:
        return _ops.add(self, other)

    def __radd__(self, other: Any) -> Tensor:
        return _ops.add(other, self)

    def __sub__(self, other: Any) -> Tensor:
        return _ops.sub(self, other)

    def __rsub__(self, other: Any) -> Tensor:
        return _ops.sub(other, self)

    def __mul__(self, other: Any) -> Tensor:
        return _ops.mul(self, other)

    def __rmul__(self, other: Any) -> Tensor:
        return _ops.mul(other, self)

    def __truediv__(self, other: Any) -> Tensor:
        return _ops.div(self, other)

    def __rtruediv__(self, other: Any) -> Tensor:
        return _ops.div(other, self)

    def __pow__(self, other: Any) -> Tensor:
        return _ops.pow(self, other)

    def __rpow__(self, other: Any) -> Tensor:
        return _ops.pow(other, self)

    def __neg__(self) -> Tensor:
        return _ops.neg(self)

    def __matmul__(self, other: Any) -> Tensor:
        return _ops.matmul(self, other)

    def __rmatmul__(self, other: Any) -> Tensor:
        return _ops.matmul(other, self)

    def __getitem__(self, index: Any) -> Tensor:
        return _ops.getitem(self, index)

    # comparisons give plain (non-differentiable) boolean tensors; hashing stays by identity
    __eq__ = _comparison(operator.eq)  # type: ignore[assignment]
    __ne__ = _comparison(operator.ne)  # type: ignore[assignment]
    __lt__, __le__ = _comparison(operator.lt), _comparison(operator.le)
    __gt__, __ge__ = _comparison(operator.gt), _comparison(operator.ge)
    __hash__ = object.__hash__

    def exp(self) -> Tensor:
        return _ops.exp(self)

    def log(self) -> Tensor:
        return _ops.log(self)

    def sqrt(self) -> Tensor:
        return _ops.sqrt(self)

    def tanh(self) -> Tensor:
        return _ops.tanh(self)

    def sigmoid(self) -> Tensor:
        return _ops.sigmoid(self)

    def relu(self) -> Tensor:
        return _ops.relu(self)

    def abs(self) -> Tensor:
        return _ops.abs(self)

    def clip(self, lo: float | None = None, hi: float | None = None) -> Tensor:
        return _ops.clip(self, lo, hi)

    def sum(self, axis: Any = None, keepdims: bool = False) -> Tensor:
        return _ops.sum(self, axis, keepdims)

    def mean(self, axis: Any = None, keepdims: bool = False) -> Tensor:
        return _ops.mean(self, axis, keepdims)

    def max(self, axis: Any = None, keepdims: bool = False) -> Tensor:
        return _ops.max(self, axis, keepdims)

    def var(self, axis: Any = None, keepdims: bool = False, ddof: int = 0) -> Tensor:
        return _ops.var(self, axis, keepdims, ddof)

    def reshape(self, *shape: Any) -> Tensor:
        return _ops.reshape(
            self, shape[0] if len(shape) == 1 and isinstance(shape[0], tuple | list) else shape
        )

    def transpose(self, *axes: Any) -> Tensor:
        return _ops.transpose(
            self, axes[0] if len(axes) == 1 and isinstance(axes[0], tuple | list) else (axes or None)
        )

    permute = transpose

    def swapaxes(self, a: int, b: int) -> Tensor:
        return _ops.swapaxes(self, a, b)

    @property
    def T(self) -> Tensor:  # noqa: N802 (NumPy's name)
        return _ops.transpose(self, None)

    @property
    def mT(self) -> Tensor:  # noqa: N802 (NumPy's name)
        """Swap the last two axes (matrix transpose of a batch)."""
        return _ops.swapaxes(self, -1, -2)

    def expand(self, *shape: Any) -> Tensor:
        return _ops.expand(
            self, shape[0] if len(shape) == 1 and isinstance(shape[0], tuple | list) else shape
        )


def _freed(g: Any) -> Sequence[Any]:
    """The VJP left on a tensor whose graph a backward() has freed."""
    raise RuntimeError(
        "backward() through a graph that an earlier backward() already freed; pass "
        "retain_graph=True to the first backward() to go through the graph again"
    )


def _raw(x: Any) -> Any:
    return x.data if isinstance(x, Tensor) else x


def _toposort(root: Tensor) -> list[Tensor]:
    """Tensors of the graph below ``root`` that need grad, each after its parents."""
    order: list[Tensor] = []
    visited: set[int] = set()
    stack: list[tuple[Tensor, bool]] = [(root, False)]
    while stack:
        node, expanded = stack.pop()
        if expanded:
            order.append(node)
            continue
        if id(node) in visited:
            continue
        visited.add(id(node))
        stack.append((node, True))
        for parent in node._parents:
            if parent.requires_grad and id(parent) not in visited:
                stack.append((parent, False))
    return order


def make(
    data: Any,
    parents: tuple[Tensor, ...],
    backward: Callable[[Any], Sequence[Any]],
) -> Tensor:
    """Wrap an op's output array, recording ``parents`` and the VJP when grad is needed.

    ``backward(g)`` returns one gradient (or None) per parent, each either of the
    parent's shape or broadcastable down to it.
    """
    if isinstance(data, np.generic):  # NumPy reductions to a scalar return np.float32, not an array
        data = np.asarray(data)
    out = Tensor.__new__(Tensor)
    out.data = data
    out.grad = None
    if _grad_enabled and any(p.requires_grad for p in parents):
        out.requires_grad = True
        out._parents = parents
        out._backward = backward
    else:
        out.requires_grad = False
        out._parents = ()
        out._backward = None
    return out


def as_tensor(x: Any, like: Tensor | None = None) -> Tensor:
    """``x`` itself if a Tensor; else a constant on ``like``'s device.

    A Python scalar takes ``like``'s dtype by NumPy's weak-scalar rule, so
    ``float32_tensor * 2.0`` stays float32; so does a NumPy scalar such as
    ``np.sqrt(d)`` (a float64), which NumPy alone would let upcast the tensor.
    """
    if isinstance(x, Tensor):
        return x
    if like is None:
        return Tensor(x)
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, int | float | bool):
        return Tensor(like.xp.asarray(x, dtype=np.result_type(like.dtype, x)))
    if _is_backend_array(x):
        return Tensor(backend.to_device(x, like.device))
    return Tensor(x, device=like.device)


from whitebox import ops as _ops  # noqa: E402  (ops import Tensor from this module)
