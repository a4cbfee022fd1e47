"""DINO's objective: the student predicts the centered, sharpened teacher across views.

With teacher scores t (global crops only) and student scores s (all crops), K outputs each:

    q_i = softmax((t_i - c) / tau_t)          centering by c, sharpening by tau_t < tau_s
    log p_v = log_softmax(s_v / tau_s)
    L = (1 / #pairs) sum_{i in teacher crops} sum_{v in student crops, v != i}
            mean_b ( -sum_k q_ik log p_vk )

Crops are listed global crops first, so teacher crop i and student crop i are the same view
(and that pair is skipped). q is a constant target: no gradient reaches the teacher.

After each call the center follows the teacher's batch mean,

    c <- mu c + (1 - mu) mean_{i, b} t_ib,

except that the first call sets c to that mean (the original starts from c = 0; an untrained
network's outputs share a large input-independent part, so with c = 0 the first targets are
all alike, the loss starts artificially low and rises while c catches up),

and tau_t rises linearly from ``warmup_teacher_temp`` to ``teacher_temp`` over the first
``warmup_steps`` steps (a cold teacher early on is too confident to be a useful target).
Centering keeps one output from dominating (toward uniform); sharpening keeps the target
peaked (away from uniform); together they avoid both collapses.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from whitebox import ops
from whitebox.nn import Module
from whitebox.selfsup.collapse import output_statistics
from whitebox.selfsup.ema import check_momentum
from whitebox.tensor import Tensor


def _positive(value: float, name: str) -> float:
    v = float(value)
    if not (math.isfinite(v) and v > 0):
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    return v


def teacher_temperature(step: int, warmup_steps: int, warmup_temp: float, final_temp: float) -> float:
    """tau_t(step): linear from ``warmup_temp`` at step 0 to ``final_temp`` at ``warmup_steps``,
    then constant."""
    warmup_temp = _positive(warmup_temp, "warmup teacher temperature")
    final_temp = _positive(final_temp, "teacher temperature")
    if warmup_steps < 0:
        raise ValueError(f"teacher_temperature: warmup_steps must be >= 0, got {warmup_steps}")
    if step >= warmup_steps:
        return final_temp
    return warmup_temp + (final_temp - warmup_temp) * step / warmup_steps


class DINOLoss(Module):
    """The cross-view cross-entropy with the teacher's center as a buffer (saved with the
    model, so a resumed run continues with the same center)."""

    def __init__(  # noqa: PLR0917
        self,
        out_dim: int,
        student_temp: float = 0.1,
        teacher_temp: float = 0.04,
        warmup_teacher_temp: float = 0.04,
        warmup_steps: int = 0,
        center_momentum: float = 0.9,
    ) -> None:
        super().__init__()
        if out_dim < 2:
            raise ValueError(f"DINOLoss: out_dim must be >= 2, got {out_dim}")
        if warmup_steps < 0:
            raise ValueError(f"DINOLoss: warmup_steps must be >= 0, got {warmup_steps}")
        self.out_dim = int(out_dim)
        self.student_temp = _positive(student_temp, "student temperature")
        self.teacher_temp = _positive(teacher_temp, "teacher temperature")
        self.warmup_teacher_temp = _positive(warmup_teacher_temp, "warmup teacher temperature")
        self.warmup_steps = int(warmup_steps)
        self.center_momentum = check_momentum(center_momentum, "center momentum")
        self.register_buffer("center", Tensor(np.zeros((1, out_dim), dtype=np.float32)))
        self.register_buffer("center_updates", Tensor(np.zeros((), dtype=np.int64)))

    def temperature(self, step: int) -> float:
        """tau_t at ``step``."""
        return teacher_temperature(step, self.warmup_steps, self.warmup_teacher_temp, self.teacher_temp)

    def teacher_probs(self, teacher_out: Tensor, step: int) -> Any:
        """q = softmax((t - c) / tau_t) as a plain array (no graph)."""
        t = teacher_out.data
        centered = Tensor((t - self.center.data.astype(t.dtype)) / t.dtype.type(self.temperature(step)))
        return ops.softmax(centered, axis=-1).data

    def update_center(self, teacher_out: Sequence[Tensor]) -> None:
        """c <- mu c + (1 - mu) (mean of the teacher scores over crops and batch); the first
        update sets c to that mean."""
        xp = teacher_out[0].xp
        batch_mean = xp.concatenate([t.data for t in teacher_out], axis=0).mean(axis=0, keepdims=True)
        batch_mean = batch_mean.astype(self.center.dtype)
        mu = self.center_momentum if int(self.center_updates.data) > 0 else 0.0
        self.center.data = mu * self.center.data + (1 - mu) * batch_mean
        self.center_updates.data = self.center_updates.data + 1

    def _check(self, student_out: Sequence[Tensor], teacher_out: Sequence[Tensor]) -> None:
        if not teacher_out or len(student_out) < 2:
            raise ValueError(
                f"DINOLoss: need at least one teacher crop and two student crops, got "
                f"{len(teacher_out)} and {len(student_out)}"
            )
        if len(teacher_out) > len(student_out):
            raise ValueError(
                f"DINOLoss: {len(teacher_out)} teacher crops but only {len(student_out)} student crops; "
                "the student sees every crop, global ones first"
            )
        shape = teacher_out[0].shape
        for who, outs in (("teacher", teacher_out), ("student", student_out)):
            for i, o in enumerate(outs):
                if o.ndim != 2 or o.shape[1] != self.out_dim or o.shape[0] != shape[0]:
                    raise ValueError(
                        f"DINOLoss: {who} crop {i} has shape {o.shape}, expected ({shape[0]}, {self.out_dim})"
                    )

    def forward(
        self, student_out: Sequence[Tensor], teacher_out: Sequence[Tensor], step: int
    ) -> tuple[Tensor, dict[str, float]]:
        """(loss, statistics) for per-crop scores: ``student_out`` (every crop, global first) and
        ``teacher_out`` (the global crops). The statistics are ``output_statistics`` of the
        teacher's q against the student's p on the same global crops, and the temperature. In
        training mode the center is updated afterwards (and set before, on the first call)."""
        self._check(student_out, teacher_out)
        if self.training and int(self.center_updates.data) == 0:
            self.update_center(teacher_out)  # the first batch sets the center
        targets = [self.teacher_probs(t, step) for t in teacher_out]
        log_p = [ops.log_softmax(s * (1.0 / self.student_temp), axis=-1) for s in student_out]
        total: Tensor | None = None
        pairs = 0
        for i, q in enumerate(targets):
            for v, lp in enumerate(log_p):
                if v == i:
                    continue
                term = -(lp * Tensor(q.astype(lp.dtype, copy=False))).sum(axis=-1).mean()
                total = term if total is None else total + term
                pairs += 1
        loss = total * (1.0 / pairs)
        xp = teacher_out[0].xp
        q_all = xp.concatenate(targets, axis=0)
        p_same = xp.exp(xp.concatenate([lp.data for lp in log_p[: len(targets)]], axis=0))
        stats = output_statistics(q_all, p_same)
        stats["teacher_temp"] = self.temperature(step)
        if self.training:
            self.update_center(teacher_out)
        return loss, stats

    def extra_repr(self) -> str:
        return (
            f"{self.out_dim}, student_temp={self.student_temp}, teacher_temp={self.teacher_temp}, "
            f"warmup_teacher_temp={self.warmup_teacher_temp}, warmup_steps={self.warmup_steps}, "
            f"center_momentum={self.center_momentum}"
        )
