"""Causal and masked language models: causality, the masking rule, the loss, gradients, generation."""

from __future__ import annotations

import numpy as np
import pytest

import whitebox.functional as F
from whitebox import Tensor, manual_seed
from whitebox.crate.causal import GPT, CausalCRATE, causal_mask
from whitebox.crate.masked import BERT, IGNORE_INDEX, MaskedCRATE, fill_mask, mask_tokens
from whitebox.gradcheck import gradcheck
from whitebox.tokenizers import MASK, CharTokenizer
from whitebox.train.text import PRESETS, build_model, resolve_config

V, T = 11, 8


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


def test_masking_rule_proportions():
    """Chosen ~ Bin(n, 0.15); of the chosen, [MASK] 80%, random 10%, kept 10% (5 sigma bounds)."""
    n, vocab, mask_id = 400_000, 1000, 1000
    ids = np.random.default_rng(1).integers(0, vocab, n)
    inputs, targets = mask_tokens(ids, np.random.default_rng(2), mask_id, vocab, p=0.15)
    chosen = targets != IGNORE_INDEX
    np.testing.assert_array_equal(targets[chosen], ids[chosen])
    np.testing.assert_array_equal(inputs[~chosen], ids[~chosen])  # unchosen are never touched

    def close(count, total, p):
        assert abs(count - total * p) < 5 * np.sqrt(total * p * (1 - p)), (count, total, p)

    m = int(chosen.sum())
    close(m, n, 0.15)
    masked = inputs[chosen] == mask_id
    kept = inputs[chosen] == ids[chosen]
    close(int(masked.sum()), m, 0.8)
    close(int(kept.sum()), m, 0.1 + 0.1 / vocab)  # a random draw equal to the original also counts as kept
    assert (inputs[chosen][~masked] < vocab).all()  # random replacements are ordinary tokens


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


def test_fill_mask_reads_the_marker():
    tok = CharTokenizer.train("abcd ", specials=(MASK,))
    manual_seed(0)
    model = MaskedCRATE(tok.vocab_size, 16, 8, 1, 2)
    out = fill_mask(model, tok, f"ab{MASK}d {MASK}", top_k=3)
    assert len(out["candidates"]) == 2 and all(len(c) == 3 for c in out["candidates"])
    probs = [p for _, p in out["candidates"][0]]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-9
    assert MASK not in out["text"] and len(out["text"]) == 6 and out["text"][:2] == "ab"
    with pytest.raises(ValueError, match="no \\[MASK\\]"):
        fill_mask(model, tok, "abc")


@pytest.mark.parametrize("preset", sorted(PRESETS))
@pytest.mark.parametrize("task", ["lm", "mlm"])
def test_twins_have_about_the_same_parameter_count(preset, task):
    counts = {}
    for model in ("crate", "gpt" if task == "lm" else "bert"):
        cfg = resolve_config({"task": task, "model": model, "preset": preset})
        counts[model] = build_model(cfg, 100).num_parameters()
    crate, twin = counts.values()
    assert abs(crate - twin) / twin < 0.1, counts
