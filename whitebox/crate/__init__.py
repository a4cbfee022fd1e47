"""CRATE, the white-box transformer, and its black-box twin (a ViT of the same shape)."""

from whitebox.crate.block import CRATEBlock, CRATETransformer, PreNorm
from whitebox.crate.classifier import CRATE, PRESETS, PatchClassifier, Patchify, create
from whitebox.crate.inspect import intermediates, record
from whitebox.crate.ista import ISTA, ista
from whitebox.crate.mae import CRATEMAE
from whitebox.crate.mssa import MSSA
from whitebox.crate.vit import ViT, ViTBlock
from whitebox.crate.vit_mae import ViTMAE

__all__ = [
    "CRATE",
    "CRATEMAE",
    "ISTA",
    "MSSA",
    "PRESETS",
    "CRATEBlock",
    "CRATETransformer",
    "PatchClassifier",
    "Patchify",
    "PreNorm",
    "ViT",
    "ViTBlock",
    "ViTMAE",
    "create",
    "intermediates",
    "ista",
    "record",
]
