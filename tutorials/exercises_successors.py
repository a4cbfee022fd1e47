"""Checks for the exercises of tutorials 09-14: ``check("12.1", my_rate)`` says whether an answer is right.

The same contract as tutorials/exercises.py (which holds the exercises of tutorials 00-08):
each key has a checker that compares an answer with the library on tiny fixed inputs and a
reference solution, here in tutorials/solutions_successors.py. ``check`` returns True
(right), False (wrong, with the reason printed) or None (not attempted: the answer raised
NotImplementedError). tests/test_exercises.py feeds every checker its solution and wrong answers.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import numpy as np
import solutions_successors as solutions
from checking import Exercise, WrongAnswerError, close, mixture, rng

import whitebox
from whitebox import distributed, measure, nn, ops, rate, segment
from whitebox.crate import MSSA, autoencoder
from whitebox.crate.alpha import sparse_code
from whitebox.crate.ista import ISTA
from whitebox.distributed.buckets import plan_buckets
from whitebox.selfsup import DINOLoss, cosine_momentum, ema_update, make_teacher
from whitebox.selfsup.collapse import output_statistics
from whitebox.tensor import Tensor, no_grad


def _rows_on_simplex(scores: np.ndarray) -> np.ndarray:
    """softmax of each row: probabilities to feed a checker."""
    e = np.exp(scores - scores.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


# 09 · Encoders and decoders from the same operators


def _check_unpatchify(fn: Callable[[np.ndarray, int, tuple[int, int]], np.ndarray]) -> None:
    images = rng(54).standard_normal((2, 3, 8, 12))  # 3 channels, not square: the order matters
    for P in (2, 4):
        close(fn(autoencoder.patchify(images, P), P, (8, 12)), images, f"images back from {P} x {P} patches")


def _check_random_masking(fn: Callable[[np.ndarray, float], tuple[Any, Any, Any]]) -> None:
    noise = rng(55).random((3, 10))
    for ratio in (0.75, 0.3):
        want = autoencoder.random_masking(noise, ratio)
        got = fn(noise, ratio)
        if not isinstance(got, tuple) or len(got) != 3:
            raise WrongAnswerError("return three arrays: (ids_keep, ids_restore, mask)")
        for name, g, w in zip(("ids_keep", "ids_restore", "mask"), got, want, strict=True):
            close(g, w, f"{name} (mask ratio {ratio})")


def _check_masked_loss(fn: Callable[[np.ndarray, np.ndarray, np.ndarray, bool], float]) -> None:
    gen = rng(56)
    pred, target = gen.standard_normal((2, 6, 12)), 2 + 3 * gen.standard_normal((2, 6, 12))
    mask = gen.random((2, 6)) < 0.5
    mask[0, 0] = True  # at least one hidden patch
    for norm in (False, True):
        want = autoencoder.masked_patch_loss(Tensor(pred), target, mask, norm_pix_loss=norm).item()
        close(fn(pred, target, mask, norm), want, f"the loss (norm_pix_loss={norm})", rtol=1e-6)


def _check_sincos(fn: Callable[[int, tuple[int, int]], np.ndarray]) -> None:
    for dim, grid in ((8, (2, 3)), (16, (3, 2))):
        close(fn(dim, grid), autoencoder.sincos_pos_embed(dim, grid), f"dim {dim}, grid {grid}")


# 10 · Objects segment themselves


def _check_cls_maps(fn: Callable[[np.ndarray, tuple[int, int]], np.ndarray]) -> None:
    attention = rng(40).random((2, 3, 7, 7))  # N = 1 + 2 * 3: a 2 x 3 grid of patches, not square
    close(fn(attention, (2, 3)), segment.cls_attention_maps(attention, (2, 3)), "the cls maps (B, K, gh, gw)")


def _check_mass_threshold(fn: Callable[[np.ndarray, float], np.ndarray]) -> None:
    maps = rng(41).random((2, 3, 4, 5)) ** 3  # a few large entries, no ties
    for keep in (0.6, 0.9):
        got = np.asarray(fn(maps, keep))
        want = segment.mass_threshold(maps, keep)
        if got.shape != want.shape or not np.array_equal(got.astype(bool), want):
            kept = f"{int(np.sum(got))} entries" if got.shape == want.shape else f"shape {got.shape}"
            raise WrongAnswerError(f"keep = {keep}: {kept}, the rule keeps {int(want.sum())} of {maps.size}")


def _check_iou(fn: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> None:
    gen = rng(42)
    pred, truth = gen.random((4, 6, 6)) < 0.4, gen.random((4, 6, 6)) < 0.3
    pred[3], truth[3] = False, False  # both empty
    truth[2] = False  # nothing to find, something predicted
    close(fn(pred, truth), segment.iou(pred, truth), "IoU per image (the last two: truth empty)")


def _check_patch_coverage(fn: Callable[[np.ndarray, int], np.ndarray]) -> None:
    truth = rng(43).random((2, 8, 12)) < 0.5
    for P in (2, 4):
        close(fn(truth, P), segment.patch_coverage(truth, (P, P)), f"coverage of {P} x {P} patches")


# 11 · Learning without labels


def _check_teacher_targets(fn: Callable[[np.ndarray, np.ndarray, float], np.ndarray]) -> None:
    gen = rng(44)
    t, c = gen.standard_normal((5, 6)), 0.5 * gen.standard_normal((1, 6))
    loss = DINOLoss(6, teacher_temp=0.04)
    loss.center.data = c.astype(np.float32)
    want = loss.teacher_probs(Tensor(t), step=0)
    close(fn(t, c, 0.04), want, "q = softmax((t - c) / tau)", rtol=1e-5, atol=1e-6)


def _check_center_update(fn: Callable[[np.ndarray, np.ndarray, float], np.ndarray]) -> None:
    gen = rng(45)
    first, t = gen.standard_normal((4, 6)), gen.standard_normal((4, 6))
    loss = DINOLoss(6, center_momentum=0.9)
    loss.update_center([Tensor(first)])  # the first call sets c to the batch mean
    c = loss.center.numpy().astype(np.float64)
    loss.update_center([Tensor(t)])
    close(fn(c, t, 0.9), loss.center, "the new center (1, K)", rtol=1e-5, atol=1e-6)


def _check_ema_step(fn: Callable[..., dict[str, np.ndarray]]) -> None:
    whitebox.manual_seed(5)
    student = nn.Linear(3, 2)
    teacher = make_teacher(student)
    for q in student.parameters():  # the student has moved since the copy
        q.data = q.data + 0.5
    before = {n: q.numpy().astype(np.float64) for n, q in teacher.named_parameters()}
    now = {n: q.numpy().astype(np.float64) for n, q in student.named_parameters()}
    for step in (0, 30):
        ema_update(teacher, student, cosine_momentum(step, 100, 0.9))
        got = fn(before, now, step, 100, 0.9)
        if not isinstance(got, dict) or set(got) != set(before):
            raise WrongAnswerError(f"return a dict with the keys {sorted(before)}")
        for name, q in teacher.named_parameters():
            close(got[name], q, f"{name} at step {step} of 100", rtol=1e-5, atol=1e-6)
        before = {n: q.numpy().astype(np.float64) for n, q in teacher.named_parameters()}


def _check_entropies(fn: Callable[[np.ndarray], tuple[float, float]]) -> None:
    gen = rng(46)
    for tau in (1.0, 0.05):  # a soft and a sharp teacher
        q = _rows_on_simplex(gen.standard_normal((8, 5)) / tau)
        q[0] = np.eye(5)[2]  # one row exactly one-hot: 0 log 0 counts as 0
        stats = output_statistics(q)
        got = fn(q)
        close(got[0], stats["teacher_entropy"], f"mean row entropy (tau {tau})", rtol=1e-6)
        close(got[1], stats["teacher_mean_entropy"], f"entropy of the mean row (tau {tau})", rtol=1e-6)


# 12 · What came after


def _check_variational_rate(fn: Callable[..., float]) -> None:
    Z, U = mixture(47, N=12, K=3, p=2)
    Pi = _rows_on_simplex(rng(48).standard_normal((12, 3)) * 2)
    want = rate.variational_compression_rate(Z, U, Pi, 0.5).item()
    close(fn(Z, U, Pi, 0.5), want, "R^c_var(Z, Pi)", rtol=1e-6)


def _check_memberships(fn: Callable[[np.ndarray, np.ndarray, int], np.ndarray]) -> None:
    w = rng(49).standard_normal((9, 3 * 2))
    tau = np.array([9.0, 4.0, 1.0])  # a different temperature per head
    _, Pi = ops.tssa(Tensor(w[None]), Tensor(tau), 3)
    close(fn(w, tau, 3), Pi[0], "Pi (K, N)", rtol=1e-6)


def _check_tssa_out(fn: Callable[[np.ndarray, np.ndarray, int], np.ndarray]) -> None:
    w = rng(50).standard_normal((9, 3 * 2))
    out, Pi = ops.tssa(Tensor(w[None]), Tensor(np.array([9.0, 4.0, 1.0])), 3)
    close(fn(w, Pi[0], 3), out.numpy()[0], "TSSA(w) (N, K p)", rtol=1e-6, atol=1e-8)


def _check_alpha_code(fn: Callable[..., np.ndarray]) -> None:
    gen = rng(51)
    Y, D = gen.standard_normal((5, 4)), gen.uniform(-1, 1, (4, 16))  # m = 4 d: overcomplete
    for eta, lam in ((0.1, 0.1), (0.5, 0.3)):
        want = sparse_code(Tensor(Y), Tensor(D), eta, lam)
        close(fn(Y, D, eta, lam), want, f"A_2 (eta {eta}, lam {lam})")


# 13 · One model, many devices


def _check_shard(fn: Callable[[int, int, int, int, int], np.ndarray]) -> None:
    for n, W in ((24, 4), (10, 4)):  # 10 is not a multiple of 4: padded
        for r in range(W):
            want = distributed.shard_indices(n, r, W, seed=0, epoch=3)
            close(fn(n, r, W, 0, 3), want, f"rank {r} of {W}, n = {n}")


def _check_step_batch(fn: Callable[..., np.ndarray]) -> None:
    n, B, W = 24, 8, 4
    order = distributed.shard_indices(n, 0, 1, seed=1, epoch=2)  # what one process would see
    for t in range(n // B):
        parts = [np.asarray(fn(n, B, W, r, 1, 2, t)) for r in range(W)]
        for r, part in enumerate(parts):
            close(part, distributed.shard_indices(n, r, W, 1, 2)[t * 2 : (t + 1) * 2], f"rank {r}, step {t}")
        if sorted(np.concatenate(parts)) != sorted(order[t * B : (t + 1) * B]):
            raise WrongAnswerError(f"step {t}: the ranks together do not see the one-process batch")


def _check_bucket_plan(fn: Callable[[list[int], int], list[list[int]]]) -> None:
    sizes = [3, 5, 2, 40, 1, 1, 6, 2]  # float32 counts: 12, 20, 8, 160, ... bytes
    arrays = [np.zeros(s, dtype=np.float32) for s in sizes]
    for cap in (32, 40, 1000):  # 32: 12 + 20 fills a bucket exactly; 40: one array too big for any
        want = plan_buckets(arrays, cap)
        got = fn([a.nbytes for a in arrays], cap)
        if [list(b) for b in got] != want:
            raise WrongAnswerError(
                f"cap {cap} bytes, arrays of {[a.nbytes for a in arrays]}: {got}, expected {want}"
            )


# 14 · Layer by layer


def _check_subspace_bases(fn: Callable[[np.ndarray, int], np.ndarray]) -> None:
    whitebox.manual_seed(6)
    attn = MSSA(6, heads=3, dim_head=2)
    close(fn(attn.qkv.weight.numpy().astype(np.float64), 3), measure.subspace_bases(attn), "U (K, d, p)")


def _check_ista_zeros(fn: Callable[..., tuple[float, float]]) -> None:
    whitebox.manual_seed(7)
    x = rng(52).standard_normal((40, 6))
    for lam in (0.1, 2.0):
        ista, plain = ISTA(6, eta=0.1, lam=lam), ISTA(6, eta=0.1, lam=0.0)
        plain.weight.data = ista.weight.data
        with no_grad():  # the sign's zeros are those of the plain ReLU; the rest are the threshold's
            zero = 1 - measure.nonzero_fraction(ista(Tensor(x)))
            sign = 1 - measure.nonzero_fraction(plain(Tensor(x)))
        got = fn(x, ista.weight.numpy().astype(np.float64), 0.1, lam)
        close(got[0], sign, f"share zeroed by the sign (lam {lam})", rtol=0, atol=1e-9)
        close(got[1], zero - sign, f"share zeroed by the threshold alone (lam {lam})", rtol=0, atol=1e-9)


def _check_tied_mssa(fn: Callable[[np.ndarray, np.ndarray, int, float], np.ndarray]) -> None:
    whitebox.manual_seed(8)
    attn = MSSA(6, heads=3, dim_head=2, tied_out=True)
    attn.step.data = np.array([0.7], dtype=np.float32)
    x = rng(53).standard_normal((5, 6))
    with no_grad():
        want = attn(Tensor(x[None].astype(np.float32))).numpy()[0]
    got = fn(x, attn.qkv.weight.numpy().astype(np.float64), 3, 0.7)
    close(got, want, "MSSA with the tied output map", rtol=1e-4, atol=1e-5)


SUCCESSOR_EXERCISES: dict[str, Exercise] = {
    "09.1": Exercise(_check_unpatchify, "unpatchify"),
    "09.2": Exercise(_check_random_masking, "random_masking"),
    "09.3": Exercise(_check_masked_loss, "masked_loss"),
    "09.4": Exercise(_check_sincos, "sincos_embedding"),
    "10.1": Exercise(_check_cls_maps, "cls_maps"),
    "10.2": Exercise(_check_mass_threshold, "mass_threshold"),
    "10.3": Exercise(_check_iou, "iou"),
    "10.4": Exercise(_check_patch_coverage, "patch_coverage"),
    "11.1": Exercise(_check_teacher_targets, "teacher_targets"),
    "11.2": Exercise(_check_center_update, "center_update"),
    "11.3": Exercise(_check_ema_step, "ema_step"),
    "11.4": Exercise(_check_entropies, "entropies"),
    "12.1": Exercise(_check_variational_rate, "variational_rate"),
    "12.2": Exercise(_check_memberships, "memberships"),
    "12.3": Exercise(_check_tssa_out, "tssa_out"),
    "12.4": Exercise(_check_alpha_code, "alpha_code"),
    "13.1": Exercise(_check_shard, "shard"),
    "13.2": Exercise(_check_step_batch, "step_batch"),
    "13.3": Exercise(_check_bucket_plan, "bucket_plan"),
    "14.1": Exercise(_check_subspace_bases, "subspace_bases"),
    "14.2": Exercise(_check_ista_zeros, "ista_zeros"),
    "14.3": Exercise(_check_tied_mssa, "tied_mssa"),
}


def check(key: str, answer: Any) -> bool | None:
    """Check ``answer`` to exercise ``key``: print and return True, False (wrong) or None (not tried)."""
    if key not in SUCCESSOR_EXERCISES:
        raise KeyError(f"no exercise {key!r}; there are {', '.join(SUCCESSOR_EXERCISES)}")
    try:
        SUCCESSOR_EXERCISES[key].checker(answer)
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
    source = inspect.getsource(getattr(solutions, SUCCESSOR_EXERCISES[key].solution))
    print(source)
    return source


__all__ = ["SUCCESSOR_EXERCISES", "check", "solution"]
