"""Token-statistics self-attention: the op's gradients against finite differences, its
values against a loop-per-prefix NumPy reference, the layers against PyTorch references
of the official ToST layers (torch extra), and the errors on bad input."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from whitebox import rate
from whitebox.crate.tssa import TSSA, CausalTSSA
from whitebox.gradcheck import gradcheck
from whitebox.ops import tssa
from whitebox.tensor import Tensor


def _inputs(
    seed: int, *, b: int = 2, n: int = 5, heads: int = 3, p: int = 2, L: int = 7
) -> tuple[Tensor, ...]:
    rng = np.random.default_rng(seed)
    w = Tensor(rng.standard_normal((b, n, heads * p)), requires_grad=True)
    temp = Tensor(1 + rng.standard_normal((heads, 1)), requires_grad=True)
    bias = Tensor(0.3 * rng.standard_normal((heads, L, 1)), requires_grad=True)
    return w, temp, bias


def _softmax(x: np.ndarray, axis: int) -> np.ndarray:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _reference(w: np.ndarray, temp: np.ndarray, heads: int, bias: np.ndarray | None = None) -> np.ndarray:
    """TSSA written out per query token: bidirectional when bias is None, otherwise causal
    (with the position bias), every statistic recomputed from the prefix w[:, :i+1] alone."""
    b, n, hp = w.shape
    p = hp // heads
    W = w.reshape(b, n, heads, p).transpose(0, 2, 1, 3)  # (B, H, N, p)
    tau = temp.reshape(1, heads, 1)
    out = np.zeros_like(W)
    for i in range(n):
        V = W if bias is None else W[:, :, : i + 1]  # the tokens token i sees
        if bias is None:
            s = ((V / np.linalg.norm(V, axis=2, keepdims=True)) ** 2).sum(-1)
        else:
            s = (V**2 / np.cumsum(V**2, axis=2)).sum(-1) + p * bias.reshape(1, heads, -1)[:, :, : i + 1]
        pi = _softmax(tau * s, axis=1)  # (B, H, n_i), each token's memberships over the heads
        m = (pi[..., None] * V**2).sum(2) / (pi.sum(2)[..., None] + 1e-8)  # (B, H, p)
        row = i if bias is None else -1
        out[:, :, i] = -V[:, :, row] * pi[:, :, row, None] / (1 + m)
    return out.transpose(0, 2, 1, 3).reshape(b, n, hp)


# ---- the op ---------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1])
def test_gradcheck_bidirectional(seed: int) -> None:
    w, temp, _ = _inputs(seed)
    gradcheck(lambda w, t: tssa(w, t, 3)[0], w, temp)


@pytest.mark.parametrize("seed", [0, 1])
def test_gradcheck_causal(seed: int) -> None:
    w, temp, bias = _inputs(seed)
    gradcheck(lambda w, t, b: tssa(w, t, 3, causal=True, bias=b)[0], w, temp, bias)
    gradcheck(lambda w, t: tssa(w, t, 3, causal=True)[0], w, temp)


def test_gradcheck_one_head_bias_without_trailing_axis() -> None:
    rng = np.random.default_rng(3)
    w = Tensor(rng.standard_normal((1, 4, 3)), requires_grad=True)
    temp = Tensor(np.array([0.7]), requires_grad=True)
    bias = Tensor(rng.standard_normal((1, 4)), requires_grad=True)
    gradcheck(lambda w, t, b: tssa(w, t, 1, causal=True, bias=b)[0], w, temp, bias)


@pytest.mark.parametrize("causal", [False, True])
def test_values_match_the_per_token_reference(causal: bool) -> None:
    w, temp, bias = _inputs(5, b=3, n=6, heads=2, p=3, L=6)
    out, pi = tssa(w, temp, 2, causal=causal, bias=bias if causal else None)
    ref = _reference(w.data, temp.data, 2, bias.data if causal else None)
    np.testing.assert_allclose(out.data, ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(pi.sum(axis=1), 1.0, rtol=1e-12)  # memberships: a distribution over heads
    assert pi.shape == (3, 2, 6)


def test_causal_output_ignores_the_future() -> None:
    w, temp, bias = _inputs(2, n=6)
    out = tssa(w, temp, 3, causal=True, bias=bias)[0].data
    w2 = w.data.copy()
    w2[:, 4:] += 10.0
    out2 = tssa(Tensor(w2), temp, 3, causal=True, bias=bias)[0].data
    np.testing.assert_array_equal(out[:, :4], out2[:, :4])
    assert np.abs(out[:, 4:] - out2[:, 4:]).max() > 1e-3


def test_bidirectional_is_permutation_equivariant() -> None:
    w, temp, _ = _inputs(4, n=7)
    perm = np.random.default_rng(0).permutation(7)
    out = tssa(w, temp, 3)[0].data
    out_p = tssa(Tensor(w.data[:, perm]), temp, 3)[0].data
    np.testing.assert_allclose(out_p, out[:, perm], rtol=1e-12, atol=1e-14)


def test_op_errors() -> None:
    w, temp, bias = _inputs(0)
    with pytest.raises(ValueError, match="only defined for the causal"):
        tssa(w, temp, 3, bias=bias)
    with pytest.raises(ValueError, match="one temperature per head"):
        tssa(w, Tensor(np.ones(2)), 3)
    with pytest.raises(ValueError, match="L >= N"):
        tssa(w, temp, 3, causal=True, bias=Tensor(np.zeros((3, 4, 1))))
    with pytest.raises(ValueError, match="not divisible by 4 heads"):
        tssa(w, Tensor(np.ones(4)), 4)
    with pytest.raises(ValueError, match=r"\(B, N, heads\*p\)"):
        tssa(Tensor(np.ones((5, 6))), temp, 3)


# ---- the layers -----------------------------------------------------------------
def test_state_dict_keys() -> None:
    assert {k: v.shape for k, v in TSSA(12, heads=3).state_dict().items()} == {
        "qkv.weight": (12, 12),
        "temp": (3, 1),
        "to_out.0.weight": (12, 12),
        "to_out.0.bias": (12,),
    }
    assert {k: v.shape for k, v in CausalTSSA(12, heads=3, block_size=9).state_dict().items()} == {
        "c_attn.weight": (12, 12),
        "c_attn.bias": (12,),
        "c_proj.weight": (12, 12),
        "c_proj.bias": (12,),
        "temp": (3, 1),
        "denom_bias": (3, 9, 1),
    }


def test_layer_errors() -> None:
    x = Tensor(np.ones((2, 5, 12), dtype=np.float32))
    tril = np.tril(np.ones((5, 5), dtype=bool))
    causal = CausalTSSA(12, heads=3, block_size=8)
    assert causal(x, mask=tril).shape == (2, 5, 12)  # the causal mask is accepted ...
    with pytest.raises(ValueError, match="only the causal mask"):  # ... any other is not
        causal(x, mask=np.ones((5, 5), dtype=bool))
    with pytest.raises(ValueError, match="exceed block_size"):
        causal(Tensor(np.ones((1, 9, 12), dtype=np.float32)))
    with pytest.raises(ValueError, match="only no mask"):
        TSSA(12, heads=3)(x, mask=tril)
    with pytest.raises(TypeError, match="boolean"):
        TSSA(12, heads=3)(x, mask=np.ones((5, 5)))
    with pytest.raises(ValueError, match=r"\(B, N, 12\)"):
        TSSA(12, heads=3)(Tensor(np.ones((2, 5, 8), dtype=np.float32)))
    with pytest.raises(ValueError, match="not divisible"):
        TSSA(10, heads=3)


# ---- against PyTorch references of the official layers --------------------------
def _torch_layers() -> tuple[Any, Any]:
    torch = pytest.importorskip("torch")
    nn, Fn = torch.nn, torch.nn.functional

    class RefTSSA(nn.Module):
        """The official vision AttentionTSSA's formula (softmax over the heads, axis 1)."""

        def __init__(self, dim: int, heads: int) -> None:
            super().__init__()
            self.heads = heads
            self.qkv = nn.Linear(dim, dim, bias=False)
            self.temp = nn.Parameter(torch.ones(heads, 1))
            self.to_out = nn.Sequential(nn.Linear(dim, dim), nn.Dropout(0.0))

        def forward(self, x: Any) -> Any:
            b, n, _ = x.shape
            w = self.qkv(x).reshape(b, n, self.heads, -1).transpose(1, 2)
            pi = torch.softmax((Fn.normalize(w, dim=-2) ** 2).sum(-1) * self.temp, dim=1)
            m = (pi / (pi.sum(-1, keepdim=True) + 1e-8)).unsqueeze(-2) @ w**2
            out = -(w * pi.unsqueeze(-1)) / (1 + m)
            return self.to_out(out.transpose(1, 2).reshape(b, n, -1))

    class RefCausalTSSA(nn.Module):
        """The official language CausalSelfAttention_TSSA's formula."""

        def __init__(self, dim: int, heads: int, block_size: int) -> None:
            super().__init__()
            self.heads = heads
            self.c_attn = nn.Linear(dim, dim)
            self.c_proj = nn.Linear(dim, dim)
            self.temp = nn.Parameter(torch.ones(heads, 1))
            self.denom_bias = nn.Parameter(torch.zeros(heads, block_size, 1))

        def forward(self, x: Any) -> Any:
            b, t, _ = x.shape
            w = self.c_attn(x).reshape(b, t, self.heads, -1).transpose(1, 2)
            w2 = w**2
            logits = (w2 / w2.cumsum(-2).clamp_min(1e-12) + self.denom_bias[:, :t]).sum(-1) * self.temp
            pi = torch.softmax(logits, dim=1)
            m = (w2 * pi.unsqueeze(-1)).cumsum(-2) / (pi.cumsum(-1) + 1e-8).unsqueeze(-1)
            out = -(w * pi.unsqueeze(-1)) / (1 + m)
            return self.c_proj(out.transpose(1, 2).reshape(b, t, -1))

    return RefTSSA, RefCausalTSSA


@pytest.mark.parametrize("causal", [False, True])
def test_layers_match_the_official_formula(causal: bool) -> None:
    torch = pytest.importorskip("torch")
    from whitebox.interop import to_torch_state_dict

    ref_tssa, ref_causal = _torch_layers()
    ours = (CausalTSSA(12, heads=3, block_size=9) if causal else TSSA(12, heads=3)).to(dtype=np.float64)
    rng = np.random.default_rng(0)
    for p in ours.parameters():  # make temp and the position bias non-trivial
        p.data += 0.2 * rng.standard_normal(p.shape)
    ref = (ref_causal(12, 3, 9) if causal else ref_tssa(12, 3)).double()
    ref.load_state_dict(to_torch_state_dict(ours))
    x = rng.standard_normal((2, 7, 12))
    g = rng.standard_normal((2, 7, 12))
    xw = Tensor(x, requires_grad=True)
    out = ours(xw)
    out.backward(g)
    xt = torch.tensor(x, requires_grad=True)
    out_t = ref(xt)
    out_t.backward(torch.tensor(g))
    np.testing.assert_allclose(out.data, out_t.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(xw.grad, xt.grad.numpy(), rtol=1e-9, atol=1e-11)
    ref_grads = dict(ref.named_parameters())
    for name, p in ours.named_parameters():
        np.testing.assert_allclose(p.grad, ref_grads[name].grad.numpy(), rtol=1e-9, atol=1e-11, err_msg=name)


# ---- the objective TSSA descends ------------------------------------------------
def test_variational_rate_bounds_the_compression_rate() -> None:
    rng = np.random.default_rng(0)
    N, d, eps = 9, 4, 0.5
    Z = rng.standard_normal((N, d)) * np.array([2.0, 1.0, 0.5, 0.2])
    ones = np.ones((N, 1))
    eig = np.linalg.eigh(Z.T @ Z)[1][None]  # a basis that diagonalizes the statistics: equality
    np.testing.assert_allclose(
        rate.variational_compression_rate(Z, eig, ones, eps).data,
        rate.compression_rate(Z, eig, eps).data,
        rtol=1e-12,
    )
    rot = np.linalg.qr(rng.standard_normal((d, d)))[0][None]  # any other basis: a strict upper bound
    assert (
        rate.variational_compression_rate(Z, rot, ones, eps).data
        > rate.compression_rate(Z, rot, eps).data + 1e-3
    )
    # several groups and soft memberships, against the log-determinants written out
    K, p = 3, 2
    U = np.stack([np.linalg.qr(rng.standard_normal((d, p)))[0] for _ in range(K)])
    Pi = rng.dirichlet(np.ones(K), size=N)
    exact = sum(
        0.5
        * Pi[:, k].sum()
        / N
        * np.linalg.slogdet(
            np.eye(p) + p / (Pi[:, k].sum() * eps**2) * U[k].T @ Z.T @ np.diag(Pi[:, k]) @ Z @ U[k]
        )[1]
        for k in range(K)
    )
    assert rate.variational_compression_rate(Z, U, Pi, eps).data >= exact
    with pytest.raises(ValueError, match=r"Pi must have shape \(\.\.\., N, K\)"):
        rate.variational_compression_rate(Z, U, Pi[:, :2], eps)


def test_tssa_is_a_gradient_step_on_the_variational_rate() -> None:
    """With Pi held fixed and p / eps^2 = 1: grad_Z R^c_var = -(1/N) [out_1 ... out_K] [U_1 ... U_K]^T."""
    rng = np.random.default_rng(1)
    N, K, p = 8, 3, 2
    d = K * p
    Ucat = np.linalg.qr(rng.standard_normal((d, d)))[0]  # orthonormal, split into K bases
    U = Ucat.reshape(d, K, p).transpose(1, 0, 2)
    Z = Tensor(rng.standard_normal((N, d)), requires_grad=True)
    out, Pi = tssa(Tensor((Z.data @ Ucat)[None]), Tensor(rng.standard_normal(K)), K)
    rate.variational_compression_rate(Z, U, Pi[0].T, eps=np.sqrt(p)).backward()
    np.testing.assert_allclose(Z.grad, -out.data[0] @ Ucat.T / N, rtol=1e-6, atol=1e-9)
