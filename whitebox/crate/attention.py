"""Multi-head self-attention with the attention rule as a subclass hook, and the standard rule.

Every attention layer here has the same frame, for tokens x of shape (B, N, dim):

    y = projection(x)                       (B, N, width * heads * p), no bias
    out_k = rule_k(y)                       per head k, (B, N, p), under the boolean mask
    Attn(x) = [out_1, ..., out_K] W_o^T + b_o      ``to_out`` = Sequential(Linear, Dropout)

A subclass says three things: the attribute name of the projection (it is part of the
state_dict keys), how many blocks of ``heads * p`` features the projection makes (``width``),
and the rule, a function of ``whitebox.ops.attention`` that splits the heads, masks, takes the
softmax and merges the heads again. ``Attention`` (here) is the standard rule, separate query,
key and value; ``MSSA`` (``whitebox.crate.mssa``) is CRATE's, query = key = value.

For generation a layer takes a ``cache`` slot (``whitebox.crate.kv_cache``): the subclass's
``remember`` stores what its rule needs of the new tokens (k and v here, w for MSSA) and
returns the new queries with all keys and values, and ``ops.attention.cached_attention``
attends over them. A layer that cannot do this says so with ``cacheable = False``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from whitebox import backend
from whitebox.crate.kv_cache import LayerCache
from whitebox.nn import Dropout, Identity, Linear, Module, Sequential
from whitebox.ops.attention import attention, cached_attention
from whitebox.tensor import Tensor, is_grad_enabled

Rule = Callable[..., tuple[Tensor, Any]]


class MultiHeadAttention(Module):
    """The shared frame: projection, a per-head attention ``rule``, output projection ``to_out``.

    ``dim_head`` (p) defaults to dim // heads. ``mask`` is boolean, broadcastable to
    (B, heads, N, N), True where a token may attend. With ``keep_attention = True`` the last
    forward's attention probabilities are kept in ``attention`` (a backend array of shape
    (B, heads, N, N)); off by default. ``out_bias = False`` drops b_o (CRATE-alpha's layer).
    """

    projection: ClassVar[str]  # attribute (and state_dict key) of the input projection
    width: ClassVar[int]  # the projection makes width * heads * dim_head features
    rule: ClassVar[Rule]  # (projected, heads, scale, mask, *, dropout, training) -> (out, attn)
    cacheable: ClassVar[bool] = True  # forward takes a cache slot (generation with a kv cache)

    def __init__(
        self, dim: int, heads: int, dim_head: int | None = None, dropout: float = 0.0, out_bias: bool = True
    ) -> None:
        super().__init__()
        if dim_head is None:
            if dim % heads:
                raise ValueError(
                    f"{type(self).__name__}: dim {dim} is not divisible by {heads} heads; pass dim_head"
                )
            dim_head = dim // heads
        self.dim, self.heads, self.dim_head = dim, heads, dim_head
        self.scale = dim_head**-0.5
        self.dropout = dropout
        setattr(self, self.projection, Linear(dim, self.width * heads * dim_head, bias=False))
        # the official rule: one head as wide as the model is its own output (no to_out keys)
        project_out = not (heads == 1 and dim_head == dim)
        self.to_out = (
            Sequential(Linear(heads * dim_head, dim, bias=out_bias), Dropout(dropout))
            if project_out
            else Identity()
        )
        self.keep_attention = False
        self.attention: Any = None

    def forward(self, x: Tensor, mask: Any = None, cache: LayerCache | None = None) -> Tensor:
        """``x`` (B, N, dim) -> (B, N, dim); ``mask`` as in the class docstring.

        With a ``cache`` slot, ``x`` holds only the N new tokens: the slot keeps the past ones'
        keys and values, ``mask`` is (N, past + N), and the step runs outside the graph (eval
        mode under ``no_grad`` only: generation).
        """
        if x.ndim != 3 or x.shape[-1] != self.dim:
            raise ValueError(
                f"{type(self).__name__}: expected tokens of shape (B, N, {self.dim}), got {x.shape}"
            )
        projected = getattr(self, self.projection)(x)
        if cache is not None:
            if self.training or is_grad_enabled():
                raise RuntimeError(
                    f"{type(self).__name__}: the key/value cache is for generation; "
                    "use it in eval mode under no_grad"
                )
            q, k, v = self.remember(projected.data, cache)
            out, attn = cached_attention(q, k, v, self.heads, scale=self.scale, mask=mask)
            out = Tensor(out)
        else:
            out, attn = type(self).rule(
                projected, self.heads, self.scale, mask, dropout=self.dropout, training=self.training
            )
        self.attention = attn if self.keep_attention else None
        return self.output(out)

    def output(self, heads_out: Tensor) -> Tensor:
        """The map back to R^dim of the merged heads (..., N, heads * p): ``to_out``."""
        return self.to_out(heads_out)

    def remember(self, projected: Any, cache: LayerCache) -> tuple[Any, Any, Any]:
        """Store the new tokens' keys and values (``projected``, a backend array (B, t, width *
        heads * p)) in ``cache``; returns (q of the new tokens, k and v of all tokens)."""
        raise NotImplementedError(f"{type(self).__name__} has no key/value cache rule")

    def extra_repr(self) -> str:
        return f"dim={self.dim}, heads={self.heads}, dim_head={self.dim_head}"


class Attention(MultiHeadAttention):
    """Standard multi-head self-attention, the layer of the black-box twins (vit-pytorch's layout):

        [q | k | v] = x W_qkv^T,   A_k = softmax(q_k k_k^T / sqrt(p)),   out_k = A_k v_k

    with W_qkv = ``to_qkv.weight`` of shape (3 heads p, dim); keys ``to_qkv.weight``,
    ``to_out.0.weight``, ``to_out.0.bias``. Its cache keeps k and v.
    """

    projection = "to_qkv"
    width = 3
    rule = staticmethod(attention)

    def remember(self, projected: Any, cache: LayerCache) -> tuple[Any, Any, Any]:
        """Cache k and v: two arrays (B, T, heads * p) per layer."""
        q, k, v = backend.array_module(projected).split(projected, 3, axis=-1)
        return (q, *cache.extend(k, v))
