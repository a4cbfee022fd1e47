"""Generation with a key/value cache: the same tokens and logits as recomputation, less work;
and ISTA's path for few tokens (a generation step)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from whitebox import manual_seed, no_grad
from whitebox.crate import GPT, ISTA, CausalCRATE, TokenModel
from whitebox.crate.block import PreNormBlock, Transformer
from whitebox.crate.ista import ista
from whitebox.crate.kv_cache import KVCache
from whitebox.gradcheck import gradcheck
from whitebox.nn import Identity, Module
from whitebox.tensor import Tensor

V, T = 13, 10


def _model(cls: type, device: str = "cpu") -> TokenModel:
    manual_seed(1)
    model = CausalCRATE(V, T, 16, 2, 4) if cls is CausalCRATE else GPT(V, T, 16, 2, 4)
    return model.to(device).eval()


@pytest.mark.parametrize("cls", [CausalCRATE, GPT])
def test_cached_logits_equal_the_full_forward(cls: type) -> None:
    """Prompt of 3, then one token at a time: every step's logits are the full forward's rows."""
    model = _model(cls)
    ids = np.random.default_rng(0).integers(0, V, size=(2, T))
    with no_grad():
        full = model(ids).numpy()
        cache = KVCache()
        parts = [model(ids[:, :3], cache=cache).numpy()]
        parts += [model(ids[:, t : t + 1], cache=cache).numpy() for t in range(3, T)]
    assert cache.length == T
    np.testing.assert_allclose(np.concatenate(parts, axis=1), full, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(("cls", "stored"), [(CausalCRATE, 1), (GPT, 2)])
def test_mssa_caches_one_array_per_layer_gpt_two(cls: type, stored: int) -> None:
    """Tied q = k = v: CRATE keeps w alone; the standard layer keeps k and v."""
    model = _model(cls)
    cache = KVCache()
    with no_grad():
        model(np.zeros((3, 4), dtype=np.int64), cache=cache)
    assert len(cache.layers) == 2
    for slot in cache.layers:
        assert len(slot.parts) == stored
        assert all(part.shape == (3, 4, 16) for part in slot.parts)  # (B, T, heads * p)


@pytest.mark.parametrize("cls", [CausalCRATE, GPT])
@pytest.mark.parametrize("sampling", [{"top_k": 1}, {"temperature": 0.8, "top_k": 5, "seed": 7}, {"seed": 3}])
def test_cached_and_uncached_generation_give_the_same_tokens(cls: type, sampling: dict[str, Any]) -> None:
    """Greedy and sampled, past block_size (the crop rebuilds the cache)."""
    model = _model(cls)
    prompt = np.array([1, 2, 3])
    cached = model.generate(prompt, 2 * T, **sampling)
    np.testing.assert_array_equal(cached, model.generate(prompt, 2 * T, cache=False, **sampling))
    assert len(cached) == 3 + 2 * T
    assert len(set(cached.tolist())) > 1  # not a degenerate constant stream


def test_cached_steps_feed_only_the_new_token(monkeypatch: pytest.MonkeyPatch) -> None:
    """The prompt once, then one token per step until the window is full; past it, the window."""
    model = _model(CausalCRATE)
    fed: list[int] = []
    features = model.features

    def spy(ids: Any, cache: KVCache | None = None) -> Tensor:
        fed.append(np.shape(ids)[1])
        return features(ids, cache)

    monkeypatch.setattr(model, "features", spy)
    model.generate([1, 2, 3, 4], T - 4 + 3, top_k=1)
    assert fed == [4] + [1] * (T - 4) + [T] * 2  # contexts 4, 5..T, then T + 1, T + 2 cropped
    fed.clear()
    model.generate([1, 2, 3, 4], 3, top_k=1, cache=False)
    assert fed == [4, 5, 6]


def test_generation_with_the_cache_on_the_device(device: str) -> None:
    """The cache lives on the model's device; tokens equal the CPU model's."""
    on_device = _model(CausalCRATE, device)
    gpt = _model(GPT, device)
    for model, cls in ((on_device, CausalCRATE), (gpt, GPT)):
        out = model.generate([4, 5], T + 3, temperature=0.9, top_k=4, seed=2)
        np.testing.assert_array_equal(
            out, _model(cls).generate([4, 5], T + 3, temperature=0.9, top_k=4, seed=2)
        )
    cache = KVCache()
    with no_grad():
        on_device(np.array([[1, 2]]), cache=cache)
    assert cache.layers[0].parts[0].__class__ is on_device.pos_embedding.data.__class__


class _Uncacheable(Module):
    """An attention stand-in without a cache rule (as a linear-time layer may be)."""

    cacheable = False

    def forward(self, x: Tensor, mask: Any = None) -> Tensor:
        return x * 0.5


def test_a_layer_that_cannot_cache_falls_back_to_recomputation() -> None:
    manual_seed(0)
    blocks = Transformer(
        [type("B", (PreNormBlock,), {"residual_second": True})(8, _Uncacheable(), Identity())]
    )
    model = TokenModel(V, T, 8, blocks).eval()
    assert not model.cacheable
    a = model.generate([1, 2], 12, seed=1)
    np.testing.assert_array_equal(a, model.generate([1, 2], 12, seed=1, cache=False))
    with no_grad(), pytest.raises(ValueError, match="cannot keep a key/value cache"):
        model(np.array([[1, 2]]), cache=KVCache())


def test_cache_misuse_is_refused() -> None:
    model = _model(CausalCRATE)
    ids = np.array([[1, 2, 3]])
    with pytest.raises(RuntimeError, match="eval mode under no_grad"):
        model(ids, cache=KVCache())  # grad mode
    model.train()
    with no_grad(), pytest.raises(RuntimeError, match="eval mode under no_grad"):
        model(ids, cache=KVCache())
    model.eval()
    cache = KVCache()
    with no_grad():
        model(np.zeros((1, T - 1), dtype=np.int64), cache=cache)
        with pytest.raises(ValueError, match=f"after {T - 1} cached tokens, more than block_size {T}"):
            model(ids, cache=cache)


@pytest.mark.parametrize("rows", [1, 2, 3])
def test_ista_with_few_tokens_skips_the_fold_and_agrees(rows: int) -> None:
    """Fewer than d / 2 token rows (a generation step): the three-product forward, same values
    and gradients as the folded one."""
    m = ISTA(8, eta=0.2, lam=0.05).to(dtype=np.float64)
    x = Tensor(np.random.default_rng(rows).standard_normal((1, rows, 8)), requires_grad=True)
    D = m.weight.data
    expected = np.maximum(x.data + 0.2 * (x.data @ D - x.data @ D.T @ D) - 0.2 * 0.05, 0)
    np.testing.assert_allclose(m(x).data, expected, rtol=1e-12, atol=1e-12)
    many = Tensor(np.concatenate([x.data, np.random.default_rng(9).standard_normal((1, 8, 8))], axis=1))
    np.testing.assert_allclose(m(many).data[:, :rows], expected, rtol=1e-12, atol=1e-12)  # folded path
    gradcheck(m, x)
    gradcheck(lambda w: ista(x, w, 0.2, 0.05), m.weight)
