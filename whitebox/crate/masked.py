"""Masked CRATE and its black-box twin (a BERT of the same skeleton), and the masking rule.

The masked objective (BERT's): choose each position with probability p = 0.15;
of the chosen, 80% become [MASK], 10% a random token, 10% stay as they are; the
model sees the whole corrupted window at once (no causal mask: every token
attends to every other) and is trained with cross-entropy on the chosen
positions only:

    L = - 1/|C| sum_{i in C} log softmax(LN(x_depth) E^T)_{i, ids_i},   C = chosen positions.

The random and kept 10% force the model to predict every chosen position from
context, not just the ones that show [MASK]. For CRATE this is compression and
sparsification of a bidirectional window: the MSSA step pulls each token toward
the subspaces its whole neighbourhood occupies, which is what filling a gap needs.

``MaskedCRATE`` uses CRATE blocks, ``BERT`` standard pre-norm blocks; both share
``whitebox.crate.causal.TokenTransformer`` (tied output head) with ``causal = False``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from whitebox.crate.block import CRATETransformer
from whitebox.crate.causal import TokenTransformer
from whitebox.crate.vit import ViTTransformer
from whitebox.tensor import no_grad

IGNORE_INDEX = -100


def mask_tokens(
    ids: np.ndarray, rng: np.random.Generator, mask_id: int, vocab_size: int, p: float = 0.15
) -> tuple[np.ndarray, np.ndarray]:
    """BERT's corruption of ``ids`` (any shape): returns (inputs, targets), both int64.

    Each position is chosen with probability ``p``. targets = ids at chosen
    positions and ``IGNORE_INDEX`` (-100) elsewhere. inputs = ids, except at chosen
    positions: with probability 0.8 ``mask_id``, 0.1 a token drawn uniformly from
    [0, vocab_size), 0.1 unchanged. Pass the number of ordinary tokens as
    ``vocab_size`` so the random replacement is never a special token.
    """
    ids = np.asarray(ids, dtype=np.int64)
    chosen = rng.random(ids.shape) < p
    u = rng.random(ids.shape)
    to_mask = chosen & (u < 0.8)
    to_random = chosen & (u >= 0.8) & (u < 0.9)
    inputs = np.where(to_mask, mask_id, ids)
    inputs = np.where(to_random, rng.integers(0, vocab_size, size=ids.shape), inputs)
    targets = np.where(chosen, ids, IGNORE_INDEX)
    return inputs, targets


class MaskedCRATE(TokenTransformer):
    """``depth`` bidirectional CRATE blocks with a tied head: logits (B, T, V) for every position."""

    causal = False

    def __init__(  # noqa: PLR0917
        self,
        vocab_size: int,
        block_size: int,
        dim: int,
        depth: int,
        heads: int,
        dim_head: int | None = None,
        dropout: float = 0.0,
        eta: float = 0.1,
        lam: float = 0.1,
    ) -> None:
        blocks = CRATETransformer(dim, depth, heads, dim_head, dropout, eta, lam)
        super().__init__(vocab_size, block_size, dim, blocks, dropout)


class BERT(TokenTransformer):
    """The black-box twin: ``depth`` bidirectional pre-norm transformer blocks (GELU MLP, residuals)."""

    causal = False

    def __init__(  # noqa: PLR0917
        self,
        vocab_size: int,
        block_size: int,
        dim: int,
        depth: int,
        heads: int,
        dim_head: int | None = None,
        dropout: float = 0.0,
        mlp_ratio: float = 4,
    ) -> None:
        blocks = ViTTransformer(dim, depth, heads, dim_head, int(mlp_ratio * dim), dropout)
        super().__init__(vocab_size, block_size, dim, blocks, dropout)


@no_grad()
def fill_mask(model: TokenTransformer, tokenizer: Any, text: str, top_k: int = 5) -> dict[str, Any]:
    """Predict every "[MASK]" marker in ``text`` (one token each) in one forward pass.

    Returns ``{"text": text with each marker replaced by its most likely token,
    "candidates": one list per marker of (token string, probability), best first}``.
    Only ordinary tokens are proposed (never a special one).
    """
    ids = tokenizer.encode(text, allow_special=True)
    where = np.flatnonzero(ids == tokenizer.mask_id)
    if where.size == 0:
        raise ValueError(f"fill_mask: no [MASK] marker in {text!r}")
    was_training = model.training
    model.eval()
    logits = model(ids[None]).numpy()[0, where, : tokenizer.n_regular].astype(np.float64)
    model.train(was_training)
    probs = np.exp(logits - logits.max(axis=-1, keepdims=True))
    probs /= probs.sum(axis=-1, keepdims=True)
    best = np.argsort(-probs, axis=-1, kind="stable")[:, :top_k]
    filled = ids.copy()
    filled[where] = best[:, 0]
    candidates = [
        [(tokenizer.decode([t]), float(probs[row, t])) for t in best[row]] for row in range(len(where))
    ]
    return {"text": tokenizer.decode(filled), "candidates": candidates}
