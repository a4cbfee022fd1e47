"""The two image classifiers: CRATE and its black-box twin ViT, one skeleton with two stacks.

Both are ``PatchClassifier`` (patch embedding, cls token, positional embedding, head on the
cls token). CRATE's layers are x = x + MSSA(LN(x)); x = ISTA(LN(x)) (docs/math.md §4.3), ViT's
x = x + Attention(LN(x)); x = x + MLP(LN(x)) with separate query, key and value and a GELU MLP.
"""

from __future__ import annotations

from whitebox.crate.classifier import PatchClassifier
from whitebox.crate.crate_block import CRATETransformer
from whitebox.crate.transformer_block import standard_transformer


class CRATE(PatchClassifier):
    """The CRATE classifier (docs/math.md §4.4, eq. (4.3)): ``transformer.layers.{i}`` are CRATE layers,
    each x = x + MSSA(LN(x)); x = ISTA(LN(x)). ``dim_head`` defaults to dim // heads
    (the official presets); ``eta``, ``lam`` are the ISTA step size and sparsity weight."""

    def __init__(  # noqa: PLR0917 (the official signature)
        self,
        image_size: int | tuple[int, int],
        patch_size: int | tuple[int, int],
        num_classes: int,
        dim: int,
        depth: int,
        heads: int,
        dim_head: int | None = None,
        channels: int = 3,
        dropout: float = 0.0,
        emb_dropout: float = 0.0,
        eta: float = 0.1,
        lam: float = 0.1,
    ) -> None:
        transformer = CRATETransformer(dim, depth, heads, dim_head, dropout, eta, lam)
        super().__init__(image_size, patch_size, num_classes, dim, transformer, channels, emb_dropout)


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
        transformer = standard_transformer(dim, depth, heads, dim_head, int(mlp_ratio * dim), dropout)
        super().__init__(image_size, patch_size, num_classes, dim, transformer, channels, emb_dropout)
