"""CRATE, the white-box transformer, and its black-box twins, for images and for language.

Read bottom-up: ``ista``, ``attention`` and ``mssa`` (the layers); ``block`` (PreNorm, the
two-half block, the stack); ``crate_block`` and ``transformer_block`` (CRATE's layer and the
standard one); ``classifier`` and ``token_model`` (the image and language skeletons);
``alpha`` and ``tssa`` (CRATE-alpha's sparse coding and block, ToST's attention);
``vision`` and ``language`` (the ten models); ``presets`` (one table, ``create``); ``probe``
(forward hooks that record each layer's intermediates).
"""

from whitebox.crate.alpha import CRATEAlphaBlock, OvercompleteISTA
from whitebox.crate.attention import Attention
from whitebox.crate.block import PreNorm, Transformer
from whitebox.crate.classifier import PatchClassifier, Patchify
from whitebox.crate.crate_block import CRATEBlock, CRATETransformer
from whitebox.crate.ista import ISTA, ista
from whitebox.crate.language import BERT, GPT, CausalCRATE, CausalCRATEAlpha, CausalToST, MaskedCRATE
from whitebox.crate.mae import CRATEMAE
from whitebox.crate.mssa import MSSA
from whitebox.crate.presets import ARCHITECTURES, PRESETS, create
from whitebox.crate.probe import intermediates, record
from whitebox.crate.token_model import TokenModel, causal_mask, fill_mask
from whitebox.crate.transformer_block import FeedForward, TransformerBlock
from whitebox.crate.tssa import TSSA, CausalTSSA
from whitebox.crate.vision import CRATE, CRATEAlpha, ToST, ViT, official_crate
from whitebox.crate.vit_mae import ViTMAE

__all__ = [
    "ARCHITECTURES",
    "BERT",
    "CRATE",
    "CRATEMAE",
    "GPT",
    "ISTA",
    "MSSA",
    "PRESETS",
    "TSSA",
    "Attention",
    "CRATEAlpha",
    "CRATEAlphaBlock",
    "CRATEBlock",
    "CRATETransformer",
    "CausalCRATE",
    "CausalCRATEAlpha",
    "CausalTSSA",
    "CausalToST",
    "FeedForward",
    "MaskedCRATE",
    "OvercompleteISTA",
    "PatchClassifier",
    "Patchify",
    "PreNorm",
    "ToST",
    "TokenModel",
    "Transformer",
    "TransformerBlock",
    "ViT",
    "ViTMAE",
    "causal_mask",
    "create",
    "fill_mask",
    "intermediates",
    "ista",
    "official_crate",
    "record",
]
