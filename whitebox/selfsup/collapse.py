"""Watching for collapse: statistics of the teacher's and student's output distributions.

For a batch of teacher distributions q_b (rows of K probabilities) and the student's p_b on
the same crops:

    H(q)   = mean_b  -sum_k q_bk log q_bk          the teacher's per-image entropy
    H(qbar) = -sum_k qbar_k log qbar_k,  qbar = mean_b q_b     entropy of the batch average
    I      = H(qbar) - H(q)                        how much the output depends on the input
    KL     = mean_b sum_k q_bk (log q_bk - log p_bk)

Two ways to fail: collapse to a *constant* (every image gets the same distribution, so I is
about 0, with a low entropy: one prototype wins) and collapse to *uniform* (H(q) reaches
log K: the output says nothing). Centering alone pushes toward uniform, sharpening alone
toward a constant; DINO balances the two. ``CollapseMonitor`` warns when either shows.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

from whitebox import backend

_TINY = 1e-12


class CollapseWarning(RuntimeWarning):
    """The self-distillation outputs have collapsed (to a constant or to uniform)."""


def _entropy_rows(p: Any) -> Any:
    xp = backend.array_module(p)
    return -(p * xp.log(xp.maximum(p, _TINY))).sum(axis=-1)


def output_statistics(teacher_probs: Any, student_probs: Any | None = None) -> dict[str, float]:
    """{"teacher_entropy": H(q), "teacher_mean_entropy": H(qbar), "teacher_information": I,
    and with ``student_probs`` "kl_teacher_student": KL} for (B, K) arrays of probabilities
    (NumPy or CuPy; rows sum to 1)."""
    q = teacher_probs
    if q.ndim != 2:
        raise ValueError(f"output_statistics: teacher_probs must be (B, K), got shape {q.shape}")
    xp = backend.array_module(q)
    h = float(_entropy_rows(q).mean())
    h_bar = float(_entropy_rows(q.mean(axis=0)))
    stats = {"teacher_entropy": h, "teacher_mean_entropy": h_bar, "teacher_information": h_bar - h}
    if student_probs is not None:
        p = student_probs
        if p.shape != q.shape:
            raise ValueError(f"output_statistics: student_probs {p.shape} and teacher_probs {q.shape} differ")
        kl = (q * (xp.log(xp.maximum(q, _TINY)) - xp.log(xp.maximum(p, _TINY)))).sum(axis=-1)
        stats["kl_teacher_student"] = float(kl.mean())
    return stats


def collapse_kind(stats: dict[str, float], num_outputs: int, tol: float = 0.02) -> str | None:
    """The collapse a batch's statistics show over ``num_outputs`` classes: "uniform",
    "constant" or None.

    Uniform: H(q) >= (1 - tol) log K. Constant: I <= tol log K (the output ignores the input)
    while H(q) is below the uniform threshold.
    """
    if num_outputs < 2:
        raise ValueError(f"collapse_kind: need at least 2 outputs, got {num_outputs}")
    if not 0 < tol < 1:
        raise ValueError(f"collapse_kind: tol must be in (0, 1), got {tol}")
    log_k = math.log(num_outputs)
    if stats["teacher_entropy"] >= (1 - tol) * log_k:
        return "uniform"
    if stats["teacher_information"] <= tol * log_k:
        return "constant"
    return None


class CollapseMonitor:
    """Feed it each step's ``output_statistics``; it warns (``CollapseWarning``) once per kind
    when a collapse has shown for ``patience`` consecutive steps, and remembers what it saw."""

    def __init__(self, num_outputs: int, tol: float = 0.02, patience: int = 10) -> None:
        if patience < 1:
            raise ValueError(f"CollapseMonitor: patience must be >= 1, got {patience}")
        collapse_kind({"teacher_entropy": 0.0, "teacher_information": 1.0}, num_outputs, tol)  # validates
        self.num_outputs, self.tol, self.patience = num_outputs, tol, patience
        self.streak: dict[str, int] = {"uniform": 0, "constant": 0}
        self.warned: set[str] = set()

    def update(self, stats: dict[str, float], step: int | None = None) -> str | None:
        """The collapse kind of this step (or None); warns the first time a kind persists."""
        kind = collapse_kind(stats, self.num_outputs, self.tol)
        for k in self.streak:
            self.streak[k] = self.streak[k] + 1 if k == kind else 0
        if kind is not None and self.streak[kind] >= self.patience and kind not in self.warned:
            self.warned.add(kind)
            where = "" if step is None else f" at step {step}"
            warnings.warn(
                f"self-distillation collapsed to {kind}{where}: teacher entropy "
                f"{stats['teacher_entropy']:.3f} of log K = {math.log(self.num_outputs):.3f}, "
                f"input dependence I = {stats['teacher_information']:.3f} "
                f"(check the centering momentum and the teacher temperature)",
                CollapseWarning,
                stacklevel=2,
            )
        return kind
