"""Causal and masked language models: causality, the loss, gradients, generation, presets."""

from __future__ import annotations

import numpy as np
import pytest

import whitebox.functional as F
from whitebox import Tensor, manual_seed
from whitebox.crate import (
    BERT,
    GPT,
    PRESETS,
    CausalCRATE,
    CRATETransformer,
    MaskedCRATE,
    TokenModel,
    causal_mask,
    create,
    fill_mask,
)
from whitebox.crate.token_model import EMBEDDING_STD
from whitebox.gradcheck import gradcheck
from whitebox.nn import init

V, T = 11, 8
IGNORE_INDEX = -100  # the targets' marker for "not scored", as cross_entropy(ignore_index=...) takes it


def _causal(cls):
    manual_seed(0)
    return (CausalCRATE(V, T, 16, 2, 2) if cls is CausalCRATE else GPT(V, T, 8, 2, 2)).eval()


def test_causal_mask_is_lower_triangular():
    np.testing.assert_array_equal(causal_mask(3), [[1, 0, 0], [1, 1, 0], [1, 1, 1]])


@pytest.mark.parametrize("cls", [CausalCRATE, GPT])
def test_future_tokens_never_change_earlier_logits(cls):
    model = _causal(cls)
    ids = np.random.default_rng(0).integers(0, V, (3, T))
    before = model(ids).numpy()
    for t in range(T):
        changed = ids.copy()
        changed[:, t] = (changed[:, t] + 1 + np.arange(3)) % V
        after = model(changed).numpy()
        np.testing.assert_allclose(after[:, :t], before[:, :t], rtol=0, atol=1e-6)
        assert not np.allclose(after[:, t], before[:, t])  # position t itself does see its token


@pytest.mark.parametrize("cls", [MaskedCRATE, BERT])
def test_masked_models_are_bidirectional(cls):
    manual_seed(0)
    model = cls(V, T, 16, 1, 2).eval()
    ids = np.zeros((1, T), dtype=np.int64)
    changed = ids.copy()
    changed[0, -1] = 3
    assert not np.allclose(model(ids).numpy()[0, 0], model(changed).numpy()[0, 0])


@pytest.mark.parametrize("cls", [CausalCRATE, GPT, MaskedCRATE, BERT])
def test_context_longer_than_block_size_is_an_error(cls):
    manual_seed(0)
    model = cls(V, T, 8, 1, 2)
    with pytest.raises(ValueError, match=rf"{T + 1} tokens.*block_size {T}"):
        model(np.zeros((1, T + 1), dtype=np.int64))


def test_loss_counts_only_chosen_positions():
    rng = np.random.default_rng(0)
    logits = Tensor(rng.standard_normal((2, 6, V)), requires_grad=True)
    targets = np.full((2, 6), IGNORE_INDEX)
    targets[0, 1], targets[1, 4] = 3, 7
    loss = F.cross_entropy(logits, targets, ignore_index=IGNORE_INDEX)
    x = logits.numpy()
    logp = x - np.log(np.exp(x).sum(-1, keepdims=True))
    np.testing.assert_allclose(loss.item(), -(logp[0, 1, 3] + logp[1, 4, 7]) / 2)
    loss.backward()
    chosen = targets != IGNORE_INDEX
    assert np.all(logits.grad[~chosen] == 0) and np.all(np.abs(logits.grad[chosen]).sum(-1) > 0)


def test_gradcheck_one_block_causal_crate():
    manual_seed(0)
    model = CausalCRATE(5, 4, 6, 1, 2).to(dtype=np.float64)
    # Embeddings of unit scale: at the N(0, 0.02^2) init the first LayerNorm divides by ~0.02,
    # and its curvature would swamp central differences.
    rng = np.random.default_rng(1)
    for emb in (model.token_embedding.weight, model.pos_embedding):
        emb.data = rng.standard_normal(emb.shape)
    params = model.parameters()
    original = [p.data for p in params]
    ids = np.random.default_rng(0).integers(0, 5, (2, 4))

    def fn(*values):
        """The logits as a function of all parameters (finite differences pass perturbed copies)."""
        for p, v in zip(params, values, strict=True):
            p.data = v.data
        try:
            return model(ids)
        finally:
            for p, v in zip(params, original, strict=True):
                p.data = v

    gradcheck(fn, *params)


@pytest.mark.parametrize("cls", [CausalCRATE, GPT])
def test_generation_is_reproducible_and_top1_is_greedy(cls):
    model = _causal(cls)
    prompt = np.array([1, 2, 3], dtype=np.int64)
    a = model.generate(prompt, 12, temperature=0.8, top_k=5, seed=7)
    b = model.generate(prompt, 12, temperature=0.8, top_k=5, seed=7)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (15,) and (a[:3] == prompt).all()
    ids = prompt.copy()
    for _ in range(12):  # greedy by hand, with the context cropped to block_size
        ids = np.append(ids, model(ids[None, -T:]).numpy()[0, -1].argmax())
    np.testing.assert_array_equal(model.generate(prompt, 12, top_k=1, seed=123), ids)


def test_generation_crops_a_long_prompt():
    model = _causal(CausalCRATE)
    out = model.generate(np.arange(3 * T) % V, 2, seed=0)
    assert out.shape == (3 * T + 2,)
    with pytest.raises(ValueError, match="temperature"):
        model.generate([1], 1, temperature=0)


class _Letters:
    """The tokenizer interface fill_mask uses: one id per letter of "abcd ", then [MASK]."""

    letters = "abcd "
    n_regular = len(letters)
    mask_id = n_regular
    vocab_size = n_regular + 1

    def encode(self, text: str, allow_special: bool = False) -> np.ndarray:
        assert allow_special
        ids, rest = [], text
        while rest:
            if rest.startswith("[MASK]"):
                ids.append(self.mask_id)
                rest = rest[len("[MASK]") :]
            else:
                ids.append(self.letters.index(rest[0]))
                rest = rest[1:]
        return np.array(ids, dtype=np.int64)

    def decode(self, ids) -> str:
        return "".join("[MASK]" if i == self.mask_id else self.letters[i] for i in ids)


def test_fill_mask_reads_the_marker():
    tok = _Letters()
    manual_seed(0)
    model = MaskedCRATE(tok.vocab_size, 16, 8, 1, 2).train()
    out = fill_mask(model, tok, "ab[MASK]d [MASK]", top_k=3)
    assert model.training  # fill_mask ran in eval mode and gave the mode back
    assert len(out["candidates"]) == 2 and all(len(c) == 3 for c in out["candidates"])
    probs = [p for _, p in out["candidates"][0]]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-9
    assert "[MASK]" not in out["text"] and len(out["text"]) == 6 and out["text"][:2] == "ab"
    with pytest.raises(ValueError, match="no \\[MASK\\]"):
        fill_mask(model, tok, "abc")


def test_generate_needs_a_causal_model():
    manual_seed(0)
    with pytest.raises(ValueError, match="bidirectional"):
        BERT(V, T, 8, 1, 2).generate([1], 1)


@pytest.mark.parametrize(
    ("cls", "causal"), [(CausalCRATE, True), (GPT, True), (MaskedCRATE, False), (BERT, False)]
)
def test_four_models_are_one_token_model_with_a_mask_rule(cls, causal):
    manual_seed(0)
    model = cls(V, T, 8, 1, 2)
    assert isinstance(model, TokenModel) and model.causal is causal


def test_embeddings_are_drawn_once_after_the_blocks():
    """No hidden draws: the blocks' weights, then E ~ N(0, 0.02^2), then P ~ N(0, 0.02^2)."""
    manual_seed(0)
    model = CausalCRATE(V, T, 16, 2, 2, eta=0.2, lam=0.3)
    manual_seed(0)
    blocks = CRATETransformer(16, 2, 2, None, 0.0, 0.2, 0.3)
    E, P = init.normal((V, 16), EMBEDDING_STD), init.normal((T, 16), EMBEDDING_STD)
    for k, v in blocks.state_dict().items():
        np.testing.assert_array_equal(model.transformer.state_dict()[k], v)
    np.testing.assert_array_equal(model.token_embedding.weight.numpy(), E.astype(np.float32))
    np.testing.assert_array_equal(model.pos_embedding.numpy(), P.astype(np.float32))
    assert EMBEDDING_STD == 0.02


@pytest.mark.parametrize("size", ["tiny", "small", "base"])
@pytest.mark.parametrize(("crate", "twin"), [("causal_crate", "gpt"), ("masked_crate", "bert")])
def test_twins_have_about_the_same_parameter_count(size, crate, twin):
    a = create(f"{crate}_{size}", vocab_size=100).num_parameters()
    b = create(f"{twin}_{size}", vocab_size=100).num_parameters()
    assert abs(a - b) / b < 0.1, (a, b)


def test_language_presets_need_a_vocabulary():
    names = {
        n for n, cfg in PRESETS.items() if cfg["arch"] in ("causal_crate", "gpt", "masked_crate", "bert")
    }
    assert len(names) == 12
    with pytest.raises(ValueError, match="vocab_size"):
        create("gpt_tiny")
    model = create("masked_crate_tiny", vocab_size=V, dim_head=8)
    assert isinstance(model, MaskedCRATE) and not model.causal
    assert (model.vocab_size, model.block_size, model.dim) == (V, 32, 60)
    assert model.transformer.layers[0].attn.dim_head == 8
