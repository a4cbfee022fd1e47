"""One preset table for every model family, and ``create(name, **overrides)``.

Each preset names its architecture (``arch``, a key of ``ARCHITECTURES``) and the constructor
arguments of that class. Image presets are complete; language presets leave out
``vocab_size``, which depends on the tokenizer and must be given:
``create("gpt_small", vocab_size=65)``.
"""

from __future__ import annotations

from typing import Any

from whitebox.crate.language import BERT, GPT, CausalCRATE, CausalCRATEAlpha, CausalToST, MaskedCRATE
from whitebox.crate.mae import CRATEMAE
from whitebox.crate.token_model import TokenModel
from whitebox.crate.vision import CRATE, CRATEAlpha, ToST, ViT
from whitebox.crate.vit_mae import ViTMAE
from whitebox.nn import Module

ARCHITECTURES: dict[str, type[Module]] = {
    "crate": CRATE,
    "vit": ViT,
    "causal_crate": CausalCRATE,
    "gpt": GPT,
    "masked_crate": MaskedCRATE,
    "bert": BERT,
    "crate_alpha": CRATEAlpha,
    "tost": ToST,
    "causal_crate_alpha": CausalCRATEAlpha,
    "causal_tost": CausalToST,
    "mae_crate": CRATEMAE,
    "mae_vit": ViTMAE,
}


def _cfg(arch: str, **kw: Any) -> dict[str, Any]:
    return {"arch": arch, **kw}


_IMAGENET = {"image_size": 224, "patch_size": 16, "num_classes": 1000, "channels": 3}
_MNIST = {"image_size": 28, "num_classes": 10, "channels": 1}
_CIFAR = {"image_size": 32, "num_classes": 10, "channels": 3}
_TINY = {"dim": 96, "depth": 4, "heads": 4}
_SMALL = {"dim": 192, "depth": 6, "heads": 6}

# Language sizes: context length, depth, and (dim, heads) of CRATE and of its twin. A CRATE
# block has 3 dim^2 + O(dim) weights (qkv, to_out, D), a GPT/BERT block 12 dim^2 + O(dim)
# (qkv, out, two MLP layers of width 4 dim), so the twin gets half the width for about the
# same count; both keep 32 (16 for tiny) features per head. CRATE-alpha (overcomplete ratio 4:
# qkv, to_out, D, D1, 10 dim^2) and ToST (TSSA's two projections and the MLP, 10 dim^2) take
# the twin's width too.
_TEXT = {
    "tiny": {"block_size": 32, "depth": 2, "crate": (60, 4), "twin": (32, 2)},
    "small": {"block_size": 64, "depth": 4, "crate": (128, 4), "twin": (64, 2)},
    "base": {"block_size": 128, "depth": 6, "crate": (256, 8), "twin": (128, 4)},
}


def _text(arch: str, size: str) -> dict[str, Any]:
    s = _TEXT[size]
    dim, heads = s["crate" if arch.endswith("crate") else "twin"]
    return _cfg(arch, block_size=s["block_size"], depth=s["depth"], dim=dim, heads=heads)


PRESETS: dict[str, dict[str, Any]] = {
    # The official ImageNet models (docs/math.md §4.5): 6.1M, 13.1M, 22.8M, 77.6M parameters.
    "crate_tiny": _cfg("crate", **_IMAGENET, dim=384, depth=12, heads=6),
    "crate_small": _cfg("crate", **_IMAGENET, dim=576, depth=12, heads=12),
    "crate_base": _cfg("crate", **_IMAGENET, dim=768, depth=12, heads=12),
    "crate_large": _cfg("crate", **_IMAGENET, dim=1024, depth=24, heads=16),
    # Small images: 28x28x1 (MNIST-like) and 32x32x3 (CIFAR-like), 10 classes.
    "crate_mnist_tiny": _cfg("crate", **_MNIST, patch_size=7, **_TINY),
    "crate_mnist_small": _cfg("crate", **_MNIST, patch_size=4, **_SMALL),
    "crate_cifar_tiny": _cfg("crate", **_CIFAR, patch_size=8, **_TINY),
    "crate_cifar_small": _cfg("crate", **_CIFAR, patch_size=4, **_SMALL),
    # Their black-box twins: same patching, width, depth and heads; GELU MLP of width 4 dim.
    "vit_mnist_tiny": _cfg("vit", **_MNIST, patch_size=7, **_TINY),
    "vit_mnist_small": _cfg("vit", **_MNIST, patch_size=4, **_SMALL),
    "vit_cifar_tiny": _cfg("vit", **_CIFAR, patch_size=8, **_TINY),
    "vit_cifar_small": _cfg("vit", **_CIFAR, patch_size=4, **_SMALL),
    # CRATE's successors on small images: CRATE's patching, width, depth and heads.
    **{
        f"{arch}_{data}_{size}": _cfg(arch, **shape, patch_size=patch, **sizes)
        for arch in ("crate_alpha", "tost")
        for data, shape, patches in (("mnist", _MNIST, (7, 4)), ("cifar", _CIFAR, (8, 4)))
        for size, sizes, patch in (("tiny", _TINY, patches[0]), ("small", _SMALL, patches[1]))
    },
    # Language models ("<arch>_<size>"), all sizes of _TEXT for each of the six.
    **{
        f"{arch}_{size}": _text(arch, size)
        for arch in ("causal_crate", "gpt", "masked_crate", "bert", "causal_crate_alpha", "causal_tost")
        for size in _TEXT
    },
    # Masked autoencoders (defined beside their classes): the official CRATE-MAE sizes, the
    # official MAE twins, and small ones for 28x28 and 32x32 images with their twins.
    **{name: _cfg("mae_crate", **cfg) for name, cfg in CRATEMAE.PRESETS.items()},
    **{name: _cfg("mae_vit", **cfg) for name, cfg in ViTMAE.PRESETS.items()},
}


def create(name: str, **overrides: Any) -> Module:
    """A new model from preset ``name`` (a key of PRESETS), any argument overridden by keyword,
    e.g. ``create("crate_cifar_small", num_classes=100)`` or ``create("gpt_tiny", vocab_size=65)``."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    cfg = {**PRESETS[name], **overrides}
    arch = cfg.pop("arch")
    if arch not in ARCHITECTURES:
        raise ValueError(f"create: unknown arch {arch!r}; choose one of {', '.join(ARCHITECTURES)}")
    cls = ARCHITECTURES[arch]
    if issubclass(cls, TokenModel) and "vocab_size" not in cfg:
        raise ValueError(f"create: the language preset {name!r} needs vocab_size=..., the tokenizer's size")
    return cls(**cfg)
