"""Properties of the coding rate, rate reduction and the CRATE steps derived from them (float64)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import whitebox as wb
from whitebox import rate
from whitebox.gradcheck import gradcheck

SETTINGS = settings(max_examples=60, deadline=None)
seeds = st.integers(0, 2**32 - 1)
sizes = st.integers(1, 7)
scales = st.floats(0.05, 3.0)


def randn(rng: np.random.Generator, *shape: int) -> wb.Tensor:
    return wb.Tensor(rng.standard_normal(shape))


def orthonormal_blocks(rng: np.random.Generator, K: int, p: int) -> np.ndarray:
    """A random orthonormal basis of R^{Kp}, split into K blocks U_k of shape (Kp, p)."""
    Q, _ = np.linalg.qr(rng.standard_normal((K * p, K * p)))
    return Q.reshape(K * p, K, p).transpose(1, 0, 2)


def subspace_tokens(rng: np.random.Generator, U: np.ndarray, N: int) -> np.ndarray:
    """N tokens (rows), each drawn from one of the subspaces spanned by U[k]."""
    K, _, p = U.shape
    labels = rng.integers(0, K, N)
    return np.stack([U[k] @ rng.standard_normal(p) for k in labels]), labels


def half_logdet(M: np.ndarray) -> float:
    sign, value = np.linalg.slogdet(M)
    assert sign > 0
    return 0.5 * value


# ---- coding rate ------------------------------------------------------------


@SETTINGS
@given(seeds, sizes, sizes, scales)
def test_both_gram_forms_give_the_same_rate(seed: int, N: int, d: int, eps: float) -> None:
    Z = np.random.default_rng(seed).standard_normal((N, d))
    a = d / (N * eps**2)
    small_d = half_logdet(np.eye(d) + a * Z.T @ Z)
    small_n = half_logdet(np.eye(N) + a * Z @ Z.T)
    assert small_d == pytest.approx(small_n, rel=1e-9, abs=1e-9)
    assert rate.coding_rate(wb.Tensor(Z), eps).item() == pytest.approx(small_d, rel=1e-9, abs=1e-9)


def test_rate_is_zero_at_zero() -> None:
    assert rate.coding_rate(np.zeros((5, 3)), 0.5).item() == 0.0


@SETTINGS
@given(seeds, sizes, sizes, scales)
def test_rate_is_non_negative(seed: int, N: int, d: int, eps: float) -> None:
    assert rate.coding_rate(randn(np.random.default_rng(seed), N, d), eps).item() >= 0


@SETTINGS
@given(seeds, sizes, sizes, st.floats(0.01, 10.0), st.floats(1.01, 5.0))
def test_rate_grows_with_scale(seed: int, N: int, d: int, c: float, factor: float) -> None:
    Z = np.random.default_rng(seed).standard_normal((N, d))
    small = rate.coding_rate(c * Z, 1.0).item()
    assert rate.coding_rate(-c * Z, 1.0).item() == pytest.approx(small, rel=1e-12)
    assert rate.coding_rate(factor * c * Z, 1.0).item() > small


@SETTINGS
@given(seeds, sizes, sizes)
def test_rate_ignores_token_order_and_feature_rotations(seed: int, N: int, d: int) -> None:
    rng = np.random.default_rng(seed)
    Z = rng.standard_normal((N, d))
    Q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    R = rate.coding_rate(Z, 0.7).item()
    assert rate.coding_rate(Z[rng.permutation(N)], 0.7).item() == pytest.approx(R, rel=1e-10)
    assert rate.coding_rate(Z @ Q, 0.7).item() == pytest.approx(R, rel=1e-10)


def test_rate_is_batched_over_leading_axes() -> None:
    Z = np.random.default_rng(0).standard_normal((2, 3, 4, 5))
    batched = rate.coding_rate(Z, 0.5).numpy()
    assert batched.shape == (2, 3)
    for i in range(2):
        for j in range(3):
            assert batched[i, j] == pytest.approx(rate.coding_rate(Z[i, j], 0.5).item(), rel=1e-12)


def test_float32_stays_float32_and_numpy_inputs_are_wrapped() -> None:
    Z = np.random.default_rng(0).standard_normal((6, 4)).astype(np.float32)
    U = orthonormal_blocks(np.random.default_rng(1), 2, 2)  # float64 arrays take Z's dtype
    assert rate.coding_rate(Z, 0.5).dtype == np.float32
    assert rate.rate_reduction(Z, U, 0.5).dtype == np.float32
    assert rate.mssa(Z, U, 0.5).dtype == np.float32
    assert rate.ista_step(Z, np.eye(4), 0.1, 0.1).dtype == np.float32


# ---- compression and rate reduction -----------------------------------------


@SETTINGS
@given(seeds, st.integers(1, 4), st.integers(1, 3), sizes, scales)
def test_fischer_inequality_over_orthonormal_blocks(seed: int, K: int, p: int, N: int, eps: float) -> None:
    rng = np.random.default_rng(seed)
    U = orthonormal_blocks(rng, K, p)
    d = K * p
    eps_k = eps * np.sqrt(p / d)  # p/(N eps_k^2) = d/(N eps^2): one shared scale
    Z = rng.standard_normal((N, d))
    whole = rate.coding_rate(Z @ U.transpose(1, 0, 2).reshape(d, d), eps).item()
    assert whole <= rate.compression_rate(Z, U, eps_k).item() + 1e-10
    Zsub, _ = subspace_tokens(rng, U, N)  # block features uncorrelated: equality
    whole = rate.coding_rate(Zsub, eps).item()
    assert whole == pytest.approx(rate.compression_rate(Zsub, U, eps_k).item(), rel=1e-9, abs=1e-9)


def test_compression_rate_is_the_sum_over_heads() -> None:
    rng = np.random.default_rng(0)
    Z, U = rng.standard_normal((2, 7, 6)), rng.standard_normal((3, 6, 2))
    Rc = rate.compression_rate(Z, U, 0.4).numpy()
    for b in range(2):
        expected = sum(half_logdet(np.eye(2) + 2 / (7 * 0.16) * (Z[b] @ Uk).T @ (Z[b] @ Uk)) for Uk in U)
        assert Rc[b] == pytest.approx(expected, rel=1e-12)
    dR = rate.rate_reduction(Z, U, 0.4).numpy()
    np.testing.assert_allclose(dR, rate.coding_rate(Z, 0.4).numpy() - Rc, rtol=1e-12)


@SETTINGS
@given(seeds, st.integers(2, 12), sizes, st.integers(1, 4), scales)
def test_mcr2_is_non_negative_and_zero_for_one_class(seed: int, N: int, d: int, J: int, eps: float) -> None:
    rng = np.random.default_rng(seed)
    Z = rng.standard_normal((N, d))
    assert rate.mcr2(Z, rng.integers(0, J, N), eps).item() >= -1e-10
    soft = rng.dirichlet(np.ones(J), N).T  # (J, N), each token's memberships sum to 1
    assert rate.mcr2(Z, soft, eps).item() >= -1e-10
    assert rate.mcr2(Z, np.full(N, 3), eps).item() == pytest.approx(0.0, abs=1e-10)


def test_mcr2_hard_labels_match_the_class_sum_and_one_hot_memberships() -> None:
    rng = np.random.default_rng(0)
    Z, labels = rng.standard_normal((9, 4)), np.array([0, 2, 2, 0, 0, 5, 2, 5, 0])
    expected = rate.coding_rate(Z, 0.5).item() - sum(
        (labels == j).sum() / 9 * rate.coding_rate(Z[labels == j], 0.5).item() for j in (0, 2, 5)
    )
    assert rate.mcr2(Z, labels, 0.5).item() == pytest.approx(expected, rel=1e-12)
    one_hot = (labels[None] == np.arange(6)[:, None]).astype(float)  # empty classes 1, 3, 4
    assert rate.mcr2(Z, one_hot, 0.5).item() == pytest.approx(expected, rel=1e-12)


def test_sparse_rate_reduction_and_l0_fraction() -> None:
    rng = np.random.default_rng(0)
    Z = np.maximum(rng.standard_normal((2, 5, 6)), 0)
    U = rng.standard_normal((3, 6, 2))
    expected = rate.rate_reduction(Z, U, 0.5).numpy() - 0.1 * np.abs(Z).sum(axis=(1, 2))
    np.testing.assert_allclose(rate.sparse_rate_reduction(Z, U, 0.5, 0.1).numpy(), expected, rtol=1e-12)
    assert rate.l0_fraction(Z) == pytest.approx((Z != 0).mean())
    assert rate.l0_fraction(Z, tol=10.0) == 0.0


# ---- gradients --------------------------------------------------------------


def autograd(fn, Z: np.ndarray) -> np.ndarray:
    t = wb.Tensor(Z, requires_grad=True)
    fn(t).sum().backward()
    return t.grad


@SETTINGS
@given(seed=seeds, N=sizes, d=sizes, K=st.integers(1, 3), p=st.integers(1, 3), eps=scales)
def test_closed_form_gradients_equal_autograd(
    *, seed: int, N: int, d: int, K: int, p: int, eps: float
) -> None:
    rng = np.random.default_rng(seed)
    Z = rng.standard_normal((2, N, d))
    U = rng.standard_normal((K, d, p))
    np.testing.assert_allclose(
        rate.grad_coding_rate(Z, eps).numpy(), autograd(lambda z: rate.coding_rate(z, eps), Z), atol=1e-10
    )
    np.testing.assert_allclose(
        rate.grad_compression_rate(Z, U, eps).numpy(),
        autograd(lambda z: rate.compression_rate(z, U, eps), Z),
        atol=1e-10,
    )


@pytest.mark.parametrize("shape", [(4, 3), (3, 5), (2, 3, 4)])
def test_gradcheck_rates(shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(0)
    Z = wb.Tensor(rng.standard_normal(shape), requires_grad=True)
    U = wb.Tensor(rng.standard_normal((2, shape[-1], 2)), requires_grad=True)
    gradcheck(lambda z: rate.coding_rate(z, 0.6), Z)
    gradcheck(lambda z, u: rate.compression_rate(z, u, 0.6), Z, U)
    gradcheck(lambda z: rate.mcr2(z, np.arange(shape[-2]) % 2, 0.6), Z)


# ---- compression steps ------------------------------------------------------


@SETTINGS
@given(seeds, st.integers(2, 8), st.integers(1, 3), st.integers(1, 3), scales)
def test_small_exact_step_lowers_compression_rate(seed: int, N: int, K: int, p: int, eps: float) -> None:
    rng = np.random.default_rng(seed)
    U = orthonormal_blocks(rng, K, p)
    Z = rng.standard_normal((N, K * p))
    kappa = 1e-3 * eps**2
    before = rate.compression_rate(Z, U, eps).item()
    after = rate.compression_rate(rate.compression_step_exact(Z, U, eps, kappa), U, eps).item()
    assert after < before


@settings(max_examples=25, deadline=None)
@given(seeds)
def test_neumann_step_agrees_to_second_order(seed: int) -> None:
    """(I + A)^{-1} - (I - A) = A^2 (I + A)^{-1}: the update's relative error is O(||A||^2)."""
    rng = np.random.default_rng(seed)
    U = orthonormal_blocks(rng, 3, 2)
    Z0 = rng.standard_normal((8, 6))
    ratios, errors = [], []
    for s in (0.4, 0.2, 0.1, 0.05):
        Z = s * Z0
        P = Z @ U  # (K, N, p)
        A = 2 / (8 * 1.0**2) * max(np.linalg.norm(Pk @ Pk.T, 2) for Pk in P)
        exact = rate.compression_step_exact(Z, U, 1.0, 0.1).numpy() - Z
        neumann = rate.compression_step_neumann(Z, U, 1.0, 0.1).numpy() - Z
        error = np.linalg.norm(exact - neumann) / np.linalg.norm(exact)
        errors.append(error)
        ratios.append(error / A**2)
    assert max(ratios) <= 1.0  # ||A^2 (I+A)^{-1}|| <= ||A||^2
    for big, small in itertools.pairwise(errors):
        assert small < big / 10  # halving the scale divides ||A||^2 by 16


def test_mssa_matches_a_numpy_loop_over_heads_in_column_form() -> None:
    rng = np.random.default_rng(0)
    N, d, K, p, eps = 7, 6, 3, 2, 0.8
    Z = rng.standard_normal((N, d))
    U = rng.standard_normal((K, d, p))
    Zp = Z.T  # the paper's columns
    out = np.zeros((d, N))
    for k in range(K):
        P = U[k].T @ Zp
        G = P.T @ P
        S = np.exp(G - G.max(axis=0)) / np.exp(G - G.max(axis=0)).sum(axis=0)  # column softmax
        SSA = P @ S
        np.testing.assert_allclose(rate.ssa(Z, U[k]).numpy(), SSA.T, rtol=1e-12)
        out += U[k] @ SSA
    out *= p / (N * eps**2)
    np.testing.assert_allclose(rate.mssa(Z, U, eps).numpy(), out.T, rtol=1e-12)
    batched = rate.mssa(np.stack([Z, 2 * Z]), U, eps).numpy()
    np.testing.assert_allclose(batched[0], out.T, rtol=1e-12)


def test_softmax_step_becomes_the_mssa_step_for_a_complete_basis() -> None:
    rng = np.random.default_rng(0)
    U = orthonormal_blocks(rng, 3, 2)  # sum_k U_k U_k^T = I
    Z = rng.standard_normal((5, 6))
    np.testing.assert_allclose(
        rate.compression_step_softmax(Z, U, 0.5, 0.1).numpy(),
        rate.compression_step_mssa(Z, U, 0.5, 0.1).numpy(),
        rtol=1e-12,
    )
    Uhalf = U[:2]  # an incomplete basis: the two differ
    assert not np.allclose(
        rate.compression_step_softmax(Z, Uhalf, 0.5, 0.1).numpy(),
        rate.compression_step_mssa(Z, Uhalf, 0.5, 0.1).numpy(),
    )


# ---- ISTA -------------------------------------------------------------------


def test_ista_step_matches_the_column_form() -> None:
    rng = np.random.default_rng(0)
    Z, D = rng.standard_normal((5, 4)), rng.standard_normal((4, 4))
    Zp = Z.T
    expected = np.maximum(Zp + 0.1 * D.T @ (Zp - D @ Zp) - 0.1 * 0.2, 0)
    np.testing.assert_allclose(rate.ista_step(Z, D, 0.1, 0.2).numpy(), expected.T, rtol=1e-12)
    objective = 0.2 * np.abs(Zp).sum() + 0.5 * np.linalg.norm(Zp - D @ Zp) ** 2
    assert rate.lasso_objective(Z, Z, D, 0.2).item() == pytest.approx(objective, rel=1e-12)


@SETTINGS
@given(seed=seeds, N=sizes, d=sizes, m=sizes, step=st.floats(0.05, 1.0), lam=st.floats(0.0, 1.0))
def test_ista_step_never_raises_the_lasso_objective(
    *, seed: int, N: int, d: int, m: int, step: float, lam: float
) -> None:
    rng = np.random.default_rng(seed)
    D = rng.standard_normal((d, m))
    eta = step / np.linalg.norm(D, 2) ** 2
    Z = np.maximum(rng.standard_normal((N, m)), 0)  # a feasible point
    Zhalf = rng.standard_normal((N, d))
    before = rate.lasso_objective(Z, Zhalf, D, lam).item()
    after = rate.lasso_objective(rate.ista_step(Z, D, eta, lam, Zhalf), Zhalf, D, lam).item()
    assert after <= before + 1e-10 * (1 + abs(before))
    if d == m:  # CRATE's warm start from a non-negative Zhalf
        Y = np.abs(Zhalf)
        warm = rate.ista_step(Y, D, eta, lam).numpy()
        assert (
            rate.lasso_objective(warm, Y, D, lam).item() <= rate.lasso_objective(Y, Y, D, lam).item() + 1e-10
        )


@settings(max_examples=20, deadline=None)
@given(seeds, st.floats(0.01, 0.5))
def test_repeated_ista_steps_reach_the_lasso_kkt_point(seed: int, lam: float) -> None:
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.standard_normal((6, 6)))
    D = Q * rng.uniform(0.5, 1.5, 6)  # well conditioned: ISTA converges linearly
    eta = 1 / np.linalg.norm(D, 2) ** 2
    Zhalf = wb.Tensor(rng.standard_normal((5, 6)))
    Z = Zhalf
    with wb.no_grad():
        for _ in range(400):
            Z = rate.ista_step(Z, D, eta, lam, Zhalf)
    assert rate.lasso_kkt_residual(Z, Zhalf, D, lam) < 1e-8


# ---- errors -----------------------------------------------------------------


def test_clear_errors() -> None:
    Z, U = np.zeros((5, 6)), np.zeros((3, 4, 2))
    with pytest.raises(ValueError, match=r"U has shape \(3, 4, 2\).*d = 4.*Z has shape \(5, 6\).*d = 6"):
        rate.compression_rate(Z, U, 0.5)
    with pytest.raises(ValueError, match=r"U must stack K bases as shape \(K, d, p\)"):
        rate.mssa(Z, np.zeros((6, 2)), 0.5)
    with pytest.raises(ValueError, match=r"ssa: U_k must have shape \(d, p\) with d = 6"):
        rate.ssa(Z, np.zeros((4, 2)))
    for eps in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="eps must be a positive finite number"):
            rate.coding_rate(Z, eps)
        with pytest.raises(ValueError, match="compression_step_softmax: eps must be a positive"):
            rate.compression_step_softmax(Z, np.zeros((3, 6, 2)), eps, 0.1)
    with pytest.raises(ValueError, match=r"tokens as rows, shape \(\.\.\., N, d\); got shape \(6,\)"):
        rate.coding_rate(np.zeros(6), 0.5)
    with pytest.raises(ValueError, match="labels give memberships for 4 tokens, Z has N = 5"):
        rate.mcr2(Z, np.arange(4), 0.5)
    with pytest.raises(ValueError, match="integer class labels of shape"):
        rate.mcr2(Z, np.zeros(5), 0.5)
    with pytest.raises(ValueError, match=r"D must have shape \(d, m\) = \(6, 6\).*got \(6, 5\)"):
        rate.ista_step(Z, np.zeros((6, 5)), 0.1, 0.1)


@pytest.mark.cuda
@pytest.mark.skipif(not wb.cuda_available(), reason="needs CuPy and a GPU")
def test_runs_on_the_gpu() -> None:
    rng = np.random.default_rng(0)
    Z, U = rng.standard_normal((2, 5, 6)), rng.standard_normal((3, 6, 2))
    Zg = wb.Tensor(Z, device="cuda", requires_grad=True)
    Rg = rate.rate_reduction(Zg, U, 0.5)
    assert Rg.device == "cuda"
    np.testing.assert_allclose(Rg.numpy(), rate.rate_reduction(Z, U, 0.5).numpy(), rtol=1e-10)
    Rg.sum().backward()
    np.testing.assert_allclose(
        wb.Tensor(Zg.grad).numpy(),
        autograd(lambda z: rate.rate_reduction(z, U, 0.5), Z),
        rtol=1e-8,
    )
    np.testing.assert_allclose(rate.mssa(Zg, U, 0.5).numpy(), rate.mssa(Z, U, 0.5).numpy(), rtol=1e-10)
    assert rate.mcr2(Zg, np.arange(5) % 2, 0.5).device == "cuda"
