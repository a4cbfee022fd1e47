"""Coding rate, rate reduction and the two steps CRATE unrolls from them.

The papers write a token set as columns, Z_paper in R^{d x N}. Here tokens are
rows: ``Z`` has shape ``(..., N, d)`` and equals Z_paper^T, with any leading
batch axes. Every docstring gives the paper's column form and, where the
transpose changes it, the row form this code computes. Subspace bases are
stacked as ``U`` of shape ``(K, d, p)``: ``U[k]`` is U_k in R^{d x p}.

Everything is built from Tensor ops, so it differentiates through the
autograd and runs on whichever device (NumPy or CuPy) ``Z`` lives on; NumPy
arrays are accepted and wrapped. Equation numbers refer to the tutorials
``tutorials/01_coding_rate.ipynb`` ... ``04_ista_from_sparse_coding.ipynb``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

import whitebox.functional as F
from whitebox import backend
from whitebox.tensor import Tensor

# ---- argument checks --------------------------------------------------------


def _tokens(Z: Any, op: str) -> Tensor:
    Z = Z if isinstance(Z, Tensor) else Tensor(Z)
    if Z.ndim < 2:
        raise ValueError(f"{op}: Z must hold tokens as rows, shape (..., N, d); got shape {Z.shape}")
    return Z


def _check_eps(eps: float, op: str) -> None:
    if not eps > 0 or not math.isfinite(eps):
        raise ValueError(f"{op}: eps must be a positive finite number, got {eps}")


def _constant(x: Any, like: Tensor) -> Tensor:
    """``x`` itself if a Tensor; else an array on ``like``'s device, with its dtype."""
    return x if isinstance(x, Tensor) else Tensor(x, dtype=like.dtype, device=like.device)


def _bases(U: Any, Z: Tensor, op: str) -> Tensor:
    U = _constant(U, Z)
    if U.ndim != 3:
        raise ValueError(f"{op}: U must stack K bases as shape (K, d, p); got shape {U.shape}")
    if U.shape[1] != Z.shape[-1]:
        raise ValueError(
            f"{op}: U has shape {U.shape} = (K, d, p) with d = {U.shape[1]}, but Z has shape "
            f"{Z.shape} = (..., N, d) with d = {Z.shape[-1]}"
        )
    return U


def _alpha(Z: Tensor, U: Tensor, eps: float, op: str) -> float:
    """The per-head scale p/(N eps^2)."""
    _check_eps(eps, op)
    return U.shape[2] / (Z.shape[-2] * eps**2)


def _project(Z: Tensor, U: Tensor) -> Tensor:
    """P_k = (U_k^T Z_paper)^T = Z U_k for every k, shape (..., K, N, p)."""
    return Z.reshape((*Z.shape[:-2], 1, *Z.shape[-2:])) @ U


def _eye(n: int, like: Tensor) -> Tensor:
    return Tensor(like.xp.eye(n, dtype=like.dtype))


def _half_logdet(Y: Tensor, scale: Any) -> Tensor:
    """1/2 logdet(I + scale Y^T Y) = 1/2 logdet(I + scale Y Y^T), through the smaller Gram matrix."""
    n, m = Y.shape[-2:]
    gram = Y @ Y.mT if n <= m else Y.mT @ Y
    return 0.5 * F.logdet(_eye(min(n, m), Y) + scale * gram)


# ---- the objective ----------------------------------------------------------


def coding_rate(Z: Any, eps: float) -> Tensor:
    """Coding rate of N tokens up to precision eps (tutorial 01, eqs. (1) and (4)).

    Column form:  R(Z) = 1/2 logdet(I_d + d/(N eps^2) Z Z^T) = 1/2 logdet(I_N + d/(N eps^2) Z^T Z).
    Row form (Z = Z_paper^T): the same with Z^T Z and Z Z^T swapped. The smaller of the
    N x N and d x d Gram matrices is used (Sylvester's identity). Returns shape ``Z.shape[:-2]``.
    """
    Z = _tokens(Z, "coding_rate")
    _check_eps(eps, "coding_rate")
    N, d = Z.shape[-2:]
    return _half_logdet(Z, d / (N * eps**2))


def compression_rate(Z: Any, U: Any, eps: float) -> Tensor:
    """Coding rate of the tokens against K subspaces (tutorial 02, eq. (1)).

    Column form:  R^c(Z; U_[K]) = sum_k R(U_k^T Z)
                               = 1/2 sum_k logdet(I_N + p/(N eps^2) (U_k^T Z)^T (U_k^T Z)).
    Row form: R(U_k^T Z_paper) = R(Z U_k), with U of shape (K, d, p). Returns shape ``Z.shape[:-2]``.
    """
    Z = _tokens(Z, "compression_rate")
    U = _bases(U, Z, "compression_rate")
    return coding_rate(_project(Z, U), eps).sum(axis=-1)


def variational_compression_rate(Z: Any, U: Any, Pi: Any, eps: float) -> Tensor:
    """ToST's variational compression term: soft memberships, only diagonal statistics.

    Column form, with Pi (N, K) the memberships (row i on the simplex, pi_k its column k),
    n_k = sum_i pi_ki and m_kj = (U_k^T Z diag(pi_k) Z^T U_k)_jj = sum_i pi_ki (u_kj^T z_i)^2:

        R^c_var(Z, Pi; U_[K]) = 1/2 sum_k (n_k/N) sum_j log(1 + p/(n_k eps^2) m_kj).

    As logdet(I + M) <= sum_j log(1 + M_jj) for M >= 0 (equality for diagonal M), it bounds
    sum_k (n_k/N) 1/2 logdet(I + p/(n_k eps^2) U_k^T Z diag(pi_k) Z^T U_k) from above: with one
    group and Pi = 1 that is ``compression_rate``. Row form: m_kj = sum_i pi_ik (Z U_k)_ij^2,
    O(N d p) per group. Returns shape ``Z.shape[:-2]``.
    """
    Z = _tokens(Z, "variational_compression_rate")
    U = _bases(U, Z, "variational_compression_rate")
    Pi = _constant(Pi, Z)
    N, K, p = Z.shape[-2], U.shape[0], U.shape[2]
    if Pi.shape[-2:] != (N, K):
        raise ValueError(
            f"variational_compression_rate: Pi must have shape (..., N, K) = (..., {N}, {K}), got {Pi.shape}"
        )
    _check_eps(eps, "variational_compression_rate")
    W = _project(Z, U)  # (..., K, N, p)
    weights = Pi.mT  # (..., K, N)
    n = weights.sum(axis=-1, keepdims=True)  # (..., K, 1)
    m = (weights.reshape((*weights.shape, 1)) * W * W).sum(axis=-2)  # (..., K, p)
    per_group = (1 + (p / eps**2) * m / n).log().sum(axis=-1, keepdims=True)
    return 0.5 * (n / N * per_group).sum(axis=(-2, -1))


def rate_reduction(Z: Any, U: Any, eps: float) -> Tensor:
    """Delta R(Z; U_[K]) = R(Z) - R^c(Z; U_[K]) (tutorial 02, eq. (2)); same in both forms."""
    Z = _tokens(Z, "rate_reduction")
    return coding_rate(Z, eps) - compression_rate(Z, U, eps)


def sparse_rate_reduction(Z: Any, U: Any, eps: float, lam: float) -> Tensor:
    """The objective CRATE unrolls, with the l1 relaxation (tutorial 02, eq. (6)).

    Delta R(Z; U_[K]) - lam ||Z||_1, the l1 norm summed over all N d entries (the
    same in column and row form); it stands in for lam ||Z||_0 (see ``l0_fraction``).
    """
    Z = _tokens(Z, "sparse_rate_reduction")
    return rate_reduction(Z, U, eps) - lam * Z.abs().sum(axis=(-2, -1))


def l0_fraction(Z: Any, tol: float = 0.0) -> float:
    """||Z||_0 / (N d): the fraction of entries with |z| > tol (tutorial 02, eq. (5)); a diagnostic."""
    Z = _tokens(Z, "l0_fraction")
    return float((Z.xp.abs(Z.data) > tol).mean())


def _memberships(labels: Any, N: int, like: Tensor) -> np.ndarray:
    """The (J, N) membership matrix Pi (row j = diag(Pi_j)) of non-empty classes."""
    labels = np.asarray(backend.to_numpy(labels.data if isinstance(labels, Tensor) else labels))
    if labels.ndim == 1 and labels.dtype.kind in "iu":
        Pi = (labels[None, :] == np.unique(labels)[:, None]).astype(like.dtype)
    elif labels.ndim == 2 and labels.dtype.kind in "biuf" and (labels >= 0).all():
        Pi = labels.astype(like.dtype)
    else:
        raise ValueError(
            "mcr2: labels must be integer class labels of shape (N,) or a non-negative "
            f"membership matrix of shape (J, N); got dtype {labels.dtype}, shape {labels.shape}"
        )
    if Pi.shape[-1] != N:
        raise ValueError(f"mcr2: labels give memberships for {Pi.shape[-1]} tokens, Z has N = {N}")
    return Pi[Pi.sum(axis=1) > 0]


def mcr2(Z: Any, labels: Any, eps: float) -> Tensor:
    """MCR^2 rate reduction with class memberships (tutorial 02, eq. (4)).

    Column form, Pi_j = diag(memberships of class j):
      Delta R(Z, Pi) = R(Z) - sum_j tr(Pi_j)/(2N) logdet(I_d + d/(tr(Pi_j) eps^2) Z Pi_j Z^T).
    Row form: Z Pi_j Z^T becomes Y_j^T Y_j with Y_j = sqrt(Pi_j) Z (rows weighted), so with hard
    labels the j-th term is (N_j/N) R(Z_j) for the N_j tokens of class j. ``labels`` is an
    integer array (N,) or a membership matrix (J, N). Returns shape ``Z.shape[:-2]``.
    """
    Z = _tokens(Z, "mcr2")
    _check_eps(eps, "mcr2")
    N, d = Z.shape[-2:]
    Pi = _memberships(labels, N, Z)
    counts = Pi.sum(axis=1)[:, None, None]  # tr(Pi_j), shape (J, 1, 1)
    xp = Z.xp
    Y = Z.reshape((*Z.shape[:-2], 1, N, d)) * Tensor(xp.asarray(np.sqrt(Pi)[:, :, None]))
    per_class = _half_logdet(Y, Tensor(xp.asarray(d / (counts * eps**2))))
    weights = Tensor(xp.asarray(counts[:, 0, 0] / N))
    return coding_rate(Z, eps) - (weights * per_class).sum(axis=-1)


# ---- closed-form gradients --------------------------------------------------


def grad_coding_rate(Z: Any, eps: float) -> Tensor:
    """Closed-form gradient of R (tutorial 03, eq. (1)), alpha = d/(N eps^2).

    Column form:  grad R = alpha Z (I_N + alpha Z^T Z)^{-1} = alpha (I_d + alpha Z Z^T)^{-1} Z.
    Row form:     grad R = alpha (I_N + alpha Z Z^T)^{-1} Z = alpha Z (I_d + alpha Z^T Z)^{-1},
    solved through the smaller matrix. Same shape as Z.
    """
    Z = _tokens(Z, "grad_coding_rate")
    _check_eps(eps, "grad_coding_rate")
    N, d = Z.shape[-2:]
    alpha = d / (N * eps**2)
    if N <= d:
        return alpha * F.solve(_eye(N, Z) + alpha * (Z @ Z.mT), Z)
    return alpha * F.solve(_eye(d, Z) + alpha * (Z.mT @ Z), Z.mT).mT


def grad_compression_rate(Z: Any, U: Any, eps: float) -> Tensor:
    """Closed-form gradient of R^c (tutorial 03, eq. (2)), alpha = p/(N eps^2).

    Column form:  grad R^c = alpha sum_k U_k U_k^T Z (I_N + alpha (U_k^T Z)^T (U_k^T Z))^{-1}.
    Row form, P_k = Z U_k:  grad R^c = sum_k [alpha (I_N + alpha P_k P_k^T)^{-1} P_k] U_k^T
    = sum_k grad R(P_k) U_k^T. Same shape as Z.
    """
    Z = _tokens(Z, "grad_compression_rate")
    U = _bases(U, Z, "grad_compression_rate")
    return (grad_coding_rate(_project(Z, U), eps) @ U.mT).sum(axis=-3)


# ---- compression: from a gradient step to MSSA ------------------------------


def compression_step_exact(Z: Any, U: Any, eps: float, kappa: float) -> Tensor:
    """One true gradient-descent step on R^c (tutorial 03, eq. (3)): Z - kappa grad R^c(Z; U_[K]).

    Same expression in column and row form (the gradient is transposed with Z).
    """
    Z = _tokens(Z, "compression_step_exact")
    return Z - kappa * grad_compression_rate(Z, U, eps)


def compression_step_neumann(Z: Any, U: Any, eps: float, kappa: float) -> Tensor:
    """The gradient step with the first Neumann term (I + A)^{-1} ~ I - A (tutorial 03, eq. (4)).

    Column form:  Z - kappa alpha sum_k U_k (U_k^T Z) (I_N - alpha (U_k^T Z)^T (U_k^T Z)).
    Row form, P_k = Z U_k:  Z - kappa alpha sum_k (P_k - alpha (P_k P_k^T) P_k) U_k^T,
    with alpha = p/(N eps^2).
    """
    Z = _tokens(Z, "compression_step_neumann")
    U = _bases(U, Z, "compression_step_neumann")
    alpha = _alpha(Z, U, eps, "compression_step_neumann")
    P = _project(Z, U)
    grad = ((P - alpha * ((P @ P.mT) @ P)) @ U.mT).sum(axis=-3)
    return Z - kappa * alpha * grad


def ssa(Z: Any, U_k: Any) -> Tensor:
    """Subspace self-attention of one head (tutorial 03, eq. (6)).

    Column form:  SSA(Z | U_k) = (U_k^T Z) softmax((U_k^T Z)^T (U_k^T Z)), softmax over each column.
    Row form, P = Z U_k (N, p):  SSA^T = softmax(P P^T) P, softmax over each row (the Gram matrix
    is symmetric). Query = key = value = P. Returns shape (..., N, p).
    """
    Z = _tokens(Z, "ssa")
    U_k = _constant(U_k, Z)
    if U_k.ndim != 2 or U_k.shape[0] != Z.shape[-1]:
        raise ValueError(
            f"ssa: U_k must have shape (d, p) with d = {Z.shape[-1]} for Z of shape {Z.shape}; "
            f"got {U_k.shape}"
        )
    P = Z @ U_k
    return F.softmax(P @ P.mT, axis=-1) @ P


def mssa(Z: Any, U: Any, eps: float) -> Tensor:
    """Multi-head subspace self-attention (tutorial 03, eq. (7)), alpha = p/(N eps^2).

    Column form:  MSSA(Z | U_[K]) = alpha [U_1, ..., U_K] [SSA(Z|U_1); ...; SSA(Z|U_K)]
                                  = alpha sum_k U_k SSA(Z | U_k).
    Row form:     alpha sum_k SSA(Z | U_k)^T U_k^T = alpha sum_k softmax(P_k P_k^T) P_k U_k^T.
    Same shape as Z.
    """
    Z = _tokens(Z, "mssa")
    U = _bases(U, Z, "mssa")
    alpha = _alpha(Z, U, eps, "mssa")
    P = _project(Z, U)
    return alpha * ((F.softmax(P @ P.mT, axis=-1) @ P) @ U.mT).sum(axis=-3)


def compression_step_softmax(Z: Any, U: Any, eps: float, kappa: float) -> Tensor:
    """The Neumann step with each Gram matrix replaced by its softmax (tutorial 03, eq. (5)).

    Column form:  Z - kappa alpha sum_k U_k (U_k^T Z) (I_N - alpha softmax((U_k^T Z)^T (U_k^T Z)))
                = Z - kappa alpha (sum_k U_k U_k^T Z - MSSA(Z | U_[K])).
    Row form:     Z - kappa alpha (Z sum_k U_k U_k^T - MSSA(Z | U_[K])), alpha = p/(N eps^2).
    """
    Z = _tokens(Z, "compression_step_softmax")
    U = _bases(U, Z, "compression_step_softmax")
    alpha = _alpha(Z, U, eps, "compression_step_softmax")
    projector = (U @ U.mT).sum(axis=0)
    return Z - kappa * alpha * (Z @ projector - mssa(Z, U, eps))


def compression_step_mssa(Z: Any, U: Any, eps: float, kappa: float) -> Tensor:
    """CRATE's compression step, assuming sum_k U_k U_k^T = I (tutorial 03, eq. (8)).

    Z^{l+1/2} = (1 - kappa alpha) Z^l + kappa alpha MSSA(Z^l | U_[K]), alpha = p/(N eps^2),
    the same in column and row form.
    """
    Z = _tokens(Z, "compression_step_mssa")
    U = _bases(U, Z, "compression_step_mssa")
    alpha = _alpha(Z, U, eps, "compression_step_mssa")
    return (1 - kappa * alpha) * Z + kappa * alpha * mssa(Z, U, eps)


# ---- sparsification: the non-negative LASSO and ISTA ------------------------


def _dictionary(D: Any, Z: Tensor, Zhalf: Tensor, op: str) -> Tensor:
    D = _constant(D, Z)
    if D.ndim != 2 or D.shape[1] != Z.shape[-1] or D.shape[0] != Zhalf.shape[-1]:
        raise ValueError(
            f"{op}: D must have shape (d, m) = ({Zhalf.shape[-1]}, {Z.shape[-1]}) for codes Z "
            f"{Z.shape} and signal Zhalf {Zhalf.shape}; got {D.shape}"
        )
    if Z.shape[:-1] != Zhalf.shape[:-1]:
        raise ValueError(f"{op}: Z {Z.shape} and Zhalf {Zhalf.shape} must hold the same tokens")
    return D


def lasso_objective(Z: Any, Zhalf: Any, D: Any, lam: float) -> Tensor:
    """The (non-negative) LASSO objective (tutorial 04, eq. (1)).

    Column form:  lam ||Z||_1 + 1/2 ||Z^{l+1/2} - D Z||_F^2.
    Row form:     lam ||Z||_1 + 1/2 ||Zhalf - Z D^T||_F^2. Returns shape ``Z.shape[:-2]``.
    """
    Z = _tokens(Z, "lasso_objective")
    Zhalf = _constant(Zhalf, Z)
    D = _dictionary(D, Z, Zhalf, "lasso_objective")
    residual = Zhalf - Z @ D.mT
    return lam * Z.abs().sum(axis=(-2, -1)) + 0.5 * (residual * residual).sum(axis=(-2, -1))


def ista_step(Z: Any, D: Any, eta: float, lam: float, Zhalf: Any = None) -> Tensor:
    """One non-negative proximal-gradient (ISTA) step on the LASSO (tutorial 04, eqs. (2)-(3)).

    Column form:  Z^+ = ReLU(Z + eta D^T (Z^{l+1/2} - D Z) - eta lam 1).
    Row form:     Z^+ = ReLU(Z + eta (Zhalf - Z D^T) D - eta lam).
    ``Zhalf`` defaults to ``Z``: CRATE's single step warm-started at Z^{l+1/2},
    Z^{l+1} = ReLU(Z^{l+1/2} + eta D^T (Z^{l+1/2} - D Z^{l+1/2}) - eta lam 1).
    """
    Z = _tokens(Z, "ista_step")
    Zhalf = Z if Zhalf is None else _constant(Zhalf, Z)
    D = _dictionary(D, Z, Zhalf, "ista_step")
    return F.relu(Z + eta * ((Zhalf - Z @ D.mT) @ D) - eta * lam)


def lasso_kkt_residual(Z: Any, Zhalf: Any, D: Any, lam: float) -> float:
    """Largest violation of the non-negative LASSO optimality conditions (tutorial 04, eq. (4)).

    With G = D^T (D Z - Z^{l+1/2}) + lam 1 (column form; row form G = (Z D^T - Zhalf) D + lam),
    Z solves the problem iff Z >= 0, G >= 0 and Z * G = 0 elementwise. Returns
    max(max(-Z), max(-G), max|Z * G|), zero exactly at the solution.
    """
    Z = _tokens(Z, "lasso_kkt_residual")
    Zhalf = _constant(Zhalf, Z)
    D = _dictionary(D, Z, Zhalf, "lasso_kkt_residual")
    z, xp = Z.data, Z.xp
    G = (z @ D.data.T - Zhalf.data) @ D.data + lam
    return max(float(xp.max(v)) for v in (-z, -G, xp.abs(z * G)))
