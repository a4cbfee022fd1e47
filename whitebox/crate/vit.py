"""The black-box twin: a standard pre-norm vision transformer of CRATE's shape.

Same skeleton as CRATE (patch embedding, cls token, positional embedding, head on the
cls token); each layer is x = x + Attention(LN(x)); x = x + MLP(LN(x)) with separate
query, key and value and a GELU MLP, the layout of vit-pytorch's ViT (with PreNorm).
"""

from __future__ import annotations

from typing import Any

from whitebox.crate.block import PreNorm
from whitebox.crate.classifier import PatchClassifier
from whitebox.nn import GELU, Dropout, Linear, Module, ModuleList, Sequential
from whitebox.ops.attention import attention
from whitebox.tensor import Tensor


class Attention(Module):
    """Multi-head self-attention: [q | k | v] = x W_qkv^T (``to_qkv``, no bias), per head
    A_k = softmax(q_k k_k^T / sqrt(p)), out = [A_1 v_1, ..., A_K v_K] W_o^T + b_o (``to_out``).

    ``keep_attention`` / ``attention`` as in MSSA: the last (B, heads, N, N) probabilities.
    """

    def __init__(self, dim: int, heads: int, dim_head: int | None = None, dropout: float = 0.0) -> None:
        super().__init__()
        if dim_head is None:
            if dim % heads:
                raise ValueError(f"Attention: dim {dim} is not divisible by {heads} heads; pass dim_head")
            dim_head = dim // heads
        self.dim, self.heads, self.dim_head = dim, heads, dim_head
        self.scale = dim_head**-0.5
        self.dropout = dropout
        self.to_qkv = Linear(dim, 3 * heads * dim_head, bias=False)
        self.to_out = Sequential(Linear(heads * dim_head, dim), Dropout(dropout))
        self.keep_attention = False
        self.attention: Any = None

    def forward(self, x: Tensor, mask: Any = None) -> Tensor:
        if x.ndim != 3 or x.shape[-1] != self.dim:
            raise ValueError(f"Attention: expected tokens of shape (B, N, {self.dim}), got {x.shape}")
        out, attn = attention(
            self.to_qkv(x), self.heads, self.scale, mask, dropout=self.dropout, training=self.training
        )
        self.attention = attn if self.keep_attention else None
        return self.to_out(out)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, heads={self.heads}, dim_head={self.dim_head}"


class FeedForward(Module):
    """The MLP: GELU(x W_1^T + b_1) W_2^T + b_2, hidden width ``hidden_dim``; ``net`` =
    Sequential(Linear, GELU, Dropout, Linear, Dropout)."""

    def __init__(self, dim: int, hidden_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.net = Sequential(
            Linear(dim, hidden_dim), GELU(), Dropout(dropout), Linear(hidden_dim, dim), Dropout(dropout)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class ViTBlock(ModuleList):
    """One ViT layer: x = x + Attention(LN(x)); x = x + MLP(LN(x)).
    Item 0 = PreNorm(Attention), item 1 = PreNorm(FeedForward)."""

    def __init__(
        self, dim: int, heads: int, dim_head: int | None, mlp_dim: int, dropout: float = 0.0
    ) -> None:
        super().__init__(
            [
                PreNorm(dim, Attention(dim, heads, dim_head, dropout)),
                PreNorm(dim, FeedForward(dim, mlp_dim, dropout)),
            ]
        )

    @property
    def attn(self) -> Attention:
        return self[0].fn

    @property
    def mlp(self) -> FeedForward:
        return self[1].fn

    def forward(self, x: Tensor, mask: Any = None) -> Tensor:
        x = x + self[0](x, mask=mask)
        return x + self[1](x)


class ViTTransformer(Module):
    """``depth`` ViT layers in ``layers``."""

    def __init__(  # noqa: PLR0917
        self, dim: int, depth: int, heads: int, dim_head: int | None, mlp_dim: int, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.layers = ModuleList(ViTBlock(dim, heads, dim_head, mlp_dim, dropout) for _ in range(depth))

    def forward(self, x: Tensor, mask: Any = None) -> Tensor:
        for block in self.layers:
            x = block(x, mask=mask)
        return x


class ViT(PatchClassifier):
    """A pre-norm ViT classifier with CRATE's skeleton and key layout (``transformer.layers.{i}.0``
    attention with ``to_qkv``/``to_out``, ``.1`` MLP ``fn.net.{0,3}``); MLP width mlp_ratio * dim."""

    def __init__(  # noqa: PLR0917
        self,
        image_size: int | tuple[int, int],
        patch_size: int | tuple[int, int],
        num_classes: int,
        dim: int,
        depth: int,
        heads: int,
        dim_head: int | None = None,
        channels: int = 3,
        mlp_ratio: float = 4,
        dropout: float = 0.0,
        emb_dropout: float = 0.0,
    ) -> None:
        transformer = ViTTransformer(dim, depth, heads, dim_head, int(mlp_ratio * dim), dropout)
        super().__init__(image_size, patch_size, num_classes, dim, transformer, channels, emb_dropout)
