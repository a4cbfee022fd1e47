"""The ISTA block: CRATE's sparsification step.

docs/math.md §3.5 and tutorial 04, eqs. (2)-(3). One proximal-gradient step on the
non-negative LASSO min_{Z >= 0} lam ||Z||_1 + 1/2 ||Z^{l+1/2} - D Z||_F^2, warm
started at Z = Z^{l+1/2}:

    column form:  Z^{l+1} = ReLU(Z + eta D^T (Z - D Z) - eta lam 1),
    row form:     x^+     = ReLU(x + eta (x - x D^T) D - eta lam) = ReLU(x P - eta lam),

with P = I + eta (D - D^T D): a linear map of the tokens followed by a shifted ReLU.
"""

from __future__ import annotations

import math
from typing import Any

from whitebox import backend
from whitebox.host_threads import for_blocks
from whitebox.nn import Module, Parameter, init
from whitebox.ops.linalg import matmul_arrays
from whitebox.tensor import Tensor, make


def _fold(D: Any, eta: float) -> Any:
    """P = I + eta (D - D^T D), (d, d)."""
    P = D - D.T @ D
    P *= eta
    P += backend.array_module(D).eye(D.shape[0], dtype=P.dtype)
    return P


def ista(x: Tensor, D: Tensor, eta: float, lam: float) -> Tensor:
    """relu(x + eta (x D - x D^T D) - eta lam) over the last axis of ``x``, one fused op.

    The step is linear in x before the ReLU, so it is computed as one product with a
    d x d matrix built from D (exact algebra, no approximation):

        relu(x P - eta lam),   P = I + eta (D - D^T D),

    one (tokens x d) @ (d x d) product instead of the official three (x D^T, (x D^T) D, x D).
    With gy = g [x P - eta lam > 0] and G = x^T gy = dL/dP (summed over all tokens), the VJPs are

        dx = gy P^T,    dD = eta (G - D (G + G^T)).

    Building P costs d^3 multiply-adds, the products 3 R d^2 unfolded and R d^2 folded for
    R token rows, so for R < d / 2 (a generation step: one new token) the forward takes the
    three products instead, x + eta (x D - (x D^T) D); the backward builds P when it runs.
    """
    d = D.shape[0]
    if D.shape != (d, d) or x.shape[-1] != d:
        raise ValueError(
            f"ista: D must be square ({x.shape[-1]} x {x.shape[-1]}), got {D.shape} for x {x.shape}"
        )
    xp, Dd, x2 = x.xp, D.data, x.data.reshape(-1, d)
    P = None if 2 * x2.shape[0] < d else _fold(Dd, eta)
    if P is None:
        y = x2 @ Dd
        y -= (x2 @ Dd.T) @ Dd
        y *= eta
        y += x2
    else:
        y = matmul_arrays(x2, P)

    def shrink(r: slice) -> None:  # rows r, on the host's threads (host_threads)
        yr = y[r]
        yr -= eta * lam
        xp.maximum(yr, 0, out=yr)

    for_blocks(shrink, y.shape[0], y)
    out = y

    def backward(g: Any) -> tuple[Any, Any]:
        g2 = g.reshape(-1, d)
        gy = xp.empty_like(g2)
        for_blocks(lambda r: xp.multiply(g2[r], out[r] > 0, out=gy[r]), gy.shape[0], gy)
        gx = gD = None
        if x.requires_grad:
            gx = matmul_arrays(gy, (_fold(Dd, eta) if P is None else P).T).reshape(x.shape)
        if D.requires_grad:
            G = matmul_arrays(x2.T, gy)
            gD = G - Dd @ (G + G.T)
            gD *= eta
        return gx, gD

    return make(out.reshape(x.shape), (x, D), backward)


class ISTA(Module):
    """One ISTA step with a learned dictionary D, the official CRATE ``FeedForward``.

    Row form, x of shape (..., N, dim) (tutorial 04, eq. (3); docs/math.md eq. (4.2)):

        ISTA(x) = ReLU(x + eta (x D - x D^T D) - eta lam) = ReLU(x + eta (x - x D^T) D - eta lam),

    which is ``whitebox.rate.ista_step(x, D, eta, lam)`` with ``D = weight``. The official
    code spells it with three products over the tokens (x1 = x D^T; grad_1 = x1 D; grad_2 = x D);
    ``ista`` folds them into one, relu(x P - eta lam) with P = I + eta (D - D^T D).
    ``weight`` (dim, dim) has torch.nn.init.kaiming_uniform_'s default init,
    U(-sqrt(6/dim), sqrt(6/dim)).
    """

    def __init__(self, dim: int, eta: float = 0.1, lam: float = 0.1) -> None:
        super().__init__()
        self.dim, self.eta, self.lam = dim, eta, lam
        self.weight = Parameter(init.uniform((dim, dim), math.sqrt(6 / dim)), dtype=backend.DEFAULT_DTYPE)

    def forward(self, x: Tensor) -> Tensor:
        return ista(x, self.weight, self.eta, self.lam)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, eta={self.eta}, lam={self.lam}"
