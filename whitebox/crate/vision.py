"""The image classifiers: CRATE, its black-box twin ViT and CRATE's two successors, one skeleton.

All are ``PatchClassifier`` (patch embedding, cls token, positional embedding, head on the
cls token) around a ``Transformer`` stack; only the block differs:

    CRATE        x = x + MSSA(LN(x));  x = ISTA(LN(x))                  (docs/math.md §4.3)
    ViT          x = x + Attention(LN(x));  x = x + MLP(LN(x))          separate q, k, v; GELU MLP
    CRATEAlpha   x = x + MSSA(LN(x));  x = x + D1 A2(LN(x))              overcomplete two-step ISTA
    ToST         x = x + TSSA(LN(x));  x = x + MLP(LN(x))               attention linear in N

CRATE-alpha's and ToST's official code use a convolutional patch stem; here they share CRATE's
(LayerNorm, Linear, LayerNorm), so the four differ in their blocks alone.

``official_crate`` builds CRATE with the official class's signature and defaults (keyword-only,
``dim_head=64``, ``ista`` for the step size): whitebox's own ``CRATE`` defaults ``dim_head`` to
dim // heads instead, the value every official preset (CRATE_tiny ... CRATE_large) passes.
"""

from __future__ import annotations

from whitebox.crate.alpha import CRATEAlphaBlock
from whitebox.crate.block import Transformer
from whitebox.crate.classifier import PatchClassifier
from whitebox.crate.crate_block import CRATETransformer
from whitebox.crate.transformer_block import TransformerBlock, standard_transformer
from whitebox.crate.tssa import TSSA


class CRATE(PatchClassifier):
    """The CRATE classifier (docs/math.md §4.4, eq. (4.3)): ``transformer.layers.{i}`` are CRATE layers,
    each x = x + MSSA(LN(x)); x = ISTA(LN(x)). ``dim_head`` defaults to dim // heads
    (the official presets; the official class's default is 64, see ``official_crate``); ``eta``,
    ``lam`` are the ISTA step size (the official ``ista``) and sparsity weight; ``pool`` "cls" or
    "mean"; ``tied_out=True`` gives every MSSA the derivation's tied output map (``MSSA``) instead
    of the official learned ``to_out``."""

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
        pool: str = "cls",
        tied_out: bool = False,
    ) -> None:
        transformer = CRATETransformer(dim, depth, heads, dim_head, dropout, eta, lam, tied_out)
        super().__init__(image_size, patch_size, num_classes, dim, transformer, channels, emb_dropout, pool)


def official_crate(
    *,
    image_size: int | tuple[int, int],
    patch_size: int | tuple[int, int],
    num_classes: int,
    dim: int,
    depth: int,
    heads: int,
    pool: str = "cls",
    channels: int = 3,
    dim_head: int = 64,
    dropout: float = 0.0,
    emb_dropout: float = 0.0,
    ista: float = 0.1,
) -> CRATE:
    """``CRATE`` built as the official ``CRATE(...)`` call with the same arguments builds it: the
    same keywords and defaults (``dim_head=64``, whatever ``dim`` and ``heads`` are; ``ista`` is
    the ISTA step size ``eta``), so its checkpoints load with ``whitebox.interop``."""
    return CRATE(image_size, patch_size, num_classes, dim, depth, heads, dim_head, channels, dropout,
                 emb_dropout, eta=ista, pool=pool)  # fmt: skip


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
        pool: str = "cls",
    ) -> None:
        transformer = standard_transformer(dim, depth, heads, dim_head, int(mlp_ratio * dim), dropout)
        super().__init__(image_size, patch_size, num_classes, dim, transformer, channels, emb_dropout, pool)


class CRATEAlpha(PatchClassifier):
    """CRATE-alpha: ``transformer.layers.{i}`` are ``CRATEAlphaBlock`` layers (MSSA with a bias-free
    output projection, then the overcomplete dictionary D, D1 of shape (dim, overcomplete_ratio dim),
    two ISTA steps from zero and a residual)."""

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
        dropout: float = 0.0,
        emb_dropout: float = 0.0,
        overcomplete_ratio: int = 4,
        eta: float = 0.1,
        lam: float = 0.1,
    ) -> None:
        transformer = Transformer(
            CRATEAlphaBlock(dim, heads, dim_head, dropout, overcomplete_ratio, eta, lam) for _ in range(depth)
        )
        super().__init__(image_size, patch_size, num_classes, dim, transformer, channels, emb_dropout)


class ToST(PatchClassifier):
    """ToST: standard layers (``TransformerBlock``, GELU MLP of width mlp_ratio * dim, residuals
    around both halves) whose attention is the bidirectional token-statistics ``TSSA``."""

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
        mlp_dim = int(mlp_ratio * dim)
        transformer = Transformer(
            TransformerBlock(dim, heads, dim_head, mlp_dim, dropout, attn=TSSA(dim, heads, dim_head, dropout))
            for _ in range(depth)
        )
        super().__init__(image_size, patch_size, num_classes, dim, transformer, channels, emb_dropout)
