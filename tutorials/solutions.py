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
