"""Reference solutions to the tutorials' exercises (tutorials/exercises.py checks them).

Try each exercise in its notebook first; ``exercises.solution("03.1")`` prints one of
these. Rows are tokens, as in the library: ``Z`` is (N, d), ``U`` is (K, d, p).
"""

from __future__ import annotations

import math

import numpy as np

import whitebox.functional as F
from whitebox import nn
from whitebox.tensor import Tensor, make

# 00 · Autograd from scratch


def exp_op(t: Tensor) -> Tensor:
    """y = e^x; VJP g -> g * e^x (the output itself)."""
    out = np.exp(t.data)
    return make(out, (t,), lambda g: (g * out,))


def lsq_grad(x: np.ndarray, w: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Gradient of L(w) = mean((x w - y)^2) over the N rows: (2/N) x^T (x w - y)."""
    return 2 * x.T @ (x @ w - y) / len(y)


def sum_to_shape(g: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Sum g over the leading axes broadcasting added and the size-1 axes it stretched."""
    g = g.sum(axis=tuple(range(g.ndim - len(shape))))
    stretched = tuple(i for i, n in enumerate(shape) if n == 1 and g.shape[i] != 1)
    return g.sum(axis=stretched, keepdims=True) if stretched else g


# 00b · Modules, parameters and a training loop


class TwoLayer(nn.Module):
    """out(relu(hidden(x))): two Linear layers held as attributes, so their Parameters are found."""

    def __init__(self, d_in: int, d_hidden: int, d_out: int) -> None:
        super().__init__()
        self.hidden = nn.Linear(d_in, d_hidden)
        self.out = nn.Linear(d_hidden, d_out)

    def forward(self, x: Tensor) -> Tensor:
        return self.out(F.relu(self.hidden(x)))


def sgd_momentum_step(
    p: np.ndarray, g: np.ndarray, buf: np.ndarray, lr: float, mu: float
) -> tuple[np.ndarray, np.ndarray]:
    """b <- mu b + g, p <- p - lr b; returns (new p, new b)."""
    buf = mu * buf + g
    return p - lr * buf, buf


def clip_by_global_norm(grads: list[np.ndarray], max_norm: float) -> tuple[list[np.ndarray], float]:
    """Scale all gradients by min(1, max_norm / ||g||) with ||g|| the norm of all of them together."""
    norm = math.sqrt(sum(float((g * g).sum()) for g in grads))
    scale = min(1.0, max_norm / (norm + 1e-6))
    return [g * scale for g in grads], norm


def warmup_cosine_lr(step: int, total_steps: int, warmup_steps: int, base_lr: float) -> float:
    """Linear warmup from 0 to base_lr over warmup_steps, then cosine decay to 0 at total_steps."""
    if step < warmup_steps:
        return base_lr * step / warmup_steps
    progress = min((step - warmup_steps) / max(total_steps - warmup_steps, 1), 1.0)
    return base_lr * 0.5 * (1 + math.cos(math.pi * progress))


# 01 · The coding rate


def coding_rate(Z: np.ndarray, eps: float) -> float:
    """R = 1/2 logdet(I_d + d/(N eps^2) Z^T Z) for rows Z (N, d)."""
    N, d = Z.shape
    return 0.5 * np.linalg.slogdet(np.eye(d) + d / (N * eps**2) * Z.T @ Z)[1]


def rate_of_repeated_token(z: np.ndarray, N: int, eps: float) -> float:
    """N copies of z: Z^T Z / N = z z^T has one eigenvalue ||z||^2, so R = 1/2 log(1 + d ||z||^2 / eps^2)."""
    return 0.5 * math.log1p(len(z) * float(z @ z) / eps**2)


def rank_r_rate(d: int, r: int, eps: float) -> float:
    """Covariance with r eigenvalues 1/r (and d - r zeros): R = r/2 log(1 + d / (r eps^2))."""
    return r / 2 * math.log1p(d / (r * eps**2))


# 02 · Rate reduction


def compression_rate(Z: np.ndarray, U: np.ndarray, eps: float) -> float:
    """R^c = sum_k 1/2 logdet(I_p + p/(N eps^2) (Z U_k)^T (Z U_k))."""
    N = Z.shape[0]
    total = 0.0
    for Uk in U:
        P = Z @ Uk
        total += 0.5 * np.linalg.slogdet(np.eye(P.shape[1]) + P.shape[1] / (N * eps**2) * P.T @ P)[1]
    return total


def mcr2(Z: np.ndarray, labels: np.ndarray, eps: float) -> float:
    """Delta R(Z, Pi) = R(Z) - sum_j N_j/N R(Z_j) for hard labels."""
    parts = sum((labels == j).mean() * coding_rate(Z[labels == j], eps) for j in np.unique(labels))
    return coding_rate(Z, eps) - parts


def sparse_rate_reduction(Z: np.ndarray, U: np.ndarray, eps: float, lam: float) -> float:
    """Delta R - lam ||Z||_1."""
    return coding_rate(Z, eps) - compression_rate(Z, U, eps) - lam * np.abs(Z).sum()


# 03 · MSSA from compression


def _softmax_rows(A: np.ndarray) -> np.ndarray:
    e = np.exp(A - A.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def ssa(Z: np.ndarray, Uk: np.ndarray) -> np.ndarray:
    """Row form of SSA: softmax(P P^T) P with P = Z U_k, shape (N, p)."""
    P = Z @ Uk
    return _softmax_rows(P @ P.T) @ P


def mssa(Z: np.ndarray, U: np.ndarray, eps: float) -> np.ndarray:
    """alpha sum_k SSA(Z | U_k) U_k^T with alpha = p / (N eps^2), shape (N, d)."""
    N, p = Z.shape[0], U.shape[2]
    return p / (N * eps**2) * sum(ssa(Z, Uk) @ Uk.T for Uk in U)


def grad_compression_rate(Z: np.ndarray, U: np.ndarray, eps: float) -> np.ndarray:
    """Row form of eq. (2): sum_k alpha (I_N + alpha P_k P_k^T)^{-1} P_k U_k^T."""
    N, p = Z.shape[0], U.shape[2]
    alpha = p / (N * eps**2)
    return sum(alpha * np.linalg.solve(np.eye(N) + alpha * (Z @ Uk) @ (Z @ Uk).T, Z @ Uk) @ Uk.T for Uk in U)


# 04 · ISTA from sparse coding


def ista_step(Z: np.ndarray, D: np.ndarray, eta: float, lam: float, Zhalf: np.ndarray) -> np.ndarray:
    """Row form of eq. (2): ReLU(Z + eta (Zhalf - Z D^T) D - eta lam)."""
    return np.maximum(Z + eta * (Zhalf - Z @ D.T) @ D - eta * lam, 0)


def lam_all_zero(Zhalf: np.ndarray, D: np.ndarray, eta: float) -> float:
    """The smallest lam at which one warm-started step (eq. (3)) outputs only zeros: max(V) / eta."""
    V = Zhalf + eta * (Zhalf - Zhalf @ D.T) @ D
    return max(float(V.max()), 0.0) / eta


def kkt_residual(Z: np.ndarray, Zhalf: np.ndarray, D: np.ndarray, lam: float) -> float:
    """max(max(-Z), max(-G), max|Z * G|) with G = (Z D^T - Zhalf) D + lam."""
    G = (Z @ D.T - Zhalf) @ D + lam
    return float(max((-Z).max(), (-G).max(), np.abs(Z * G).max()))


# 05 · Building CRATE


def mssa_weights(U: np.ndarray, kappa: float, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """qkv rows p^(1/4) U_k^T (cancelling the module's 1/sqrt(p)); to_out kappa alpha p^(-1/4) [U_1..U_K]."""
    K, d, p = U.shape
    qkv = p**0.25 * U.transpose(0, 2, 1).reshape(K * p, d)
    to_out = kappa * alpha * p**-0.25 * U.transpose(1, 0, 2).reshape(d, K * p)
    return qkv, to_out


def crate_block(block: nn.Module, Z: np.ndarray) -> np.ndarray:
    """Z^{l+1/2} = Z + MSSA(LN1(Z)); Z^{l+1} = ISTA(LN2(Z^{l+1/2})), from the block's parameters."""

    def layer_norm(x: np.ndarray, norm: nn.Module) -> np.ndarray:
        x_hat = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + norm.eps)
        return x_hat * norm.weight.numpy() + norm.bias.numpy()

    attn, ista = block.attn, block.ista
    K, p = attn.heads, attn.dim_head
    x = layer_norm(Z, block[0].norm)
    W = attn.qkv.weight.numpy()
    heads = []
    for k in range(K):
        w = x @ W[k * p : (k + 1) * p].T  # (N, p): query = key = value
        heads.append(_softmax_rows(w @ w.T / math.sqrt(p)) @ w)
    out = attn.to_out[0]
    half = Z + np.concatenate(heads, axis=1) @ out.weight.numpy().T + out.bias.numpy()
    y = layer_norm(half, block[1].norm)
    D = ista.weight.numpy()
    return np.maximum(y + ista.eta * (y - y @ D.T) @ D - ista.eta * ista.lam, 0)


def patchify(images: np.ndarray, P: int) -> np.ndarray:
    """(B, C, H, W) -> (B, n, P P C): patches in row-major order, each flattened as (row, column, channel)."""
    B, C, H, W = images.shape
    x = images.reshape(B, C, H // P, P, W // P, P).transpose(0, 2, 4, 3, 5, 1)
    return x.reshape(B, (H // P) * (W // P), P * P * C)


def crate_parameters(  # noqa: PLR0917
    image_size: int, patch_size: int, channels: int, num_classes: int, dim: int, depth: int, heads: int
) -> int:
    """Embedding (LN, Linear, LN), cls, positions, depth blocks of 3 dim^2 + 5 dim, head (LN, Linear)."""
    patch_dim, n = channels * patch_size**2, (image_size // patch_size) ** 2
    embedding = 2 * patch_dim + patch_dim * dim + dim + 2 * dim
    block = 2 * dim + dim * dim + (dim * dim + dim) + 2 * dim + dim * dim  # LN, qkv, to_out, LN, D
    head = 2 * dim + dim * num_classes + num_classes
    return embedding + dim + (n + 1) * dim + depth * block + head


# 06 · Training and inspecting


def smoothing_floor(C: int, s: float) -> float:
    """The smoothed loss is the cross-entropy H(q, p) >= H(q), with equality at p = q: the entropy of q."""
    q_true, q_other = 1 - s + s / C, s / C
    return -(q_true * math.log(q_true) + (C - 1) * q_other * math.log(q_other))


def measured_compression(Z: np.ndarray, U: np.ndarray, eps2: float) -> float:
    """sum_k 1/2 logdet(I + p/(N eps^2) Y_k^T Y_k), Y_k's rows the projections z U_k scaled to unit length."""
    N, total = Z.shape[0], 0.0
    for Uk in U:
        Y = Z @ Uk
        Y = Y / np.linalg.norm(Y, axis=1, keepdims=True)
        p = Y.shape[1]
        total += 0.5 * np.linalg.slogdet(np.eye(p) + p / (N * eps2) * Y.T @ Y)[1]
    return total


def cls_attention(x: np.ndarray, W: np.ndarray, heads: int) -> np.ndarray:
    """Row 0 of softmax(w_k w_k^T / sqrt(p)) per head, w_k = x W_k^T, W_k head k's rows of qkv: (heads, N)."""
    p = W.shape[0] // heads
    rows = []
    for k in range(heads):
        w = x @ W[k * p : (k + 1) * p].T
        rows.append(_softmax_rows(w[:1] @ w.T / math.sqrt(p))[0])
    return np.stack(rows)


# 07 · CRATE for language


def causal_ssa_head(w: np.ndarray) -> np.ndarray:
    """softmax(w w^T / sqrt(p) + M) w, M = -inf above the diagonal: row i mixes rows 0..i only."""
    T, p = w.shape
    scores = w @ w.T / math.sqrt(p)
    scores[np.triu_indices(T, 1)] = -np.inf
    return _softmax_rows(scores) @ w


def next_token_loss(logits: np.ndarray, ids: np.ndarray) -> float:
    """Mean over positions t < T-1 of -log softmax(logits_t)[ids_{t+1}]: position t predicts the next id."""
    z = logits[:, :-1]
    log_p = z - z.max(-1, keepdims=True)
    log_p = log_p - np.log(np.exp(log_p).sum(-1, keepdims=True))
    return float(-np.take_along_axis(log_p, ids[:, 1:, None], axis=-1).mean())


def lm_parameters(vocab_size: int, block_size: int, dim: int, depth: int, heads: int) -> int:
    """E (V x dim, also the output head: counted once), positions, blocks of 3 dim^2 + 5 dim, final LN."""
    block = 2 * dim + dim * dim + (dim * dim + dim) + 2 * dim + dim * dim
    return vocab_size * dim + block_size * dim + depth * block + 2 * dim


def greedy(model: nn.Module, prompt: np.ndarray, n: int) -> np.ndarray:
    """Append the argmax of the last position's logits n times, feeding at most block_size ids."""
    ids = np.asarray(prompt, dtype=np.int64)
    for _ in range(n):
        logits = model(ids[None, -model.block_size :]).numpy()[0, -1]
        ids = np.append(ids, int(np.argmax(logits)))
    return ids


# 08 · Masked completion


def masking_fractions(p: float, V: int) -> dict[str, float]:
    """Chosen p; of the chosen 0.8 [MASK], 0.1 random (of which 1/V draws the original back), 0.1 kept."""
    return {"chosen": p, "mask": 0.8, "random": 0.1 * (1 - 1 / V), "kept": 0.1 + 0.1 / V}


def masked_loss_grad(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """(softmax - onehot) / |C| at chosen positions, 0 at ignored ones (target -100)."""
    chosen = targets != -100
    probs = _softmax_rows(logits)
    onehot = np.zeros_like(logits)
    onehot[chosen, targets[chosen]] = 1
    return np.where(chosen[..., None], probs - onehot, 0) / chosen.sum()


def corrupt(  # noqa: PLR0917
    ids: np.ndarray, chosen_u: np.ndarray, kind_u: np.ndarray, random_ids: np.ndarray, p: float, mask_id: int
) -> tuple[np.ndarray, np.ndarray]:
    """Chosen: chosen_u < p; of those, kind_u < 0.8: [MASK], 0.8 <= kind_u < 0.9: random_ids, else kept."""
    chosen = chosen_u < p
    inputs = np.where(chosen & (kind_u < 0.8), mask_id, ids)
    inputs = np.where(chosen & (kind_u >= 0.8) & (kind_u < 0.9), random_ids, inputs)
    return inputs, np.where(chosen, ids, -100)
