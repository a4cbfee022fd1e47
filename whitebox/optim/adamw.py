"""Adam with decoupled weight decay (Loshchilov & Hutter 2019), as ``torch.optim.AdamW``."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from whitebox.optim.optimizer import Optimizer
from whitebox.tensor import Tensor


class AdamW(Optimizer):
    """AdamW. With gradient g_t and t counting this parameter's updates (from 1)::

    p   <- p * (1 - lr * wd)                       (decoupled weight decay)
    m_t  = b1 m_{t-1} + (1 - b1) g_t               (m_0 = 0)
    v_t  = b2 v_{t-1} + (1 - b2) g_t^2             (v_0 = 0)
    p   <- p - lr / (1 - b1^t) * m_t / (sqrt(v_t) / sqrt(1 - b2^t) + eps)
    """

    hyperparameters = ("lr", "betas", "eps", "weight_decay")
    buffers = ("exp_avg", "exp_avg_sq")

    def __init__(
        self,
        params: Iterable[Tensor],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.01,
    ) -> None:
        super().__init__(params, lr)
        if not all(0 <= b < 1 for b in betas) or eps < 0 or weight_decay < 0:
            raise ValueError(
                f"AdamW: need 0 <= betas < 1, eps >= 0, weight_decay >= 0; got {betas}, {eps}, {weight_decay}"
            )
        self.betas = (float(betas[0]), float(betas[1]))
        self.eps, self.weight_decay = float(eps), float(weight_decay)

    def _update(self, p: Tensor, state: dict[str, Any]) -> None:
        b1, b2 = self.betas
        t, g = state["step"], p.grad
        m, v = state["exp_avg"], state["exp_avg_sq"]
        p.data *= 1 - self.lr * self.weight_decay
        m *= b1
        m += (1 - b1) * g
        v *= b2
        v += (1 - b2) * (g * g)
        step_size = self.lr / (1 - b1**t)
        denom = p.xp.sqrt(v) / math.sqrt(1 - b2**t) + self.eps
        p.data -= step_size * (m / denom)
