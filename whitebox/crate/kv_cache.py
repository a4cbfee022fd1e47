"""The key/value cache of causal generation: what each attention layer keeps of the past tokens.

A causal model's token i depends on tokens 0..i only, so when generation appends one token
the keys and values of the earlier ones do not change. Instead of recomputing the whole
context for every new token, each attention layer stores its keys and values and a step
feeds only the new tokens:

    K_l = [K_l(past); k_l(new)],  V_l = [V_l(past); v_l(new)],  out_new = softmax(s q_new K_l^T) V_l

so the attention of a step costs O(T) per layer instead of O(T^2). What a layer stores is
its own business: the standard ``Attention`` keeps k and v, CRATE's ``MSSA`` (query = key =
value = w) one array w per layer, all heads side by side in the feature axis, (B, T, heads * p).

The cache is an explicit object: ``TokenModel.forward(ids, cache=cache)`` passes it to the
``Transformer``, which hands layer l its slot ``cache.layer(l)``.
"""

from __future__ import annotations

from typing import Any

from whitebox import backend


class LayerCache:
    """One attention layer's stored arrays: ``parts`` (a tuple of backend arrays of shape
    (B, T, features), the tokens seen so far), empty until the first ``extend``."""

    def __init__(self) -> None:
        self.parts: tuple[Any, ...] = ()

    @property
    def length(self) -> int:
        """The number of tokens stored."""
        return self.parts[0].shape[-2] if self.parts else 0

    def extend(self, *new: Any) -> tuple[Any, ...]:
        """Append the new tokens' arrays (each (B, t, features)) along the token axis; returns
        all tokens' arrays, (B, T + t, features) each."""
        if self.parts:
            if len(new) != len(self.parts):
                raise ValueError(f"LayerCache: stored {len(self.parts)} arrays, got {len(new)}")
            xp = backend.array_module(new[0])
            new = tuple(xp.concatenate([old, add], axis=-2) for old, add in zip(self.parts, new, strict=True))
        self.parts = tuple(new)
        return self.parts


class KVCache:
    """The per-layer ``LayerCache`` slots of one generation, created on first use.

    ``length`` is the number of tokens every layer has stored, the position of the next token.
    """

    def __init__(self) -> None:
        self.layers: list[LayerCache] = []

    def layer(self, index: int) -> LayerCache:
        """Layer ``index``'s slot (created empty if new)."""
        while len(self.layers) <= index:
            self.layers.append(LayerCache())
        return self.layers[index]

    @property
    def length(self) -> int:
        """Tokens stored so far (0 for an empty cache)."""
        return self.layers[0].length if self.layers else 0

    def clear(self) -> None:
        """Forget every stored token."""
        self.layers = []
