"""The four language models: CRATE or standard blocks, times the causal or bidirectional mask.

                    causal (next token)      bidirectional (masked tokens)
    CRATE blocks    CausalCRATE (CRATE-GPT)  MaskedCRATE
    standard blocks GPT                      BERT

All four are ``whitebox.crate.token_model.TokenModel``; a family fixes the blocks and its
constructor, a model of the family fixes the mask rule (the class attribute ``causal``).
CRATE blocks: x + MSSA(LN x), then ISTA(LN .), tied q = k = v, no MLP. Standard blocks:
separate q, k, v, a GELU MLP of width mlp_ratio * dim, residuals around both. A CRATE block
has about 3 dim^2 weights and a standard one 12 dim^2, so a twin of width dim / 2 has about
the parameters of a CRATE of width dim (the text presets of ``whitebox.crate.presets``).

CRATE's successors as causal language models, each a TokenModel with its own blocks:
``CausalCRATEAlpha`` (MSSA, then CRATE-alpha's overcomplete two-step ISTA with a residual,
about (2 + 2 r) dim^2 weights a block, r the overcomplete ratio) and ``CausalToST`` (causal
token-statistics attention and a GELU MLP, about 10 dim^2).
"""

from __future__ import annotations

from whitebox.crate.alpha import CRATEAlphaBlock
from whitebox.crate.block import Transformer
from whitebox.crate.crate_block import CRATETransformer
from whitebox.crate.token_model import TokenModel
from whitebox.crate.transformer_block import TransformerBlock, standard_transformer
from whitebox.crate.tssa import CausalTSSA


class CRATELanguageModel(TokenModel):
    """``depth`` CRATE blocks (docs/math.md §4.3) in a TokenModel whose mask rule is the
    subclass's ``causal``: build CausalCRATE or MaskedCRATE, not this class."""

    causal: bool  # set by each model of the family: the mask rule

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
        super().__init__(vocab_size, block_size, dim, blocks, dropout, causal=type(self).causal)


class TransformerLanguageModel(TokenModel):
    """``depth`` standard pre-norm blocks in a TokenModel whose mask rule is the subclass's
    ``causal``: build GPT or BERT, not this class."""

    causal: bool  # set by each model of the family: the mask rule

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
        blocks = standard_transformer(dim, depth, heads, dim_head, int(mlp_ratio * dim), dropout)
        super().__init__(vocab_size, block_size, dim, blocks, dropout, causal=type(self).causal)


class CausalCRATE(CRATELanguageModel):
    """CRATE-GPT: causal CRATE blocks (docs/math.md §4.6); next-token logits."""

    causal = True


class MaskedCRATE(CRATELanguageModel):
    """Bidirectional CRATE blocks: logits (B, T, V) for every position of a corrupted window."""

    causal = False


class GPT(TransformerLanguageModel):
    """The black-box twin of CausalCRATE: causal standard blocks."""

    causal = True


class BERT(TransformerLanguageModel):
    """The black-box twin of MaskedCRATE: bidirectional standard blocks."""

    causal = False


class CausalCRATEAlpha(TokenModel):
    """CRATE-alpha as a causal language model: ``depth`` ``CRATEAlphaBlock`` layers, causal mask."""

    def __init__(  # noqa: PLR0917
        self,
        vocab_size: int,
        block_size: int,
        dim: int,
        depth: int,
        heads: int,
        dim_head: int | None = None,
        dropout: float = 0.0,
        overcomplete_ratio: int = 4,
        eta: float = 0.1,
        lam: float = 0.1,
    ) -> None:
        blocks = Transformer(
            CRATEAlphaBlock(dim, heads, dim_head, dropout, overcomplete_ratio, eta, lam) for _ in range(depth)
        )
        super().__init__(vocab_size, block_size, dim, blocks, dropout, causal=True)


class CausalToST(TokenModel):
    """ToST as a causal language model: standard blocks whose attention is ``CausalTSSA`` (prefix
    statistics, a learned position bias per head), GELU MLP of width mlp_ratio * dim.
    ``CausalTSSA`` splits dim evenly over the heads: ``dim_head`` may only be None or dim // heads."""

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
        if dim_head is not None and dim_head * heads != dim:
            raise ValueError(
                f"CausalToST: dim_head must be None or dim // heads = {dim // heads}, got {dim_head}"
            )
        mlp_dim = int(mlp_ratio * dim)
        blocks = Transformer(
            TransformerBlock(
                dim, heads, dim_head, mlp_dim, dropout, attn=CausalTSSA(dim, heads, block_size, dropout)
            )
            for _ in range(depth)
        )
        super().__init__(vocab_size, block_size, dim, blocks, dropout, causal=True)
