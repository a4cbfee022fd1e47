"""Causal CRATE (CRATE-GPT) and its black-box twin, a GPT of the same skeleton.

Both map token ids (B, T) to next-token logits (B, T, V):

    x_0 = E[ids] + P[:T]                      token embedding E (V, dim), learned positions P
    x_l = block_l(x_{l-1}, mask)              l = 1..depth, mask[i, j] = (j <= i)
    logits = LN(x_depth) E^T                  the LM head is tied to the token embedding

The causal mask is the only change attention needs for language: in the row
form of MSSA, head k computes softmax(w_k w_k^T / sqrt(p)) w_k with w_k = x U_k;
masking the scores above the diagonal to -inf makes token i a combination of
w_k at tokens 0..i only. The compression step of token i then pulls it toward
the subspace structure of its *past*, so the model can be trained on every
position of a window at once without seeing the future.

``CausalCRATE`` uses CRATE blocks (x + MSSA(LN x), then ISTA(LN .), tied
q = k = v, no MLP). ``GPT`` uses standard pre-norm blocks (separate q, k, v, a
GELU MLP of width 4 dim, residuals around both). A CRATE block has about
3 dim^2 weights and a GPT block 12 dim^2, so a GPT of width dim / 2 has about
the parameters of a CRATE of width dim (see ``whitebox.train.text.PRESETS``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from whitebox import backend
from whitebox.crate.block import CRATETransformer
from whitebox.crate.vit import ViTTransformer
from whitebox.nn import Dropout, Embedding, LayerNorm, Module, Parameter, init
from whitebox.tensor import Tensor, no_grad


def causal_mask(T: int) -> np.ndarray:
    """(T, T) boolean, True where query i may attend to key j, i.e. j <= i (lower triangle)."""
    return np.tril(np.ones((T, T), dtype=bool))


class TokenTransformer(Module):
    """The skeleton every language model here shares, around a ``transformer`` (a stack of blocks
    mapping (B, T, dim) and a mask to (B, T, dim)).

    Keys: ``token_embedding.weight`` (V, dim, also the output head),
    ``pos_embedding`` (block_size, dim), ``transformer.layers.{i}.*``, ``norm.*``.
    Both embeddings start N(0, 0.02^2), as in GPT-2, so the initial logits are
    small and the initial loss is about ln V.
    """

    causal = True

    def __init__(
        self, vocab_size: int, block_size: int, dim: int, transformer: Module, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.vocab_size, self.block_size, self.dim = vocab_size, block_size, dim
        self.token_embedding = Embedding(vocab_size, dim)
        self.token_embedding.weight.data = init.normal((vocab_size, dim), 0.02).astype(backend.DEFAULT_DTYPE)
        self.pos_embedding = Parameter(init.normal((block_size, dim), 0.02), dtype=backend.DEFAULT_DTYPE)
        self.dropout = Dropout(dropout)
        self.transformer = transformer
        self.norm = LayerNorm(dim)

    def features(self, ids: Any) -> Tensor:
        """The normalized last-layer tokens LN(x_depth), (B, T, dim)."""
        shape = np.shape(ids)
        if len(shape) != 2:
            raise ValueError(f"{type(self).__name__}: expected token ids of shape (B, T), got {shape}")
        T = shape[1]
        if T > self.block_size:
            raise ValueError(
                f"{type(self).__name__}: the sequence has {T} tokens, more than block_size "
                f"{self.block_size} (the number of learned positions); crop it to the last {self.block_size}"
            )
        x = self.dropout(self.token_embedding(ids) + self.pos_embedding[:T])
        x = self.transformer(x, mask=causal_mask(T) if self.causal else None)
        return self.norm(x)

    def forward(self, ids: Any) -> Tensor:
        """Logits (B, T, V) = LN(x_depth) E^T for integer ``ids`` (B, T), T <= block_size."""
        return self.features(ids) @ self.token_embedding.weight.mT

    def extra_repr(self) -> str:
        return f"vocab_size={self.vocab_size}, block_size={self.block_size}, dim={self.dim}"


class CausalLM(TokenTransformer):
    """A TokenTransformer with the causal mask, plus sampling."""

    @no_grad()
    def generate(
        self,
        prompt_ids: Any,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        seed: int = 0,
    ) -> np.ndarray:
        """Extend the 1-D ``prompt_ids`` by ``max_new_tokens`` sampled tokens; returns all ids (int64).

        Each step feeds the last ``block_size`` ids (a longer context is cropped),
        takes the last position's logits z, and samples from softmax(z / temperature)
        restricted to the ``top_k`` largest (ties: the lower id first); ``top_k=1`` is
        greedy decoding (argmax). ``seed`` seeds the sampler, so a call is reproducible.
        Runs in eval mode (no dropout) and restores the previous mode.
        """
        if temperature <= 0:
            raise ValueError(f"generate: temperature must be > 0 (use top_k=1 for greedy), got {temperature}")
        if top_k is not None and top_k < 1:
            raise ValueError(f"generate: top_k must be >= 1 or None, got {top_k}")
        ids = np.asarray(prompt_ids, dtype=np.int64).reshape(-1)
        if ids.size == 0:
            raise ValueError("generate: the prompt needs at least one token")
        rng = np.random.default_rng(seed)
        was_training = self.training
        self.eval()
        for _ in range(max_new_tokens):
            logits = self(ids[None, -self.block_size :]).numpy()[0, -1].astype(np.float64)
            keep = np.argsort(-logits, kind="stable")[:top_k]
            z = logits[keep] / temperature
            p = np.exp(z - z.max())
            ids = np.append(ids, keep[rng.choice(len(keep), p=p / p.sum())])
        self.train(was_training)
        return ids


class CausalCRATE(CausalLM):
    """CRATE-GPT: ``depth`` causal CRATE blocks (CRATE.md sec. 4, last line)."""

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


class GPT(CausalLM):
    """The black-box twin: ``depth`` pre-norm transformer blocks with the causal mask."""

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
