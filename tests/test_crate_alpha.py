"""CRATE-alpha's layer: the two-step overcomplete ISTA against the column-form equations,
finite differences, a PyTorch reference of the official layer (torch extra), and its errors."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from whitebox.crate.alpha import CRATEAlphaBlock, OvercompleteISTA, overcomplete_ista, sparse_code
from whitebox.gradcheck import gradcheck
from whitebox.tensor import Tensor


def _relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0)


def test_matches_the_column_form() -> None:
    rng = np.random.default_rng(0)
    d, m, n = 4, 12, 6
    Y = rng.standard_normal((d, n))  # tokens as columns
    D, D1 = rng.standard_normal((d, m)) / 2, rng.standard_normal((d, m))
    eta, lam = 0.3, 0.2
    A1 = _relu(eta * D.T @ Y - eta * lam)
    A2 = _relu(A1 - eta * D.T @ (D @ A1 - Y) - eta * lam)
    out = overcomplete_ista(Tensor(Y.T), Tensor(D), Tensor(D1), eta, lam)
    np.testing.assert_allclose(out.data, (D1 @ A2).T, rtol=1e-12)
    code = sparse_code(Tensor(Y.T), Tensor(D), eta, lam).data
    np.testing.assert_allclose(code, A2.T, rtol=1e-12)
    assert 0 < (code == 0).mean() < 1  # the ReLU both zeroes and keeps entries here


def test_gradcheck() -> None:
    rng = np.random.default_rng(1)
    x = Tensor(rng.standard_normal((2, 3, 4)), requires_grad=True)
    D = Tensor(rng.standard_normal((4, 8)) / 2, requires_grad=True)
    D1 = Tensor(rng.standard_normal((4, 8)), requires_grad=True)
    gradcheck(lambda x, D, D1: overcomplete_ista(x, D, D1, 0.5, 0.1), x, D, D1)


def test_init_and_keys() -> None:
    block = CRATEAlphaBlock(16, heads=2, overcomplete_ratio=3)
    shapes = {k: v.shape for k, v in block.state_dict().items()}
    assert shapes == {
        "0.norm.weight": (16,),
        "0.norm.bias": (16,),
        "0.fn.qkv.weight": (16, 16),
        "0.fn.to_out.0.weight": (16, 16),
        "1.norm.weight": (16,),
        "1.norm.bias": (16,),
        "1.fn.D": (16, 48),
        "1.fn.D1": (16, 48),
    }
    D = block.ista.D.data
    bound = math.sqrt(6 / 48)  # kaiming_uniform_ on (16, 48): fan_in 48, gain sqrt(2)
    assert np.abs(D).max() <= bound
    assert np.abs(D).max() > 0.9 * bound
    assert block[0].norm.eps == block[1].norm.eps == 1e-6


def test_errors() -> None:
    for ratio in (0, -1, 0.5):
        with pytest.raises(ValueError, match="overcomplete_ratio must be an integer >= 1"):
            OvercompleteISTA(8, overcomplete_ratio=ratio)
    x = Tensor(np.ones((2, 3, 8)))
    with pytest.raises(ValueError, match=r"D must have shape \(8, m\)"):
        overcomplete_ista(x, Tensor(np.ones((6, 24))), Tensor(np.ones((6, 24))), 0.1, 0.1)
    with pytest.raises(ValueError, match="D1 must have the shape of D"):
        overcomplete_ista(x, Tensor(np.ones((8, 32))), Tensor(np.ones((8, 24))), 0.1, 0.1)
    with pytest.raises(ValueError, match="width 8"):
        OvercompleteISTA(8)(Tensor(np.ones((2, 3, 6))))


def _torch_layer(dim: int, heads: int) -> Any:
    """The official CRATE-alpha layer (PreNorm(Attention), PreNorm(OvercompleteISTABlock)),
    written from its formula."""
    torch = pytest.importorskip("torch")
    nn, Fn = torch.nn, torch.nn.functional

    class PreNorm(nn.Module):
        def __init__(self, fn: nn.Module) -> None:
            super().__init__()
            self.norm, self.fn = nn.LayerNorm(dim, eps=1e-6), fn

        def forward(self, x: Any) -> Any:
            return self.fn(self.norm(x))

    class Attention(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.qkv = nn.Linear(dim, dim, bias=False)
            self.to_out = nn.Sequential(nn.Linear(dim, dim, bias=False), nn.Dropout(0.0))

        def forward(self, x: Any) -> Any:
            b, n, _ = x.shape
            w = self.qkv(x).reshape(b, n, heads, -1).transpose(1, 2)
            attn = torch.softmax(w @ w.transpose(-1, -2) * w.shape[-1] ** -0.5, dim=-1)
            return self.to_out((attn @ w).transpose(1, 2).reshape(b, n, -1))

    class Ista(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.D = nn.Parameter(torch.randn(dim, 4 * dim))
            self.D1 = nn.Parameter(torch.randn(dim, 4 * dim))

        def forward(self, x: Any) -> Any:
            eta = lam = 0.1
            z1 = Fn.relu(eta * torch.einsum("pd,nlp->nld", self.D, x) - eta * lam)
            grad = torch.einsum("pd,nlp->nld", self.D, torch.einsum("dp,nlp->nld", self.D, z1) - x)
            z2 = Fn.relu(z1 - eta * grad - eta * lam)
            return torch.einsum("dp,nlp->nld", self.D1, z2)

    class Layer(nn.ModuleList):
        def forward(self, x: Any) -> Any:
            x = self[0](x) + x
            return self[1](x) + x

    return Layer([PreNorm(Attention()), PreNorm(Ista())])


def test_block_matches_the_official_layer() -> None:
    torch = pytest.importorskip("torch")
    from whitebox.interop import to_torch_state_dict

    ours = CRATEAlphaBlock(12, heads=3).to(dtype=np.float64)
    rng = np.random.default_rng(0)
    for p in ours.parameters():  # non-trivial LayerNorm affines, as after training
        p.data += 0.1 * rng.standard_normal(p.shape)
    ref = _torch_layer(12, 3).double()
    assert list(ours.state_dict()) == list(ref.state_dict())  # the same keys, in the same order
    ref.load_state_dict(to_torch_state_dict(ours))  # strict: and the same shapes
    x, g = rng.standard_normal((2, 5, 12)), rng.standard_normal((2, 5, 12))
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
    code = ours.ista.code(ours[1].norm(Tensor(x) + ours[0](Tensor(x)))).data
    assert code.shape == (2, 5, 48)
    assert 0 < (code > 0).mean() < 1


def test_causal_mask_reaches_the_attention() -> None:
    block = CRATEAlphaBlock(8, heads=2)
    x = np.random.default_rng(0).standard_normal((1, 4, 8)).astype(np.float32)
    mask = np.tril(np.ones((4, 4), dtype=bool))
    out = block(Tensor(x), mask=mask).data
    x2 = x.copy()
    x2[:, 3] += 5.0
    out2 = block(Tensor(x2), mask=mask).data
    np.testing.assert_allclose(out[:, :3], out2[:, :3], rtol=1e-6)
