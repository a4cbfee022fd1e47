"""CRATE, the white-box transformer, and its black-box twin (a ViT of the same shape)."""

from whitebox.crate.block import CRATEBlock, CRATETransformer, PreNorm
from whitebox.crate.classifier import CRATE, PRESETS, PatchClassifier, Patchify, create
from whitebox.crate.inspect import intermediates, record
from whitebox.crate.ista import ISTA, ista
from whitebox.crate.mssa import MSSA
from whitebox.crate.vit import ViT, ViTBlock

__all__ = [
    "CRATE",
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
    "create",
    "intermediates",
    "ista",
    "record",
]
