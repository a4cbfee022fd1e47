"""The black-box twin: ViT with CRATE's skeleton."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import erf

from whitebox.crate import MSSA, Attention, FeedForward, ViT, create
from whitebox.crate.probe import TRANSFORMER_KEYS, record
from whitebox.gradcheck import gradcheck
from whitebox.ops.attention import attention
from whitebox.tensor import Tensor

F64 = np.float64
TINY = {"image_size": 4, "patch_size": 2, "num_classes": 3, "dim": 4, "depth": 2, "heads": 2, "channels": 1}


def _x(*shape: int, seed: int = 0, requires_grad: bool = False) -> Tensor:
    return Tensor(np.random.default_rng(seed).standard_normal(shape), requires_grad=requires_grad)


def _attention_numpy(x: np.ndarray, Wqkv: np.ndarray, heads: int, mask: np.ndarray | None) -> np.ndarray:
    q, k, v = np.split(x @ Wqkv.T, 3, axis=-1)
    p = q.shape[-1] // heads
    outs = []
    for h in range(heads):
        sl = slice(h * p, (h + 1) * p)
        s = q[..., sl] @ k[..., sl].swapaxes(-1, -2) / np.sqrt(p)
        if mask is not None:
            s = np.where(mask, s, -np.inf)
        e = np.exp(s - s.max(-1, keepdims=True))
        outs.append(e / e.sum(-1, keepdims=True) @ v[..., sl])
    return np.concatenate(outs, axis=-1)


def test_keys_and_shapes() -> None:
    m = ViT(image_size=8, patch_size=4, num_classes=5, dim=12, depth=2, heads=3, channels=1, mlp_ratio=2)
    shapes = {k: v.shape for k, v in m.state_dict().items()}
    assert shapes["transformer.layers.1.0.fn.to_qkv.weight"] == (36, 12)
    assert shapes["transformer.layers.1.0.fn.to_out.0.weight"] == (12, 12)
    assert shapes["transformer.layers.1.1.fn.net.0.weight"] == (24, 12)
    assert shapes["transformer.layers.1.1.fn.net.3.weight"] == (12, 24)
    assert shapes["pos_embedding"] == (1, 5, 12) and shapes["mlp_head.1.weight"] == (5, 12)
    assert m(np.zeros((3, 1, 8, 8), np.float32)).shape == (3, 5)


@pytest.mark.parametrize("causal", [False, True])
def test_attention_matches_numpy(causal: bool) -> None:
    m = Attention(6, heads=2).to(dtype=F64)
    x = _x(2, 5, 6, seed=1)
    mask = np.tril(np.ones((5, 5), bool)) if causal else None
    heads = _attention_numpy(x.data, m.to_qkv.weight.data, 2, mask)
    Wo, bo = m.to_out[0].weight.data, m.to_out[0].bias.data
    np.testing.assert_allclose(m(x, mask=mask).data, heads @ Wo.T + bo, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("causal", [False, True])
def test_attention_with_q_k_v_tied_is_mssa(causal: bool) -> None:
    """The two attention rules share one frame: W_q = W_k = W_v = U and the same output layer
    make the standard layer compute MSSA exactly."""
    mssa = MSSA(6, heads=2).to(dtype=F64)
    attn = Attention(6, heads=2).to(dtype=F64)
    attn.to_qkv.weight.data = np.concatenate([mssa.qkv.weight.data] * 3)
    attn.to_out[0].weight.data, attn.to_out[0].bias.data = (
        mssa.to_out[0].weight.data,
        mssa.to_out[0].bias.data,
    )
    x = _x(2, 5, 6, seed=3)
    mask = np.tril(np.ones((5, 5), bool)) if causal else None
    np.testing.assert_allclose(attn(x, mask=mask).data, mssa(x, mask=mask).data, rtol=1e-12, atol=1e-12)
    assert set(mssa.state_dict()) == {"qkv.weight", "to_out.0.weight", "to_out.0.bias"}
    assert set(attn.state_dict()) == {"to_qkv.weight", "to_out.0.weight", "to_out.0.bias"}


@pytest.mark.parametrize("causal", [False, True])
def test_attention_op_gradcheck(causal: bool) -> None:
    mask = np.tril(np.ones((4, 4), bool)) if causal else None
    qkv = _x(2, 4, 12, seed=2, requires_grad=True)
    gradcheck(lambda t: attention(t, 2, mask=mask)[0], qkv)


def test_feedforward_is_a_gelu_mlp() -> None:
    m = FeedForward(4, 8).to(dtype=F64)
    x = _x(2, 3, 4, seed=3)
    W1, b1 = m.net[0].weight.data, m.net[0].bias.data
    W2, b2 = m.net[3].weight.data, m.net[3].bias.data
    h = x.data @ W1.T + b1
    h = 0.5 * h * (1 + erf(h / np.sqrt(2)))
    np.testing.assert_allclose(m(x).data, h @ W2.T + b2, rtol=1e-12)


def test_vit_end_to_end_gradcheck() -> None:
    m = ViT(**TINY).to(dtype=F64)
    img = _x(2, 1, 4, 4, seed=4, requires_grad=True)
    gradcheck(m, img)
    for p in m.parameters():  # every parameter receives a gradient
        p.grad = None
    m(img).sum().backward()
    assert all(p.grad is not None and np.abs(p.grad).sum() > 0 for p in m.parameters())


def test_presets_match_crate_shapes() -> None:
    for size in ("mnist_tiny", "cifar_small"):
        v, c = create("vit_" + size), create("crate_" + size)
        assert (v.dim, v.num_patches, len(v.transformer.layers)) == (
            c.dim,
            c.num_patches,
            len(c.transformer.layers),
        )


def test_record_vit() -> None:
    m = ViT(**TINY).to(dtype=F64)
    img = _x(2, 1, 4, 4, seed=5)
    with record(m) as rec:
        m(img)
    assert set(rec) == set(TRANSFORMER_KEYS) and all(len(v) == 2 for v in rec.values())
    assert rec["mlp_hidden"][0].shape == (2, 5, 16) and rec["attention"][0].shape == (2, 2, 5, 5)
    block = m.transformer.layers[1]
    expected = rec["attn_out"][1] + block.mlp(Tensor(rec["mlp_in"][1])).data
    np.testing.assert_allclose(rec["mlp_out"][1], expected, rtol=1e-12)
    np.testing.assert_allclose(rec["mlp_out"][1], m.forward_features(img).data, rtol=1e-12)
    np.testing.assert_allclose(rec["attn_in"][1], block[0].norm(Tensor(rec["mlp_out"][0])).data, rtol=1e-12)


def test_errors() -> None:
    with pytest.raises(ValueError, match="not divisible by the patch size"):
        ViT(image_size=10, patch_size=3, num_classes=2, dim=4, depth=1, heads=2)
    with pytest.raises(ValueError, match=r"\(B, C, H, W\) = \(B, 1, 4, 4\)"):
        ViT(**TINY)(np.zeros((2, 4, 4), np.float32))
