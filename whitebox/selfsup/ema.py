"""The teacher as an exponential moving average (EMA) of the student.

After every optimizer step t the teacher's parameters move toward the student's:

    theta_teacher <- m_t theta_teacher + (1 - m_t) theta_student

with a momentum that rises from ``base`` to 1 along a half cosine over the T steps of a run:

    m_t = 1 - (1 - base) (1 + cos(pi t / T)) / 2        m_0 = base,  m_T = 1.

The teacher gets no gradient: it changes only through this rule, so it is a slowly moving
ensemble of past students, which is what makes its outputs a stable target.
"""

from __future__ import annotations

import copy
import math

from whitebox.nn import Module
from whitebox.tensor import Tensor


def check_momentum(momentum: float, name: str = "momentum") -> float:
    """``momentum`` as a float, or a ValueError unless it is a finite number in [0, 1]."""
    m = float(momentum)
    if not (math.isfinite(m) and 0.0 <= m <= 1.0):
        raise ValueError(f"{name} must be in [0, 1], got {momentum!r}")
    return m


def cosine_momentum(step: int, total_steps: int, base: float = 0.996) -> float:
    """m_t = 1 - (1 - base) (1 + cos(pi t / T)) / 2 for t = ``step``, T = ``total_steps``
    (steps past T stay at 1)."""
    base = check_momentum(base, "base momentum")
    if total_steps < 1:
        raise ValueError(f"cosine_momentum: total_steps must be >= 1, got {total_steps}")
    if step < 0:
        raise ValueError(f"cosine_momentum: step must be >= 0, got {step}")
    progress = min(step / total_steps, 1.0)
    return 1.0 - (1.0 - base) * 0.5 * (1.0 + math.cos(math.pi * progress))


def make_teacher(student: Module) -> Module:
    """A copy of ``student`` with its own arrays (equal values), in eval mode, for ``ema_update``.
    Copying draws no random numbers."""
    teacher = copy.deepcopy(student)
    for p in teacher.parameters():
        p.grad = None
    return teacher.eval()


def _matched(teacher: Module, student: Module) -> list[tuple[Tensor, Tensor]]:
    t_params, s_params = dict(teacher.named_parameters()), dict(student.named_parameters())
    if t_params.keys() != s_params.keys():
        only_t = sorted(t_params.keys() - s_params.keys())
        only_s = sorted(s_params.keys() - t_params.keys())
        raise ValueError(
            f"ema_update: teacher and student have different parameters (only in the teacher: "
            f"{only_t}; only in the student: {only_s})"
        )
    pairs = []
    for name, t in t_params.items():
        s = s_params[name]
        if t.shape != s.shape:
            raise ValueError(
                f"ema_update: {name} has shape {t.shape} in the teacher but {s.shape} in the student"
            )
        if t is s:
            raise ValueError(
                f"ema_update: {name} is the same tensor in teacher and student; copy the student first"
            )
        pairs.append((t, s))
    return pairs


def ema_update(teacher: Module, student: Module, momentum: float) -> None:
    """In place, for every parameter name: teacher <- m teacher + (1 - m) student.

    Parameters are matched by their dotted names; buffers are left alone. m = 1 leaves the
    teacher unchanged, m = 0 copies the student.
    """
    m = check_momentum(momentum)
    for t, s in _matched(teacher, student):
        t.data *= m
        t.data += (1.0 - m) * s.data.astype(t.dtype, copy=False)
