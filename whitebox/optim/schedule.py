"""Learning-rate schedules: functions step -> lr, and a helper that applies one to an optimizer."""

from __future__ import annotations

import math
from collections.abc import Callable

from whitebox.optim.optimizer import Optimizer


def constant(step: int, base_lr: float) -> float:
    """lr(t) = base_lr."""
    return float(base_lr)


def warmup_cosine(
    step: int, total_steps: int, warmup_steps: int, base_lr: float, min_lr: float = 0.0
) -> float:
    """Linear warmup from 0, then cosine decay to ``min_lr``::

        lr(t) = base_lr * t / W                                          t < W
        lr(t) = min_lr + (base_lr - min_lr) (1 + cos(pi (t - W) / (T - W))) / 2   W <= t <= T

    so lr(0) = 0, lr(W) = base_lr and lr(T) = min_lr; steps past T stay at min_lr.
    """
    if not 0 <= warmup_steps <= total_steps:
        raise ValueError(
            f"warmup_cosine: need 0 <= warmup_steps <= total_steps, got {warmup_steps}, {total_steps}"
        )
    if step < warmup_steps:
        return float(base_lr * step / warmup_steps)
    if total_steps == warmup_steps:
        return float(base_lr)
    progress = min((step - warmup_steps) / (total_steps - warmup_steps), 1.0)
    return float(min_lr + (base_lr - min_lr) * 0.5 * (1 + math.cos(math.pi * progress)))


class LRScheduler:
    """Set ``optimizer.lr = schedule(t)`` for t = 0, 1, 2, ...

    The constructor applies t = 0; call ``step()`` after each ``optimizer.step()``
    to advance (PyTorch's convention). E.g.
    ``LRScheduler(opt, functools.partial(warmup_cosine, total_steps=1000, warmup_steps=100, base_lr=1e-3))``.
    """

    def __init__(self, optimizer: Optimizer, schedule: Callable[[int], float]) -> None:
        self.optimizer, self.schedule = optimizer, schedule
        self.t = 0
        optimizer.lr = schedule(0)

    def step(self) -> None:
        self.t += 1
        self.optimizer.lr = self.schedule(self.t)

    def state_dict(self) -> dict[str, int]:
        return {"t": self.t}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        self.t = int(state_dict["t"])
        self.optimizer.lr = self.schedule(self.t)
