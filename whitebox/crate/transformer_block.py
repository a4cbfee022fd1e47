"""The standard pre-norm transformer layer, the block of the black-box twins (ViT, GPT, BERT).

    x = x + Attention(LN1(x))        separate query, key and value (whitebox.crate.attention)
    x = x + MLP(LN2(x))              MLP(x) = GELU(x W_1^T + b_1) W_2^T + b_2

the layout of vit-pytorch's ViT with PreNorm, so the keys match CRATE's but for the attention
projection (``to_qkv``) and the MLP (``1.fn.net.{0,3}.*``).
"""

from __future__ import annotations

from whitebox.crate.attention import Attention
from whitebox.crate.block import PreNormBlock, Transformer
from whitebox.nn import GELU, Dropout, Linear, Module, Sequential
from whitebox.tensor import Tensor


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


class TransformerBlock(PreNormBlock):
    """One standard layer: item 0 = PreNorm(attention), item 1 = PreNorm(FeedForward), residuals
    around both. The attention is ``attn`` if given (ToST passes its token-statistics attention,
    ``whitebox.crate.tssa``), else the standard ``Attention(dim, heads, dim_head, dropout)``."""

    residual_second = True

    def __init__(  # noqa: PLR0917
        self,
        dim: int,
        heads: int,
        dim_head: int | None,
        mlp_dim: int,
        dropout: float = 0.0,
        attn: Module | None = None,
    ) -> None:
        attn = Attention(dim, heads, dim_head, dropout) if attn is None else attn
        super().__init__(dim, attn, FeedForward(dim, mlp_dim, dropout))

    @property
    def mlp(self) -> FeedForward:
        """The MLP half's layer (``self[1].fn``)."""
        return self[1].fn


def standard_transformer(  # noqa: PLR0917
    dim: int, depth: int, heads: int, dim_head: int | None, mlp_dim: int, dropout: float = 0.0
) -> Transformer:
    """``depth`` standard layers in ``layers``, the stack of the black-box twins."""
    return Transformer(TransformerBlock(dim, heads, dim_head, mlp_dim, dropout) for _ in range(depth))
