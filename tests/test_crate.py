"""CRATE's layers (MSSA, ISTA, the block) and the CRATE classifier."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence

import numpy as np
import pytest

import whitebox as wb
from whitebox import rate
from whitebox.crate import CRATE, ISTA, MSSA, PRESETS, CRATEBlock, Patchify, TokenModel, create
from whitebox.crate.presets import ARCHITECTURES
from whitebox.crate.probe import CRATE_KEYS, intermediates, record
from whitebox.gradcheck import gradcheck
from whitebox.tensor import Tensor

F64 = np.float64


def _tokens(*shape: int, seed: int = 0, requires_grad: bool = False) -> Tensor:
    return Tensor(np.random.default_rng(seed).standard_normal(shape), requires_grad=requires_grad)


def _softmax(s: np.ndarray) -> np.ndarray:
    e = np.exp(s - s.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _causal(n: int) -> np.ndarray:
    return np.tril(np.ones((n, n), dtype=bool))


def check_param_grads(
    f: Callable[[], Tensor], params: Sequence[Tensor], per_param: int = 12, h: float = 1e-6, seed: int = 0
) -> None:
    """Autograd's gradient of sum(f() * w) against central differences, on ``per_param``
    random entries of each parameter (perturbed in place; float64 models)."""
    rng = np.random.default_rng(seed)
    out = f()
    w = rng.standard_normal(out.shape)
    for p in params:
        p.grad = None
    (out * Tensor(w)).sum().backward()
    for p in params:
        idx = rng.choice(p.size, size=min(per_param, p.size), replace=False)
        flat = p.data.reshape(-1)
        for i in idx:
            orig = flat[i]
            with wb.no_grad():
                flat[i] = orig + h
                plus = float((f().data * w).sum())
                flat[i] = orig - h
                minus = float((f().data * w).sum())
            flat[i] = orig
            expected = (plus - minus) / (2 * h)
            got = p.grad.reshape(-1)[i]
            assert abs(got - expected) <= 1e-6 + 1e-5 * abs(expected), (p.shape, i, got, expected)


# ---- MSSA ------------------------------------------------------------------------


def _mssa_heads_numpy(x: np.ndarray, W: np.ndarray, heads: int, mask: np.ndarray | None = None) -> np.ndarray:
    """The official head computation by a loop over heads: softmax(w w^T / sqrt(p)) w, concatenated."""
    p = W.shape[0] // heads
    outs = []
    for k in range(heads):
        w = x @ W[k * p : (k + 1) * p].T
        s = w @ w.swapaxes(-1, -2) / np.sqrt(p)
        if mask is not None:
            s = np.where(mask, s, -np.inf)
        outs.append(_softmax(s) @ w)
    return np.concatenate(outs, axis=-1)


def test_mssa_state_dict_keys_and_shapes() -> None:
    m = MSSA(12, heads=3, dim_head=5)
    assert {k: v.shape for k, v in m.state_dict().items()} == {
        "qkv.weight": (15, 12),
        "to_out.0.weight": (12, 15),
        "to_out.0.bias": (12,),
    }
    assert MSSA(12, 4).dim_head == 3


@pytest.mark.parametrize("causal", [False, True])
def test_mssa_matches_numpy_loop_over_heads(causal: bool) -> None:
    m = MSSA(8, heads=2, dim_head=3).to(dtype=F64)
    x = _tokens(2, 5, 8)
    mask = _causal(5) if causal else None
    heads = _mssa_heads_numpy(x.data, m.qkv.weight.data, 2, mask)
    seen = []
    m.to_out.register_forward_hook(lambda mod, inputs, out: seen.append(inputs[0].data))
    out = m(x, mask=mask)
    np.testing.assert_allclose(seen[0], heads, rtol=1e-12, atol=1e-12)
    Wo, bo = m.to_out[0].weight.data, m.to_out[0].bias.data
    np.testing.assert_allclose(out.data, heads @ Wo.T + bo, rtol=1e-12, atol=1e-12)


def test_mssa_heads_are_rate_ssa_with_rescaled_bases() -> None:
    """Head k = p^(1/4) rate.ssa(x, U_k / p^(1/4)), U_k = W_k^T: the 1/sqrt(p) of the official code."""
    m = MSSA(8, heads=2, dim_head=4).to(dtype=F64)
    x = _tokens(3, 6, 8, seed=1)
    seen = []
    m.to_out.register_forward_hook(lambda mod, inputs, out: seen.append(inputs[0].data))
    m(x)
    p, W = 4, m.qkv.weight.data
    for k in range(2):
        U_k = W[k * p : (k + 1) * p].T
        expected = p**0.25 * rate.ssa(x, U_k / p**0.25).data
        np.testing.assert_allclose(seen[0][..., k * p : (k + 1) * p], expected, rtol=1e-12, atol=1e-12)


def test_mssa_sum_over_heads_is_rate_mssa() -> None:
    """With to_out = alpha [U_1..U_K] (no bias) and scale 1, MSSA is rate.mssa exactly."""
    dim, heads, p, n, eps = 6, 2, 3, 5, 0.5
    m = MSSA(dim, heads, p).to(dtype=F64)
    m.scale = 1.0
    U = np.stack([m.qkv.weight.data[k * p : (k + 1) * p].T for k in range(heads)])  # (K, d, p)
    alpha = p / (n * eps**2)
    m.to_out[0].weight.data = alpha * np.concatenate(list(U), axis=1)  # (d, K p) = alpha [U_1, ..., U_K]
    m.to_out[0].bias.data[:] = 0
    x = _tokens(2, n, dim, seed=2)
    np.testing.assert_allclose(m(x).data, rate.mssa(x, U, eps).data, rtol=1e-12, atol=1e-12)


def test_mssa_causal_mask_hides_the_future() -> None:
    m = MSSA(8, heads=2).to(dtype=F64)
    x = _tokens(1, 6, 8, seed=3)
    y = x.data.copy()
    y[:, 4:] += 1.0
    mask = _causal(6)
    a, b = m(x, mask=mask).data, m(Tensor(y), mask=mask).data
    np.testing.assert_allclose(a[:, :4], b[:, :4], rtol=1e-12)
    assert not np.allclose(a[:, 4:], b[:, 4:])


@pytest.mark.parametrize("mask", [None, _causal(5)])
def test_mssa_gradcheck(mask: np.ndarray | None) -> None:
    m = MSSA(6, heads=2, dim_head=3).to(dtype=F64)
    x = _tokens(2, 5, 6, seed=4, requires_grad=True)
    gradcheck(lambda x: m(x, mask=mask), x)
    check_param_grads(lambda: m(x, mask=mask), m.parameters())


def test_mssa_keeps_attention_only_when_asked() -> None:
    m = MSSA(8, heads=4)
    x = Tensor(np.random.default_rng(0).standard_normal((2, 7, 8)).astype(np.float32))
    m(x)
    assert m.attention is None
    m.keep_attention = True
    m(x, mask=_causal(7))
    A = m.attention
    assert A.shape == (2, 4, 7, 7)
    np.testing.assert_allclose(A.sum(-1), 1, rtol=1e-5)
    assert np.all(A[..., np.triu_indices(7, 1)[0], np.triu_indices(7, 1)[1]] == 0)


def test_mssa_errors() -> None:
    with pytest.raises(ValueError, match="divisible"):
        MSSA(10, heads=3)
    with pytest.raises(ValueError, match=r"\(B, N, 8\)"):
        MSSA(8, heads=2)(Tensor(np.zeros((2, 5, 6))))
    with pytest.raises(ValueError, match="mask"):
        MSSA(8, heads=2)(Tensor(np.zeros((2, 5, 8))), mask=np.ones((4, 4), bool))


def test_mssa_dropout_only_in_training() -> None:
    m = MSSA(8, heads=2, dropout=0.5)
    x = Tensor(np.random.default_rng(0).standard_normal((2, 5, 8)).astype(np.float32))
    m.eval()
    np.testing.assert_array_equal(m(x).data, m(x).data)
    m.train()
    assert not np.array_equal(m(x).data, m(x).data)


# ---- ISTA --------------------------------------------------------------------------


def _ista_official(x: np.ndarray, D: np.ndarray, eta: float, lam: float) -> np.ndarray:
    """The official FeedForward: x1 = x D^T; grad_1 = x1 D; grad_2 = x D;
    relu(x + eta (grad_2 - grad_1) - eta lam)."""
    x1 = x @ D.T
    grad_1 = x1 @ D
    grad_2 = x @ D
    return np.maximum(x + eta * (grad_2 - grad_1) - eta * lam, 0)


def test_ista_matches_official_three_products_and_rate() -> None:
    m = ISTA(6, eta=0.2, lam=0.3).to(dtype=F64)
    x = _tokens(2, 5, 6, seed=5)
    out = m(x).data
    np.testing.assert_allclose(out, _ista_official(x.data, m.weight.data, 0.2, 0.3), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(out, rate.ista_step(x, m.weight, 0.2, 0.3).data, rtol=1e-12, atol=1e-12)
    assert (out == 0).any() and (out > 0).any()


def test_ista_init_is_kaiming_uniform() -> None:
    wb.manual_seed(0)
    D = ISTA(400).weight.data
    bound = np.sqrt(6 / 400)
    assert D.shape == (400, 400) and D.dtype == np.float32
    assert np.abs(D).max() <= bound and np.abs(D).max() > 0.99 * bound
    np.testing.assert_allclose(D.std(), bound / np.sqrt(3), rtol=0.01)


def test_ista_gradcheck() -> None:
    m = ISTA(5).to(dtype=F64)
    x = _tokens(2, 4, 5, seed=6, requires_grad=True)
    gradcheck(m, x)
    check_param_grads(lambda: m(x), [m.weight], per_param=25)


def test_ista_errors() -> None:
    with pytest.raises(ValueError, match="square"):
        ISTA(5)(Tensor(np.zeros((2, 3, 4))))


# ---- the block -----------------------------------------------------------------------


def test_block_keys_and_structure() -> None:
    b = CRATEBlock(8, heads=2, dim_head=4)
    assert list(b.state_dict()) == [
        "0.norm.weight",
        "0.norm.bias",
        "0.fn.qkv.weight",
        "0.fn.to_out.0.weight",
        "0.fn.to_out.0.bias",
        "1.norm.weight",
        "1.norm.bias",
        "1.fn.weight",
    ]
    assert b.attn is b[0].fn and b.ista is b[1].fn
    assert isinstance(b.attn, MSSA) and isinstance(b.ista, ISTA)


def test_block_is_residual_mssa_then_ista() -> None:
    b = CRATEBlock(8, heads=2, eta=0.3, lam=0.05).to(dtype=F64)
    x = _tokens(2, 5, 8, seed=7)
    mask = _causal(5)
    half = x + b.attn(b[0].norm(x), mask=mask)
    expected = b.ista(b[1].norm(half))
    np.testing.assert_allclose(b(x, mask=mask).data, expected.data, rtol=1e-12)
    assert b.ista.eta == 0.3 and b.ista.lam == 0.05


@pytest.mark.parametrize("mask", [None, _causal(4)])
def test_block_gradcheck(mask: np.ndarray | None) -> None:
    b = CRATEBlock(6, heads=2, dim_head=3).to(dtype=F64)
    x = _tokens(2, 4, 6, seed=8, requires_grad=True)
    gradcheck(lambda x: b(x, mask=mask), x)
    check_param_grads(lambda: b(x, mask=mask), b.parameters(), per_param=6)


# ---- the classifier --------------------------------------------------------------------

TINY = {"image_size": 4, "patch_size": 2, "num_classes": 3, "dim": 4, "depth": 2, "heads": 2, "channels": 2}


def _official_keys(depth: int) -> list[str]:
    keys = ["pos_embedding", "cls_token"]
    keys += [f"to_patch_embedding.{i}.{p}" for i in (1, 2, 3) for p in ("weight", "bias")]
    for i in range(depth):
        pre = f"transformer.layers.{i}."
        keys += [pre + "0.norm.weight", pre + "0.norm.bias", pre + "0.fn.qkv.weight"]
        keys += [pre + "0.fn.to_out.0.weight", pre + "0.fn.to_out.0.bias"]
        keys += [pre + "1.norm.weight", pre + "1.norm.bias", pre + "1.fn.weight"]
    return [*keys, "mlp_head.0.weight", "mlp_head.0.bias", "mlp_head.1.weight", "mlp_head.1.bias"]


def test_crate_keys_are_the_official_ones() -> None:
    m = CRATE(image_size=32, patch_size=8, num_classes=10, dim=48, depth=3, heads=4, channels=3)
    shapes = {k: v.shape for k, v in m.state_dict().items()}
    assert list(shapes) == _official_keys(3)
    assert shapes["pos_embedding"] == (1, 17, 48) and shapes["cls_token"] == (1, 1, 48)
    assert shapes["to_patch_embedding.1.weight"] == (192,)
    assert shapes["to_patch_embedding.2.weight"] == (48, 192)
    assert shapes["transformer.layers.2.0.fn.qkv.weight"] == (48, 48)
    assert shapes["transformer.layers.2.1.fn.weight"] == (48, 48)
    assert shapes["mlp_head.1.weight"] == (10, 48)
    assert all(v.dtype == np.float32 for v in m.state_dict().values())


@pytest.mark.parametrize(
    ("name", "published"),
    [("crate_tiny", 6.1e6), ("crate_small", 13.1e6), ("crate_base", 22.8e6), ("crate_large", 77.6e6)],
)
def test_imagenet_presets_have_the_published_sizes(name: str, published: float) -> None:
    m = create(name)
    assert (m.image_size, m.patch_size, m.num_classes) == ((224, 224), (16, 16), 1000)
    assert round(m.num_parameters() / 1e5) == round(published / 1e5)


def test_one_preset_table_for_every_family() -> None:
    """Every preset names a known architecture and builds it (language ones given a vocabulary)."""
    assert {cfg["arch"] for cfg in PRESETS.values()} == set(ARCHITECTURES)
    for name, cfg in PRESETS.items():
        if cfg.get("image_size") == 224:
            continue  # the ImageNet sizes are built in test_imagenet_presets_have_the_published_sizes
        cls = ARCHITECTURES[cfg["arch"]]
        extra = {"vocab_size": 7} if issubclass(cls, TokenModel) else {}
        assert type(create(name, depth=1, **extra)) is cls, name
    with pytest.raises(TypeError, match="bogus"):
        create("vit_mnist_tiny", bogus=1)


def test_small_image_presets() -> None:
    for name in PRESETS:
        if ("mnist" in name or "cifar" in name) and not name.startswith("mae_"):  # classifiers
            m = create(name)
            shape = (2, 1, 28, 28) if "mnist" in name else (2, 3, 32, 32)
            assert m(np.zeros(shape, np.float32)).shape == (2, 10), name
    assert create("crate_cifar_small", num_classes=100, depth=2).mlp_head[1].weight.shape == (100, 192)
    with pytest.raises(ValueError, match="unknown preset 'crate_huge'"):
        create("crate_huge")


def test_patchify_is_the_official_rearrange() -> None:
    """'b c (h p1) (w p2) -> b (h w) (p1 p2 c)', written out as loops."""
    img = np.random.default_rng(0).standard_normal((2, 3, 6, 4))
    got = Patchify((6, 4), (3, 2), 3)(Tensor(img)).data
    expected = np.empty((2, 4, 18))
    for b, h, w, p1, p2, c in np.ndindex(2, 2, 2, 3, 2, 3):
        expected[b, h * 2 + w, (p1 * 2 + p2) * 3 + c] = img[b, c, h * 3 + p1, w * 2 + p2]
    np.testing.assert_array_equal(got, expected)


def test_classifier_errors() -> None:
    with pytest.raises(ValueError, match=r"image size 30x30 is not divisible by the patch size 4x4"):
        CRATE(image_size=30, patch_size=4, num_classes=10, dim=8, depth=1, heads=2)
    m = CRATE(**TINY)
    with pytest.raises(ValueError, match=r"expected images of shape \(B, C, H, W\) = \(B, 2, 4, 4\)"):
        m(np.zeros((3, 4, 4, 2), np.float32))
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        m(np.zeros((2, 4, 4), np.float32))


def test_crate_forward_is_the_official_composition() -> None:
    m = CRATE(**TINY).to(dtype=F64)
    img = _tokens(3, 2, 4, 4, seed=9)
    x = m.to_patch_embedding(img).data
    x = np.concatenate([np.broadcast_to(m.cls_token.data, (3, 1, 4)), x], axis=1) + m.pos_embedding.data
    for block in m.transformer.layers:
        x = block(Tensor(x)).data
    np.testing.assert_allclose(m.forward_features(img).data, x, rtol=1e-12)
    np.testing.assert_allclose(m(img).data, m.mlp_head(Tensor(x[:, 0])).data, rtol=1e-12)


def test_crate_end_to_end_gradcheck() -> None:
    m = CRATE(**TINY).to(dtype=F64)
    img = _tokens(2, 2, 4, 4, seed=10, requires_grad=True)
    gradcheck(m, img)
    check_param_grads(lambda: m(img), m.parameters(), per_param=4)


def test_crate_trains_on_a_batch() -> None:
    """A few plain gradient steps lower the cross-entropy of a fixed batch."""
    wb.manual_seed(0)
    m = CRATE(image_size=8, patch_size=4, num_classes=3, dim=16, depth=2, heads=2, channels=1)
    rng = np.random.default_rng(0)
    img, y = rng.standard_normal((8, 1, 8, 8)).astype(np.float32), rng.integers(0, 3, 8)
    losses = []
    for _ in range(20):
        m.zero_grad()
        loss = wb.functional.cross_entropy(m(img), y)
        loss.backward()
        losses.append(loss.item())
        for p in m.parameters():
            p.data -= 0.05 * p.grad
    assert losses[-1] < 0.5 * losses[0]


# ---- inspection -----------------------------------------------------------------------------


def test_record_gives_each_layers_intermediates() -> None:
    m = CRATE(**{**TINY, "depth": 3}).to(dtype=F64)
    img = _tokens(2, 2, 4, 4, seed=11)
    plain = m(img).data
    with record(m) as rec:
        logits = m(img)
    np.testing.assert_array_equal(logits.data, plain)  # the forward pass is unchanged
    assert set(rec) == set(CRATE_KEYS) and all(len(v) == 3 for v in rec.values())
    assert rec["attention"][0].shape == (2, 2, 5, 5)
    for layer, block in enumerate(m.transformer.layers):
        z_half = rec["mssa_out"][layer]
        np.testing.assert_allclose(rec["ista_in"][layer], block[1].norm(Tensor(z_half)).data, rtol=1e-12)
        np.testing.assert_allclose(
            rec["ista_out"][layer], block.ista(Tensor(rec["ista_in"][layer])).data, rtol=1e-12
        )
        if layer:
            z = rec["ista_out"][layer - 1]
            np.testing.assert_allclose(rec["mssa_in"][layer], block[0].norm(Tensor(z)).data, rtol=1e-12)
            np.testing.assert_allclose(z_half, z + block.attn(Tensor(rec["mssa_in"][layer])).data, rtol=1e-12)
    np.testing.assert_allclose(rec["ista_out"][-1], m.forward_features(img).data, rtol=1e-12)
    np.testing.assert_allclose(rec["attention"][1].sum(-1), 1, rtol=1e-12)
    assert all(not b.attn.keep_attention and b.attn.attention is None for b in m.transformer.layers)
    assert all(not mod._forward_hooks for mod in m.modules())


def test_intermediates_runs_without_gradients() -> None:
    m = CRATE(**TINY)
    logits, rec = intermediates(m, np.ones((3, 2, 4, 4), np.float32))
    assert isinstance(logits, np.ndarray) and logits.shape == (3, 3)
    assert rec["ista_out"][1].shape == (3, 5, 4)
    assert all(p.grad is None for p in m.parameters())
    with pytest.raises(ValueError, match="no CRATEBlock"):
        with record(MSSA(4, 2)):
            pass


# ---- attention dropout and devices ---------------------------------------------------------


def test_attention_dropout_gradient(monkeypatch: pytest.MonkeyPatch) -> None:
    """With a fixed dropout mask the fused backward (rowsum(dA*A) = rowsum(g*out)) is exact."""
    att = importlib.import_module("whitebox.ops.attention")  # the module, not the function it exports

    keep = (np.random.default_rng(0).random((2, 2, 5, 5)) > 0.3) / 0.7
    monkeypatch.setattr(att, "_dropout_mask", lambda shape, p, like: keep.astype(like.dtype))
    w = _tokens(2, 5, 6, seed=12, requires_grad=True)
    gradcheck(lambda w: att.tied_attention(w, 2, dropout=0.3)[0], w)
    qkv = _tokens(2, 5, 12, seed=13, requires_grad=True)
    gradcheck(lambda t: att.attention(t, 2, dropout=0.3, mask=_causal(5))[0], qkv)


def test_crate_on_device_matches_cpu(device: str) -> None:
    wb.manual_seed(0)
    m = CRATE(**TINY)
    img = np.random.default_rng(14).standard_normal((3, 2, 4, 4)).astype(np.float32)
    y = np.array([0, 2, 1])
    wb.functional.cross_entropy(m(img), y).backward()
    cpu_grads = {k: p.grad.copy() for k, p in m.named_parameters()}
    m.zero_grad()
    m.to(device)
    logits = m(Tensor(img, device=device))
    wb.functional.cross_entropy(logits, Tensor(y, device=device)).backward()
    for k, p in m.named_parameters():
        assert p.device == device
        np.testing.assert_allclose(wb.backend.to_numpy(p.grad), cpu_grads[k], rtol=1e-4, atol=1e-6, err_msg=k)
