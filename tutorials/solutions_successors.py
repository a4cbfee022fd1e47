"""Reference solutions to the exercises of tutorials 09-14 (tutorials/exercises_successors.py checks them).

Try each exercise in its notebook first; ``exercises_successors.solution("12.1")`` prints one
of these. Rows are tokens, as in the library: ``Z`` is (N, d), ``U`` is (K, d, p).
"""

from __future__ import annotations

import math

import numpy as np


def _softmax(A: np.ndarray, axis: int = -1) -> np.ndarray:
    e = np.exp(A - A.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


# 09 · Encoders and decoders from the same operators


def unpatchify(patches: np.ndarray, P: int, image_size: tuple[int, int]) -> np.ndarray:
    """(B, L, P P C) -> (B, C, H, W): undo patchify's (row, column, channel) order inside a patch."""
    (H, W), (B, n) = image_size, (len(patches), patches.shape[-1])
    C = n // (P * P)
    return patches.reshape(B, H // P, W // P, P, P, C).transpose(0, 5, 1, 3, 2, 4).reshape(B, C, H, W)


def random_masking(noise: np.ndarray, ratio: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Keep the int(L (1 - ratio)) patches of smallest noise; return (ids_keep, the rank of each patch,
    mask = 1 where a patch is hidden)."""
    keep = int(noise.shape[1] * (1 - ratio))
    order = np.argsort(noise, axis=1, kind="stable")
    rank = np.argsort(order, axis=1, kind="stable")
    return order[:, :keep], rank, rank >= keep


def masked_loss(pred: np.ndarray, target: np.ndarray, mask: np.ndarray, norm_pix: bool) -> float:
    """Mean over hidden patches of each patch's mean squared error; norm_pix standardizes each target patch
    (ddof 1, + 1e-6 under the root)."""
    if norm_pix:
        target = (target - target.mean(-1, keepdims=True)) / np.sqrt(
            target.var(-1, ddof=1, keepdims=True) + 1e-6
        )
    per_patch = ((pred - target) ** 2).mean(axis=-1)
    return float((per_patch * mask).sum() / mask.sum())


def sincos_embedding(dim: int, grid: tuple[int, int]) -> np.ndarray:
    """Row 0 (cls) zero; patch t = i w + j gets [e(j), e(i)], e(x) = [sin(x omega), cos(x omega)], omega_k =
    10000^(-k / (dim/4)), k < dim/4."""
    h, w = grid
    omega = 10000.0 ** (-np.arange(dim // 4) / (dim // 4))

    def e(x: np.ndarray) -> np.ndarray:
        return np.concatenate([np.sin(np.outer(x, omega)), np.cos(np.outer(x, omega))], axis=1)

    rows, cols = np.divmod(np.arange(h * w), w)
    return np.concatenate([np.zeros((1, dim)), np.concatenate([e(cols), e(rows)], axis=1)])


# 10 · Objects segment themselves


def cls_maps(attention: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """Row 0 (the cls token's query) without its own entry, per head: (B, K, N, N) -> (B, K, gh, gw)."""
    B, K = attention.shape[:2]
    return attention[:, :, 0, 1:].reshape(B, K, *grid)


def mass_threshold(maps: np.ndarray, keep: float) -> np.ndarray:
    """Keep an entry when the entries ranked above it hold less than ``keep`` of the map's mass."""
    flat = maps.reshape(-1, maps.shape[-2] * maps.shape[-1])
    out = np.zeros(flat.shape, dtype=bool)
    for row, m in zip(out, flat, strict=True):
        order = np.argsort(-m, kind="stable")
        before = np.cumsum(m[order]) - m[order]
        row[order] = before < keep * m.sum()
    return out.reshape(maps.shape)


def iou(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """|P and T| / |P or T| per image, (B,); 1 where both masks are empty."""
    inter = (pred & truth).sum(axis=(1, 2))
    union = (pred | truth).sum(axis=(1, 2))
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


def patch_coverage(truth: np.ndarray, P: int) -> np.ndarray:
    """The share of each P x P patch's pixels inside the mask: (B, H, W) -> (B, H/P, W/P)."""
    B, H, W = truth.shape
    return truth.reshape(B, H // P, P, W // P, P).mean(axis=(2, 4))


# 11 · Learning without labels


def teacher_targets(t: np.ndarray, c: np.ndarray, tau: float) -> np.ndarray:
    """q = softmax((t - c) / tau) per row: centered by c, sharpened by a small tau."""
    return _softmax((t - c) / tau)


def center_update(c: np.ndarray, t: np.ndarray, mu: float) -> np.ndarray:
    """c <- mu c + (1 - mu) (mean of the teacher's scores over the batch), shape (1, K)."""
    return mu * c + (1 - mu) * t.mean(axis=0, keepdims=True)


def ema_step(
    teacher: dict[str, np.ndarray], student: dict[str, np.ndarray], step: int, total: int, base: float
):
    """m = 1 - (1 - base)(1 + cos(pi t / T)) / 2, then teacher <- m teacher + (1 - m) student per name."""
    m = 1 - (1 - base) * 0.5 * (1 + math.cos(math.pi * min(step / total, 1.0)))
    return {name: m * teacher[name] + (1 - m) * student[name] for name in teacher}


def entropies(q: np.ndarray) -> tuple[float, float]:
    """(mean over rows of H(q_b), H of the mean row), natural log; 0 log 0 = 0."""

    def entropy(p: np.ndarray) -> np.ndarray:
        return -(p * np.log(np.where(p > 0, p, 1))).sum(axis=-1)

    return float(entropy(q).mean()), float(entropy(q.mean(axis=0)))


# 12 · What came after


def variational_rate(Z: np.ndarray, U: np.ndarray, Pi: np.ndarray, eps: float) -> float:
    """1/2 sum_k (n_k / N) sum_j log(1 + p / (n_k eps^2) m_kj), m_kj = sum_i pi_ik (Z U_k)_ij^2."""
    N, p = Z.shape[0], U.shape[2]
    total = 0.0
    for k, Uk in enumerate(U):
        n_k = Pi[:, k].sum()
        m = (Pi[:, k, None] * (Z @ Uk) ** 2).sum(axis=0)
        total += 0.5 * n_k / N * np.log1p(p / (n_k * eps**2) * m).sum()
    return total


def memberships(w: np.ndarray, tau: np.ndarray, K: int) -> np.ndarray:
    """pi_ik = softmax over k of tau_k sum_j w_ikj^2 / sum_t w_tkj^2; w (N, K p) -> Pi (K, N)."""
    N = w.shape[0]
    W = w.reshape(N, K, -1).transpose(1, 0, 2)  # (K, N, p)
    s = (W**2 / (W**2).sum(axis=1, keepdims=True)).sum(axis=-1)  # (K, N)
    return _softmax(tau[:, None] * s, axis=0)


def tssa_out(w: np.ndarray, Pi: np.ndarray, K: int) -> np.ndarray:
    """-pi_ik w_ikj / (1 + m_kj), m_kj = sum_i pi_ik w_ikj^2 / sum_i pi_ik; heads side by side (N, K p)."""
    N = w.shape[0]
    W = w.reshape(N, K, -1).transpose(1, 0, 2)  # (K, N, p)
    m = (Pi[..., None] * W**2).sum(axis=1, keepdims=True) / Pi.sum(axis=1)[:, None, None]
    return (-W * Pi[..., None] / (1 + m)).transpose(1, 0, 2).reshape(N, -1)


def alpha_code(Y: np.ndarray, D: np.ndarray, eta: float, lam: float) -> np.ndarray:
    """Two ISTA steps from A = 0: A1 = ReLU(eta Y D - eta lam), A2 = ReLU(A1 - eta (A1 D^T - Y) D - eta lam)
    (rows are tokens: Y (N, d), D (d, m), A (N, m))."""
    A1 = np.maximum(eta * Y @ D - eta * lam, 0)
    return np.maximum(A1 - eta * (A1 @ D.T - Y) @ D - eta * lam, 0)


# 13 · One model, many devices


def shard(n: int, rank: int, world_size: int, seed: int, epoch: int) -> np.ndarray:
    """Everyone's permutation, padded with its first indices to a multiple of W; rank r takes every W-th."""
    order = np.random.default_rng([seed, epoch]).permutation(n)
    order = np.concatenate([order, order[: -n % world_size]])
    return order[rank::world_size]


def step_batch(n: int, B: int, world_size: int, rank: int, seed: int, epoch: int, t: int) -> np.ndarray:  # noqa: PLR0917
    """Rank r's part of global step t: its shard's t-th run of B / W indices."""
    b = B // world_size
    return shard(n, rank, world_size, seed, epoch)[t * b : (t + 1) * b]


def bucket_plan(nbytes: list[int], cap: int) -> list[list[int]]:
    """Arrays in order into buckets of at most ``cap`` bytes; one that does not fit opens a new bucket."""
    buckets: list[list[int]] = []
    size = 0
    for i, b in enumerate(nbytes):
        if not buckets or size + b > cap:
            buckets.append([])
            size = 0
        buckets[-1].append(i)
        size += b
    return buckets


# 14 · Layer by layer


def subspace_bases(W: np.ndarray, K: int) -> np.ndarray:
    """U_k = (rows k p .. (k+1) p of the qkv weight (K p, d))^T, stacked: (K, d, p)."""
    return W.reshape(K, W.shape[0] // K, W.shape[1]).transpose(0, 2, 1)


def ista_zeros(x: np.ndarray, D: np.ndarray, eta: float, lam: float) -> tuple[float, float]:
    """Shares of the entries of ReLU(x P - eta lam), P = I + eta (D - D^T D), zeroed by the sign
    (x P <= 0) and by the threshold alone (0 < x P <= eta lam)."""
    xP = x @ (np.eye(D.shape[0]) + eta * (D - D.T @ D))
    return float((xP <= 0).mean()), float(((xP > 0) & (xP <= eta * lam)).mean())


def tied_mssa(x: np.ndarray, W: np.ndarray, K: int, s: float) -> np.ndarray:
    """s sum_k softmax(w_k w_k^T / sqrt(p)) w_k U_k^T, w_k = x U_k, U_k^T = head k's rows of W."""
    p = W.shape[0] // K
    out = np.zeros_like(x)
    for k in range(K):
        Wk = W[k * p : (k + 1) * p]
        w = x @ Wk.T
        out += _softmax(w @ w.T / math.sqrt(p)) @ w @ Wk
    return s * out
