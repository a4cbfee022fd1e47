"""The CRATE image classifier (official ``CRATE`` in Ma-Lab-Berkeley/CRATE) and the model presets.

images (B, C, H, W) -> patches (B, n, p1 p2 C) -> LayerNorm -> Linear -> LayerNorm (B, n, dim)
-> [cls; tokens] + pos_embedding -> depth x CRATE layer -> LayerNorm -> Linear on the cls token.
Parameter names and layouts are those of the official checkpoints (CRATE.md sec. 4).
"""

from __future__ import annotations

from typing import Any

from whitebox import backend, ops
from whitebox.crate.block import CRATETransformer
from whitebox.nn import Dropout, LayerNorm, Linear, Module, Parameter, Sequential, init
from whitebox.tensor import Tensor


def _pair(x: int | tuple[int, int]) -> tuple[int, int]:
    return (x, x) if isinstance(x, int) else (int(x[0]), int(x[1]))


class Patchify(Module):
    """Cut images into non-overlapping patches, one row each, in the official einops order:
    'b c (h p1) (w p2) -> b (h w) (p1 p2 c)'. No parameters (the ``Rearrange`` at index 0 of
    ``to_patch_embedding``). Checks the input is (B, channels, H, W) of the configured size."""

    def __init__(self, image_size: tuple[int, int], patch_size: tuple[int, int], channels: int) -> None:
        super().__init__()
        self.image_size, self.patch_size, self.channels = image_size, patch_size, channels

    def forward(self, img: Tensor) -> Tensor:
        (H, W), (p1, p2), C = self.image_size, self.patch_size, self.channels
        if img.ndim != 4 or tuple(img.shape[1:]) != (C, H, W):
            raise ValueError(f"expected images of shape (B, C, H, W) = (B, {C}, {H}, {W}), got {img.shape}")
        B = img.shape[0]
        x = img.reshape(B, C, H // p1, p1, W // p2, p2).transpose(0, 2, 4, 3, 5, 1)
        return x.reshape(B, (H // p1) * (W // p2), p1 * p2 * C)

    def extra_repr(self) -> str:
        return (
            "'b c (h p1) (w p2) -> b (h w) (p1 p2 c)', " + f"p1={self.patch_size[0]}, p2={self.patch_size[1]}"
        )


class PatchClassifier(Module):
    """The skeleton CRATE and ViT share: patch embedding, cls token, positional embedding,
    ``transformer`` (built by the subclass, a module mapping (B, N, dim) to (B, N, dim)),
    ``mlp_head`` on the cls token.

    Keys: ``to_patch_embedding.{1,2,3}.*``, ``cls_token`` (1, 1, dim), ``pos_embedding``
    (1, num_patches + 1, dim), ``mlp_head.{0,1}.*``. Both embeddings start N(0, 1)
    (``torch.randn`` in the official code).
    """

    def __init__(  # noqa: PLR0917
        self,
        image_size: int | tuple[int, int],
        patch_size: int | tuple[int, int],
        num_classes: int,
        dim: int,
        transformer: Module,
        channels: int = 3,
        emb_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        (H, W), (p1, p2) = _pair(image_size), _pair(patch_size)
        if H % p1 or W % p2:
            raise ValueError(
                f"{type(self).__name__}: image size {H}x{W} is not divisible by the patch size {p1}x{p2}"
            )
        self.image_size, self.patch_size, self.channels = (H, W), (p1, p2), channels
        self.num_patches = (H // p1) * (W // p2)
        self.dim, self.num_classes = dim, num_classes
        patch_dim = channels * p1 * p2
        self.to_patch_embedding = Sequential(
            Patchify((H, W), (p1, p2), channels), LayerNorm(patch_dim), Linear(patch_dim, dim), LayerNorm(dim)
        )
        self.pos_embedding = Parameter(
            init.normal((1, self.num_patches + 1, dim)), dtype=backend.DEFAULT_DTYPE
        )
        self.cls_token = Parameter(init.normal((1, 1, dim)), dtype=backend.DEFAULT_DTYPE)
        self.dropout = Dropout(emb_dropout)
        self.transformer = transformer
        self.mlp_head = Sequential(LayerNorm(dim), Linear(dim, num_classes))

    def forward_features(self, img: Any) -> Tensor:
        """Tokens after the last layer, (B, num_patches + 1, dim); token 0 is the cls token."""
        if not isinstance(img, Tensor):
            img = Tensor(img, dtype=self.cls_token.dtype, device=self.cls_token.device)
        x = self.to_patch_embedding(img)
        B = x.shape[0]
        x = ops.concat([self.cls_token.expand(B, 1, self.dim), x], axis=1) + self.pos_embedding
        return self.transformer(self.dropout(x))

    def forward(self, img: Any) -> Tensor:
        """Logits (B, num_classes) for images (B, C, H, W)."""
        return self.mlp_head(self.forward_features(img)[:, 0])


class CRATE(PatchClassifier):
    """The CRATE classifier (CRATE.md sec. 4): ``transformer.layers.{i}`` are CRATE layers,
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


def _cfg(arch: str, **kw: Any) -> dict[str, Any]:
    return {"arch": arch, **kw}


_IMAGENET = {"image_size": 224, "patch_size": 16, "num_classes": 1000, "channels": 3}
_MNIST = {"image_size": 28, "num_classes": 10, "channels": 1}
_CIFAR = {"image_size": 32, "num_classes": 10, "channels": 3}
_TINY = {"dim": 96, "depth": 4, "heads": 4}
_SMALL = {"dim": 192, "depth": 6, "heads": 6}

PRESETS: dict[str, dict[str, Any]] = {
    # The official ImageNet models (CRATE.md sec. 4): 6.1M, 13.1M, 22.8M, 77.6M parameters.
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
}


def create(name: str, **overrides: Any) -> PatchClassifier:
    """A new model from preset ``name`` (a key of PRESETS), any argument overridden by keyword,
    e.g. ``create("crate_cifar_small", num_classes=100)``."""
    from whitebox.crate.vit import ViT  # vit.py imports this module

    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    cfg = {**PRESETS[name], **overrides}
    cls = {"crate": CRATE, "vit": ViT}[cfg.pop("arch")]
    return cls(**cfg)
