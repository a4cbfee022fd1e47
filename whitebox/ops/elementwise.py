"""Elementwise ops with NumPy broadcasting.

Each backward returns the full-shape gradient; the engine sums it back to
each input's shape (``sum_to_shape``), so broadcasting is undone in one place.
"""

from __future__ import annotations

import math
from typing import Any

from whitebox import backend
from whitebox.tensor import Tensor, as_tensor, make


def operands(a: Any, b: Any, op: str) -> tuple[Tensor, Tensor]:
    """Both operands as tensors on one device, or an error naming both devices."""
    if isinstance(a, Tensor):
        b = as_tensor(b, like=a)
    else:
        a = as_tensor(a, like=b)
    if a.device != b.device:
        raise RuntimeError(
            f"{op}: operands are on different devices ({a.device} and {b.device}); "
            "move one with .to(device) first"
        )
    return a, b


def add(a: Any, b: Any) -> Tensor:
    """a + b."""
    a, b = operands(a, b, "add")
    return make(a.data + b.data, (a, b), lambda g: (g, g))


def sub(a: Any, b: Any) -> Tensor:
    """a - b."""
    a, b = operands(a, b, "sub")
    return make(a.data - b.data, (a, b), lambda g: (g, -g))


def mul(a: Any, b: Any) -> Tensor:
    """a * b; d/da = b, d/db = a."""
    a, b = operands(a, b, "mul")
    return make(a.data * b.data, (a, b), lambda g: (g * b.data, g * a.data))


def div(a: Any, b: Any) -> Tensor:
    """a / b; d/da = 1/b, d/db = -a/b^2."""
    a, b = operands(a, b, "div")
    out = a.data / b.data
    return make(out, (a, b), lambda g: (g / b.data, -g * out / b.data))


def pow(a: Any, b: Any) -> Tensor:  # noqa: A001 (the operator's name)
    """a ** b; d/da = b a^(b-1), d/db = a^b log a (only where b needs grad)."""
    a, b = operands(a, b, "pow")
    out = a.data**b.data

    def backward(g: Any) -> tuple[Any, Any]:
        ga = g * b.data * a.data ** (b.data - 1) if a.requires_grad else None
        gb = g * out * a.xp.log(a.data) if b.requires_grad else None
        return ga, gb

    return make(out, (a, b), backward)


def neg(a: Tensor) -> Tensor:
    return make(-a.data, (a,), lambda g: (-g,))


def exp(a: Tensor) -> Tensor:
    out = a.xp.exp(a.data)
    return make(out, (a,), lambda g: (g * out,))


def log(a: Tensor) -> Tensor:
    return make(a.xp.log(a.data), (a,), lambda g: (g / a.data,))


def sqrt(a: Tensor) -> Tensor:
    out = a.xp.sqrt(a.data)
    return make(out, (a,), lambda g: (g / (2 * out),))


def tanh(a: Tensor) -> Tensor:
    out = a.xp.tanh(a.data)
    return make(out, (a,), lambda g: (g * (1 - out * out),))


def sigmoid(a: Tensor) -> Tensor:
    """1 / (1 + e^-a), computed without overflow for large |a|."""
    xp = a.xp
    e = xp.exp(-xp.abs(a.data))
    out = xp.where(a.data >= 0, 1 / (1 + e), e / (1 + e))
    return make(out, (a,), lambda g: (g * out * (1 - out),))


def relu(a: Tensor) -> Tensor:
    mask = a.data > 0
    return make(a.xp.maximum(a.data, 0), (a,), lambda g: (g * mask,))  # not a * mask: -inf * 0 is NaN


def gelu(a: Tensor, approximate: str = "none") -> Tensor:
    """GELU(x) = x Phi(x) (exact, with erf, as PyTorch's default) or its tanh approximation."""
    xp, x = a.xp, a.data
    if approximate == "tanh":
        c = math.sqrt(2 / math.pi)
        inner = c * (x + 0.044715 * x**3)
        t = xp.tanh(inner)
        out = 0.5 * x * (1 + t)

        def backward(g: Any) -> tuple[Any]:
            dinner = c * (1 + 3 * 0.044715 * x * x)
            return (g * (0.5 * (1 + t) + 0.5 * x * (1 - t * t) * dinner),)

    elif approximate == "none":
        cdf = 0.5 * (1 + backend.erf(x * (1 / math.sqrt(2))))
        out = x * cdf

        def backward(g: Any) -> tuple[Any]:
            pdf = xp.exp(-0.5 * x * x) * (1 / math.sqrt(2 * math.pi))
            return (g * (cdf + x * pdf),)

    else:
        raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    return make(out.astype(x.dtype, copy=False), (a,), backward)


def abs(a: Tensor) -> Tensor:  # noqa: A001
    """|a|; the subgradient at 0 is 0."""
    return make(a.xp.abs(a.data), (a,), lambda g: (g * a.xp.sign(a.data),))


def maximum(a: Any, b: Any) -> Tensor:
    """Elementwise max; a tie sends the gradient to ``a``."""
    a, b = operands(a, b, "maximum")
    pick_a = a.data >= b.data
    return make(a.xp.where(pick_a, a.data, b.data), (a, b), lambda g: (g * pick_a, g * ~pick_a))


def minimum(a: Any, b: Any) -> Tensor:
    """Elementwise min; a tie sends the gradient to ``a``."""
    a, b = operands(a, b, "minimum")
    pick_a = a.data <= b.data
    return make(a.xp.where(pick_a, a.data, b.data), (a, b), lambda g: (g * pick_a, g * ~pick_a))


def where(cond: Any, a: Any, b: Any) -> Tensor:
    """``a`` where ``cond`` is true, else ``b`` (``cond`` is not differentiated)."""
    a, b = operands(a, b, "where")
    c = cond.data if isinstance(cond, Tensor) else backend.to_device(a.xp.asarray(cond), a.device)
    zero = a.xp.zeros((), dtype=a.dtype)
    return make(
        a.xp.where(c, a.data, b.data),
        (a, b),
        lambda g: (a.xp.where(c, g, zero), a.xp.where(c, zero, g)),
    )


def clip(a: Tensor, lo: float | None = None, hi: float | None = None) -> Tensor:
    """Clamp into [lo, hi]; the gradient passes only where the value was inside."""
    inside = a.xp.ones(a.shape, dtype=bool)
    if lo is not None:
        inside &= a.data >= lo
    if hi is not None:
        inside &= a.data <= hi
    return make(a.xp.clip(a.data, lo, hi), (a,), lambda g: (g * inside,))


def soft_threshold(a: Tensor, lam: float, nonnegative: bool = False) -> Tensor:
    """Proximal operator of lam ||.||_1: sign(a) max(|a| - lam, 0).

    With ``nonnegative=True`` it is the prox of lam ||.||_1 + indicator(>= 0):
    max(a - lam, 0), the step the ISTA block takes.
    """
    xp = a.xp
    if nonnegative:
        mask = a.data > lam
        return make(xp.maximum(a.data - lam, 0), (a,), lambda g: (g * mask,))
    mask = xp.abs(a.data) > lam
    return make(xp.sign(a.data) * xp.maximum(xp.abs(a.data) - lam, 0), (a,), lambda g: (g * mask,))
