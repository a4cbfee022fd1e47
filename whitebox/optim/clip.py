"""Gradient clipping by the global L2 norm."""

from __future__ import annotations

import math
from collections.abc import Iterable

from whitebox.tensor import Tensor


def clip_grad_norm_(params: Iterable[Tensor], max_norm: float, eps: float = 1e-6) -> float:
    """Scale all gradients, in place, so that their joint L2 norm is at most ``max_norm``.

    With N = sqrt(sum_p ||grad_p||^2): when N > max_norm every grad is multiplied by
    max_norm / (N + eps) (PyTorch's rule); otherwise nothing changes. Parameters
    without a gradient are skipped. Returns N (before clipping) as a Python float.
    """
    with_grad = [p for p in params if p.grad is not None]
    # Summed on the parameters' device, read back once (one device synchronize, not one per parameter).
    total = math.sqrt(float(sum(p.grad.ravel() @ p.grad.ravel() for p in with_grad)))
    coef = max_norm / (total + eps)
    if coef < 1:
        for p in with_grad:
            p.grad *= coef
    return total
