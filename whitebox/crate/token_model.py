"""The token model every language model here shares, with the attention mask rule as a parameter.

It maps token ids (B, T) to logits (B, T, V) over the vocabulary:

    x_0 = E[ids] + P[:T]                      token embedding E (V, dim), learned positions P
    x_l = block_l(x_{l-1}, mask)              l = 1..depth
    logits = LN(x_depth) E^T                  the output head is tied to the token embedding

``causal = True`` masks the attention with mask[i, j] = (j <= i), so position i sees tokens
0..i only and the model is trained on next-token prediction at every position of a window
at once. In the row form of MSSA, head k computes softmax(w_k w_k^T / sqrt(p)) w_k with
w_k = x U_k; masking the scores above the diagonal makes token i a combination of w_k at
tokens 0..i, so the compression step of token i pulls it toward the subspace structure of
its *past*. ``causal = False`` lets every token attend to every other (masked-token
prediction, BERT's objective): compression of a bidirectional window, which is what
filling a gap needs.

The blocks are a parameter too (``transformer``); ``whitebox.crate.language`` builds the models:
CRATE or standard blocks, causal or bidirectional, and the causal CRATE-alpha and ToST.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from whitebox import backend
from whitebox.crate.kv_cache import KVCache
from whitebox.nn import Dropout, Embedding, LayerNorm, Module, Parameter, init
from whitebox.tensor import Tensor, no_grad

EMBEDDING_STD = 0.02


def causal_mask(T: int) -> np.ndarray:
    """(T, T) boolean, True where query i may attend to key j, i.e. j <= i (lower triangle)."""
    return np.tril(np.ones((T, T), dtype=bool))


class TokenModel(Module):
    """Embeddings, a ``transformer`` (a stack of blocks mapping (B, T, dim) and a mask to
    (B, T, dim)), a final LayerNorm and the tied head; ``causal`` picks the mask rule.

    Keys: ``token_embedding.weight`` (V, dim, also the output head),
    ``pos_embedding`` (block_size, dim), ``transformer.layers.{i}.*``, ``norm.*``.
    Both embeddings are drawn once from N(0, EMBEDDING_STD^2) = N(0, 0.02^2), as in GPT-2,
    so the initial logits are small and the initial loss is about ln V.
    """

    def __init__(  # noqa: PLR0917
        self,
        vocab_size: int,
        block_size: int,
        dim: int,
        transformer: Module,
        dropout: float = 0.0,
        causal: bool = True,
    ) -> None:
        super().__init__()
        self.vocab_size, self.block_size, self.dim, self.causal = vocab_size, block_size, dim, causal
        self.token_embedding = Embedding(vocab_size, dim, dtype=backend.DEFAULT_DTYPE, std=EMBEDDING_STD)
        self.pos_embedding = Parameter(
            init.normal((block_size, dim), EMBEDDING_STD), dtype=backend.DEFAULT_DTYPE
        )
        self.dropout = Dropout(dropout)
        self.transformer = transformer
        self.norm = LayerNorm(dim)

    @property
    def cacheable(self) -> bool:
        """Whether generation can keep a key/value cache: a causal model whose every attention
        layer takes a cache slot (``whitebox.crate.kv_cache``)."""
        return self.causal and getattr(self.transformer, "cacheable", False)

    def features(self, ids: Any, cache: KVCache | None = None) -> Tensor:
        """The normalized last-layer tokens LN(x_depth), (B, T, dim).

        With a ``cache`` holding n earlier tokens, ``ids`` are the T tokens that follow them:
        they take positions n..n+T-1 and attend to the cached ones (causal, cacheable models).
        """
        shape = np.shape(ids)
        if len(shape) != 2:
            raise ValueError(f"{type(self).__name__}: expected token ids of shape (B, T), got {shape}")
        T = shape[1]
        start = 0 if cache is None else cache.length
        if cache is not None and not self.cacheable:
            raise ValueError(f"{type(self).__name__}: this model cannot keep a key/value cache")
        if start + T > self.block_size:
            cached = f" after {start} cached tokens" if start else ""
            raise ValueError(
                f"{type(self).__name__}: the sequence has {T} tokens{cached}, more than block_size "
                f"{self.block_size} (the number of learned positions); crop it to the last {self.block_size}"
            )
        x = self.dropout(self.token_embedding(ids) + self.pos_embedding[start : start + T])
        mask = causal_mask(start + T)[start:] if self.causal else None
        x = self.transformer(x, mask=mask) if cache is None else self.transformer(x, mask=mask, cache=cache)
        return self.norm(x)

    def forward(self, ids: Any, cache: KVCache | None = None) -> Tensor:
        """Logits (B, T, V) = LN(x_depth) E^T for integer ``ids`` (B, T), T <= block_size;
        ``cache`` as in ``features``."""
        return self.features(ids, cache) @ self.token_embedding.weight.mT

    @no_grad()
    def generate(  # noqa: PLR0917
        self,
        prompt_ids: Any,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        seed: int = 0,
        cache: bool = True,
    ) -> np.ndarray:
        """Extend the 1-D ``prompt_ids`` by ``max_new_tokens`` sampled tokens; returns all ids (int64).

        Causal models only. Each step feeds the last ``block_size`` ids (a longer context is
        cropped), takes the last position's logits z, and samples from softmax(z / temperature)
        restricted to the ``top_k`` largest (ties: the lower id first); ``top_k=1`` is greedy
        decoding (argmax). ``seed`` seeds the sampler, so a call is reproducible. Runs in eval
        mode (no dropout) and restores the previous mode. ``stream`` yields the same tokens one
        at a time.

        ``cache = True`` keeps a key/value cache (``whitebox.crate.kv_cache``): the prompt is
        fed once, then each step feeds only the new token. Once the context is longer than
        ``block_size`` the crop shifts every token's position, so each such step rebuilds the
        cache from the cropped window and costs what a step without the cache costs. The tokens
        are those of ``cache = False`` (up to float rounding in the logits). A model whose
        attention cannot cache (``cacheable`` False) recomputes the context at every step.
        """
        ids = np.asarray(prompt_ids, dtype=np.int64).reshape(-1)
        new = list(self.stream(ids, max_new_tokens, temperature, top_k, seed, cache))
        return np.concatenate([ids, np.asarray(new, dtype=np.int64)])

    def stream(  # noqa: PLR0917
        self,
        prompt_ids: Any,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        seed: int = 0,
        cache: bool = True,
    ) -> Iterator[int]:
        """The tokens ``generate`` appends, yielded as each is sampled."""
        if not self.causal:
            raise ValueError(
                f"generate: {type(self).__name__} is bidirectional; sampling needs a causal model"
            )
        if temperature <= 0:
            raise ValueError(f"generate: temperature must be > 0 (use top_k=1 for greedy), got {temperature}")
        if top_k is not None and top_k < 1:
            raise ValueError(f"generate: top_k must be >= 1 or None, got {top_k}")
        ids = np.asarray(prompt_ids, dtype=np.int64).reshape(-1)
        if ids.size == 0:
            raise ValueError("generate: the prompt needs at least one token")
        rng = np.random.default_rng(seed)
        kv = KVCache() if cache and self.cacheable else None
        with self.evaluating():
            for _ in range(max_new_tokens):
                logits = self._last_logits(ids, kv)
                keep = np.argsort(-logits, kind="stable")[:top_k]
                z = logits[keep] / temperature
                p = np.exp(z - z.max())
                token = int(keep[rng.choice(len(keep), p=p / p.sum())])
                ids = np.append(ids, token)
                yield token

    @no_grad()
    def _last_logits(self, ids: np.ndarray, cache: KVCache | None) -> np.ndarray:
        """The next-token logits after ``ids`` (float64, (V,)), from the last ``block_size`` ids.

        With a ``cache``, only the ids it has not seen are fed; past ``block_size`` the window
        moves, every position changes, and the cache is rebuilt from the cropped window.
        """
        window = ids[-self.block_size :]
        if cache is None:
            return self(window[None]).numpy()[0, -1].astype(np.float64)
        if ids.size > self.block_size:
            cache.clear()
        return self(window[None, cache.length :], cache=cache).numpy()[0, -1].astype(np.float64)

    def extra_repr(self) -> str:
        sizes = f"vocab_size={self.vocab_size}, block_size={self.block_size}, dim={self.dim}"
        return f"{sizes}, causal={self.causal}"


@no_grad()
def fill_mask(model: TokenModel, tokenizer: Any, text: str, top_k: int = 5) -> dict[str, Any]:
    """Predict every "[MASK]" marker in ``text`` (one token each) in one forward pass.

    ``tokenizer`` needs ``encode(text, allow_special=True)``, ``decode(ids)``, ``mask_id`` and
    ``n_regular`` (the number of ordinary tokens). Returns ``{"text": text with each marker
    replaced by its most likely token, "candidates": one list per marker of (token string,
    probability), best first}``. Only ordinary tokens are proposed (never a special one).
    """
    ids = tokenizer.encode(text, allow_special=True)
    where = np.flatnonzero(ids == tokenizer.mask_id)
    if where.size == 0:
        raise ValueError(f"fill_mask: no [MASK] marker in {text!r}")
    with model.evaluating():
        logits = model(ids[None]).numpy()[0, where, : tokenizer.n_regular].astype(np.float64)
    probs = np.exp(logits - logits.max(axis=-1, keepdims=True))
    probs /= probs.sum(axis=-1, keepdims=True)
    best = np.argsort(-probs, axis=-1, kind="stable")[:, :top_k]
    filled = ids.copy()
    filled[where] = best[:, 0]
    candidates = [
        [(tokenizer.decode([t]), float(probs[row, t])) for t in best[row]] for row in range(len(where))
    ]
    return {"text": tokenizer.decode(filled), "candidates": candidates}
