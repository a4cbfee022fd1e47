"""DINO: self-distillation with no labels (Caron et al. 2021), assembled from this package's parts.

    views = MultiCrop(images)                  n_global global crops, then n_local local ones
    s_v = head(backbone(view_v))               the student, on every view
    t_i = EMA copy of the student, on the global views only (no gradient)
    loss = DINOLoss(s, t)                      cross-entropy across different views
    after each optimizer step:  teacher <- m_t teacher + (1 - m_t) student     (ema.py)

``MultiCropNetwork`` runs a backbone and head over a list of views, one forward per run of
views with the same resolution (the views are stacked along the batch). ``DINO`` holds the
student, the teacher and the loss (with its center) in one Module, so a checkpoint of it
is a complete training state; only the student's parameters are meant for the optimizer.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from whitebox import ops
from whitebox.nn import Module, Parameter
from whitebox.selfsup.ema import check_momentum, cosine_momentum, ema_update, make_teacher
from whitebox.selfsup.head import DINOHead
from whitebox.selfsup.loss import DINOLoss
from whitebox.tensor import Tensor, no_grad


class MultiCropNetwork(Module):
    """head(backbone(x)) for each view of a list; ``backbone`` maps images (B, ...) to features
    (B, D), ``head`` features to scores (B, K)."""

    def __init__(self, backbone: Module, head: DINOHead) -> None:
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, views: Sequence[Tensor]) -> list[Tensor]:
        """Scores (B, K) per view, in order. Consecutive views of one shape share a forward pass."""
        if not views:
            raise ValueError("MultiCropNetwork: got no views")
        B = views[0].shape[0]
        if any(v.shape[0] != B for v in views):
            sizes = [v.shape[0] for v in views]
            raise ValueError(f"MultiCropNetwork: views of different batch sizes {sizes}")
        outs: list[Tensor] = []
        start = 0
        while start < len(views):
            end = start + 1
            while end < len(views) and views[end].shape == views[start].shape:
                end += 1
            group = views[start] if end == start + 1 else ops.concat(list(views[start:end]), axis=0)
            scores = self.head(self.backbone(group))
            outs.extend(scores[i * B : (i + 1) * B] for i in range(end - start))
            start = end
        return outs


class DINO(Module):
    """Student and teacher ``MultiCropNetwork``s (the teacher a copy of the student, updated only
    by ``update_teacher``) and the loss. ``total_steps`` sets the momentum's cosine schedule from
    ``momentum`` to 1; ``n_global`` views (the first ones) go to the teacher."""

    def __init__(  # noqa: PLR0917
        self,
        backbone: Module,
        head: DINOHead,
        loss: DINOLoss,
        total_steps: int,
        momentum: float = 0.996,
        n_global: int = 2,
    ) -> None:
        super().__init__()
        if total_steps < 1:
            raise ValueError(f"DINO: total_steps must be >= 1, got {total_steps}")
        if n_global < 1:
            raise ValueError(f"DINO: n_global must be >= 1, got {n_global}")
        if head.out_dim != loss.out_dim:
            raise ValueError(f"DINO: the head has {head.out_dim} outputs but the loss expects {loss.out_dim}")
        self.base_momentum = check_momentum(momentum, "momentum")
        self.total_steps, self.n_global = int(total_steps), int(n_global)
        self.student = MultiCropNetwork(backbone, head)
        self.teacher = make_teacher(self.student)
        self.loss = loss
        self.register_buffer("steps", Tensor(np.zeros((), dtype=np.int64)))  # teacher updates so far

    def student_parameters(self) -> list[Parameter]:
        """What the optimizer trains (the teacher's parameters never get a gradient)."""
        return self.student.parameters()

    def forward(self, views: Sequence[Tensor], step: int | None = None) -> tuple[Tensor, dict[str, float]]:
        """(loss, statistics) of one batch of views (global ones first) at optimizer step ``step``
        (default: the number of teacher updates made so far)."""
        step = int(self.steps.data) if step is None else step
        if len(views) < self.n_global:
            raise ValueError(f"DINO: got {len(views)} views, fewer than n_global = {self.n_global}")
        with no_grad():
            teacher_out = self.teacher(views[: self.n_global])
        student_out = self.student(views)
        loss, stats = self.loss(student_out, teacher_out, step)
        stats["momentum"] = self.momentum(step)
        return loss, stats

    def momentum(self, step: int) -> float:
        """m_t of the EMA after optimizer step ``step`` (counting from 0)."""
        return cosine_momentum(step, self.total_steps, self.base_momentum)

    def update_teacher(self, step: int | None = None) -> float:
        """teacher <- m teacher + (1 - m) student with m = ``momentum(step)`` (default step: the
        number of updates so far), after optimizer step ``step``; returns m."""
        step = int(self.steps.data) if step is None else step
        m = self.momentum(step)
        ema_update(self.teacher, self.student, m)
        self.steps.data = self.steps.xp.asarray(step + 1, dtype=np.int64)
        return m

    def extra_repr(self) -> str:
        return f"momentum={self.base_momentum}, total_steps={self.total_steps}, n_global={self.n_global}"
