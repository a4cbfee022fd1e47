"""Checks for the tutorials' exercises: ``check("03.1", my_ssa)`` says whether an answer is right.

Each exercise has a key ("<tutorial>.<number>"), a checker that tests an answer
against the library on fixed random inputs, and a reference solution in
tutorials/solutions.py (the checkers of tutorials 05-08, the models, are in
tutorials/exercises_models.py; the helpers both use in tutorials/checking.py).
``check`` returns True (right), False (wrong, with the reason printed) or None
(not attempted: the answer raised NotImplementedError), so a notebook with
unanswered exercises still runs top to bottom.
tests/test_exercises.py feeds every checker its solution and wrong answers.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import solutions
from checking import Exercise, WrongAnswerError
from checking import close as _close
from checking import mixture as _mixture
from checking import rng as _rng
from exercises_models import MODEL_EXERCISES

import whitebox
from whitebox import optim, rate
from whitebox.gradcheck import gradcheck
from whitebox.tensor import Tensor, sum_to_shape

# 00 · Autograd


def _check_exp(exp_op: Callable[[Tensor], Tensor]) -> None:
    x = _rng().standard_normal((3, 4))
    y = exp_op(Tensor(x, requires_grad=True))
    if not isinstance(y, Tensor):
        raise WrongAnswerError(f"return a Tensor (made with make), not a {type(y).__name__}")
    _close(y, np.exp(x), "value")
    try:
        gradcheck(exp_op, Tensor(x, requires_grad=True))
    except AssertionError as exc:
        raise WrongAnswerError(
            "the VJP disagrees with finite differences: " + str(exc).strip().splitlines()[0]
        ) from None


def _check_lsq_grad(lsq_grad: Callable[..., np.ndarray]) -> None:
    rng = _rng(1)
    x, w, y = rng.standard_normal((7, 3)), rng.standard_normal(3), rng.standard_normal(7)
    wt = Tensor(w, requires_grad=True)
    r = Tensor(x) @ wt - Tensor(y)
    (r * r).mean().backward()
    _close(lsq_grad(x, w, y), wt.grad, "dL/dw")


def _check_sum_to_shape(fn: Callable[[np.ndarray, tuple[int, ...]], np.ndarray]) -> None:
    g = _rng(2).standard_normal((2, 5, 3))
    for shape in [(2, 5, 3), (5, 3), (3,), (1, 3), (5, 1), (2, 1, 3), (1, 1, 1), ()]:
        _close(fn(g, shape), sum_to_shape(g, shape), f"target shape {shape}")


# 00b · Modules and training


def _check_two_layer(cls: type) -> None:
    whitebox.manual_seed(0)
    model = cls(5, 7, 3)
    shapes = {name: p.shape for name, p in model.named_parameters()}
    want = {"hidden.weight": (7, 5), "hidden.bias": (7,), "out.weight": (3, 7), "out.bias": (3,)}
    if shapes != want:
        raise WrongAnswerError(f"named_parameters() gives {shapes}, expected {want}")
    x = _rng(3).standard_normal((4, 5)).astype(np.float32)
    h, o = model.hidden, model.out
    hidden = np.maximum(x @ h.weight.numpy().T + h.bias.numpy(), 0)
    _close(model(Tensor(x)), hidden @ o.weight.numpy().T + o.bias.numpy(), "forward", rtol=1e-5, atol=1e-6)
    model(Tensor(x)).sum().backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None]
    if missing:
        raise WrongAnswerError(f"no gradient reaches {missing}")


def _check_sgd_momentum(step: Callable[..., tuple[np.ndarray, np.ndarray]]) -> None:
    rng = _rng(4)
    p0, grads = rng.standard_normal(6), rng.standard_normal((3, 6))
    param = Tensor(p0.copy(), requires_grad=True)
    opt = optim.SGD([param], lr=0.1, momentum=0.9)
    p, buf = p0.copy(), np.zeros(6)
    for t, g in enumerate(grads):
        param.grad = g.copy()
        opt.step()
        p, buf = step(p, g, buf, 0.1, 0.9)
        _close(p, param.numpy(), f"parameter after step {t + 1}")


def _check_clip(clip: Callable[..., tuple[list[np.ndarray], float]]) -> None:
    rng = _rng(5)
    for max_norm in [0.5, 100.0]:
        grads = [rng.standard_normal((3, 2)), rng.standard_normal(4)]
        params = [Tensor(np.zeros_like(g), requires_grad=True) for g in grads]
        for p, g in zip(params, grads, strict=True):
            p.grad = g.copy()
        norm = optim.clip_grad_norm_(params, max_norm)
        clipped, got_norm = clip([g.copy() for g in grads], max_norm)
        _close(got_norm, norm, f"total norm (max_norm {max_norm})")
        for i, (c, p) in enumerate(zip(clipped, params, strict=True)):
            _close(c, p.grad, f"clipped gradient {i} (max_norm {max_norm})", rtol=1e-6)


def _check_warmup_cosine(lr: Callable[[int, int, int, float], float]) -> None:
    for t in [0, 1, 5, 10, 11, 37, 99, 100, 120]:
        _close(lr(t, 100, 10, 3e-3), optim.warmup_cosine(t, 100, 10, 3e-3), f"lr at step {t}")


# 01 · The coding rate


def _check_coding_rate(fn: Callable[[np.ndarray, float], float]) -> None:
    rng = _rng(6)
    for shape, eps in [((50, 6), 0.5), ((4, 9), 0.1)]:
        Z = rng.standard_normal(shape)
        _close(fn(Z, eps), rate.coding_rate(Z, eps), f"R for Z of shape {shape}, eps {eps}")


def _check_repeated(fn: Callable[[np.ndarray, int, float], float]) -> None:
    z = _rng(7).standard_normal(5)
    for N, eps in [(3, 0.5), (40, 0.5), (40, 2.0)]:
        _close(fn(z, N, eps), rate.coding_rate(np.tile(z, (N, 1)), eps), f"N = {N}, eps = {eps}", rtol=1e-6)


def _check_rank_r(fn: Callable[[int, int, float], float]) -> None:
    for d, r, eps in [(16, 2, 0.5), (32, 4, 0.1), (8, 8, 1.0)]:
        N = 10 * r  # rows A Q^T with A^T A = (N / r) I: covariance (1/r) Q Q^T, r eigenvalues 1/r
        A, _ = np.linalg.qr(_rng(r).standard_normal((N, r)))
        Q, _ = np.linalg.qr(_rng(d).standard_normal((d, r)))
        Z = math.sqrt(N / r) * A @ Q.T
        _close(fn(d, r, eps), rate.coding_rate(Z, eps), f"d = {d}, r = {r}, eps = {eps}", rtol=1e-6)


# 02 · Rate reduction


def _check_compression_rate(fn: Callable[[np.ndarray, np.ndarray, float], float]) -> None:
    Z, U = _mixture(8)
    _close(fn(Z, U, 0.5), rate.compression_rate(Z, U, 0.5), "R^c")


def _check_mcr2(fn: Callable[[np.ndarray, np.ndarray, float], float]) -> None:
    Z, _ = _mixture(9)
    labels = np.arange(len(Z)) % 3
    _close(fn(Z, labels, 0.5), rate.mcr2(Z, labels, 0.5), "Delta R(Z, Pi)")


def _check_srr(fn: Callable[[np.ndarray, np.ndarray, float, float], float]) -> None:
    Z, U = _mixture(10)
    _close(fn(Z, U, 0.5, 0.01), rate.sparse_rate_reduction(Z, U, 0.5, 0.01), "Delta R - lam ||Z||_1")


# 03 · MSSA


def _check_ssa(fn: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> None:
    Z, U = _mixture(11)
    _close(fn(Z, U[1]), rate.ssa(Z, U[1]), "SSA(Z | U_1)")


def _check_mssa(fn: Callable[[np.ndarray, np.ndarray, float], np.ndarray]) -> None:
    Z, U = _mixture(12)
    _close(fn(Z, U, 0.7), rate.mssa(Z, U, 0.7), "MSSA(Z | U)")


def _check_grad_compression(fn: Callable[[np.ndarray, np.ndarray, float], np.ndarray]) -> None:
    Z, U = _mixture(13)
    _close(fn(Z, U, 0.5), rate.grad_compression_rate(Z, U, 0.5), "grad R^c")


# 04 · ISTA


def _lasso_problem(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = _rng(seed)
    D = np.eye(8) + 0.2 * rng.standard_normal((8, 8))
    return rng.standard_normal((10, 8)), D / np.linalg.norm(D, axis=0)


def _check_ista(fn: Callable[..., np.ndarray]) -> None:
    Zhalf, D = _lasso_problem(14)
    Z = np.maximum(_rng(15).standard_normal(Zhalf.shape), 0)
    _close(fn(Z, D, 0.3, 0.1, Zhalf), rate.ista_step(Z, D, 0.3, 0.1, Zhalf), "one ISTA step")


def _check_lam_all_zero(fn: Callable[[np.ndarray, np.ndarray, float], float]) -> None:
    Zhalf, D = _lasso_problem(16)
    lam = float(fn(Zhalf, D, 0.1))
    if rate.l0_fraction(rate.ista_step(Zhalf, D, 0.1, lam)) != 0:
        raise WrongAnswerError(f"at lam = {lam:.6g} one step still leaves nonzero entries")
    if rate.l0_fraction(rate.ista_step(Zhalf, D, 0.1, 0.999 * lam)) == 0:
        raise WrongAnswerError(f"lam = {lam:.6g} is not the smallest: 0.999 lam already zeroes everything")


def _check_kkt(fn: Callable[..., float]) -> None:
    Zhalf, D = _lasso_problem(17)
    for Z in [np.maximum(_rng(18).standard_normal(Zhalf.shape), 0), Zhalf]:
        _close(fn(Z, Zhalf, D, 0.1), rate.lasso_kkt_residual(Z, Zhalf, D, 0.1), "KKT residual")


EXERCISES: dict[str, Exercise] = {
    "00.1": Exercise(_check_exp, "exp_op"),
    "00.2": Exercise(_check_lsq_grad, "lsq_grad"),
    "00.3": Exercise(_check_sum_to_shape, "sum_to_shape"),
    "00b.1": Exercise(_check_two_layer, "TwoLayer"),
    "00b.2": Exercise(_check_sgd_momentum, "sgd_momentum_step"),
    "00b.3": Exercise(_check_clip, "clip_by_global_norm"),
    "00b.4": Exercise(_check_warmup_cosine, "warmup_cosine_lr"),
    "01.1": Exercise(_check_coding_rate, "coding_rate"),
    "01.2": Exercise(_check_repeated, "rate_of_repeated_token"),
    "01.3": Exercise(_check_rank_r, "rank_r_rate"),
    "02.1": Exercise(_check_compression_rate, "compression_rate"),
    "02.2": Exercise(_check_mcr2, "mcr2"),
    "02.3": Exercise(_check_srr, "sparse_rate_reduction"),
    "03.1": Exercise(_check_ssa, "ssa"),
    "03.2": Exercise(_check_mssa, "mssa"),
    "03.3": Exercise(_check_grad_compression, "grad_compression_rate"),
    "04.1": Exercise(_check_ista, "ista_step"),
    "04.2": Exercise(_check_lam_all_zero, "lam_all_zero"),
    "04.3": Exercise(_check_kkt, "kkt_residual"),
    **MODEL_EXERCISES,  # 05-08
}


def check(key: str, answer: Any) -> bool | None:
    """Check ``answer`` to exercise ``key``: print and return True, False (wrong) or None (not tried)."""
    if key not in EXERCISES:
        raise KeyError(f"no exercise {key!r}; there are {', '.join(EXERCISES)}")
    exercise = EXERCISES[key]
    try:
        exercise.checker(answer)
    except NotImplementedError:
        print(f"{key}: not attempted yet (solution({key!r}) prints a reference answer).")
        return None
    except WrongAnswerError as exc:
        print(f"{key}: not right yet. {exc}")
        return False
    except Exception as exc:  # the answer itself failed: report it as wrong, with the error
        print(f"{key}: not right yet. Your answer raised {type(exc).__name__}: {exc}")
        return False
    print(f"{key}: correct.")
    return True


def solution(key: str) -> str:
    """Print and return the source of the reference solution to exercise ``key``."""
    source = inspect.getsource(getattr(solutions, EXERCISES[key].solution))
    print(source)
    return source


__all__ = ["EXERCISES", "Exercise", "WrongAnswerError", "check", "solution"]
