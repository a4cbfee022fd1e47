"""Lion, "EvoLved Sign Momentum" (Chen et al. 2023), the optimizer of CRATE's ImageNet recipe."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from whitebox.optim.optimizer import Optimizer
from whitebox.tensor import Tensor


class Lion(Optimizer):
    """Lion: a sign update of an interpolated momentum, with decoupled weight decay::

        u   = sign(b1 m + (1 - b1) g)
        p  <- p - lr (u + wd p)
        m  <- b2 m + (1 - b2) g                  (m_0 = 0)

    Every coordinate moves by exactly lr (plus decay), so Lion wants a learning
    rate 3-10x smaller than AdamW's and a weight decay 3-10x larger.
    """

    hyperparameters = ("lr", "betas", "weight_decay")
    buffers = ("exp_avg",)

    def __init__(
        self,
        params: Iterable[Tensor],
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.9, 0.99),
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(params, lr)
        if not all(0 <= b < 1 for b in betas) or weight_decay < 0:
            raise ValueError(f"Lion: need 0 <= betas < 1 and weight_decay >= 0; got {betas}, {weight_decay}")
        self.betas = (float(betas[0]), float(betas[1]))
        self.weight_decay = float(weight_decay)

    def _update(self, p: Tensor, state: dict[str, Any]) -> None:
        b1, b2 = self.betas
        g, m = p.grad, state["exp_avg"]
        update = p.xp.sign(b1 * m + (1 - b1) * g)
        p.data *= 1 - self.lr * self.weight_decay
        p.data -= self.lr * update
        m *= b2
        m += (1 - b2) * g
