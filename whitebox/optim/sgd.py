"""Stochastic gradient descent with momentum (PyTorch's ``torch.optim.SGD`` semantics)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from whitebox.optim.optimizer import Optimizer
from whitebox.tensor import Tensor


class SGD(Optimizer):
    """SGD with optional (Nesterov) momentum and L2 weight decay.

    With gradient g_t, weight decay wd, momentum mu and buffer b_0 = 0::

        d_t = g_t + wd * p_{t-1}
        b_t = mu * b_{t-1} + d_t                 (only when mu > 0)
        u_t = d_t + mu * b_t  if nesterov  else  b_t        (u_t = d_t when mu = 0)
        p_t = p_{t-1} - lr * u_t
    """

    hyperparameters = ("lr", "momentum", "nesterov", "weight_decay")

    def __init__(
        self,
        params: Iterable[Tensor],
        lr: float,
        momentum: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(params, lr)
        if momentum < 0 or weight_decay < 0:
            raise ValueError(f"SGD: momentum and weight_decay must be >= 0, got {momentum}, {weight_decay}")
        if nesterov and momentum == 0:
            raise ValueError("SGD: nesterov=True needs momentum > 0")
        self.momentum, self.nesterov, self.weight_decay = float(momentum), bool(nesterov), float(weight_decay)

    @property
    def buffers(self) -> tuple[str, ...]:  # type: ignore[override]
        return ("momentum_buffer",) if self.momentum else ()

    def _update(self, p: Tensor, state: dict[str, Any]) -> None:
        d = p.grad
        if self.weight_decay:
            d = d + self.weight_decay * p.data
        if self.momentum:
            buf = state["momentum_buffer"]
            buf *= self.momentum
            buf += d
            d = d + self.momentum * buf if self.nesterov else buf
        p.data -= self.lr * d
