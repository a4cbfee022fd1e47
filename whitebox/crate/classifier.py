"""The image classifier's skeleton, shared by CRATE and ViT (official ``CRATE`` in Ma-Lab-Berkeley/CRATE).

images (B, C, H, W) -> patches (B, n, p1 p2 C) -> LayerNorm -> Linear -> LayerNorm (B, n, dim)
-> [cls; tokens] + pos_embedding[:, :n + 1] -> a stack of layers -> LayerNorm -> Linear on the cls
token (pool "cls") or on the mean of all tokens (pool "mean"). Images smaller than the configured
size (each side a multiple of the patch size) use the first n + 1 positions, as the official code.
Parameter names and layouts are those of the official checkpoints (docs/math.md §4.5); the
stack is a parameter (``whitebox.crate.vision`` builds CRATE's and ViT's).
"""

from __future__ import annotations

from typing import Any

from whitebox import backend, ops
from whitebox.nn import Dropout, LayerNorm, Linear, Module, Parameter, Sequential, init
from whitebox.tensor import Tensor


def _pair(x: int | tuple[int, int]) -> tuple[int, int]:
    return (x, x) if isinstance(x, int) else (int(x[0]), int(x[1]))


class Patchify(Module):
    """Cut images into non-overlapping patches, one row each, in the official einops order:
    'b c (h p1) (w p2) -> b (h w) (p1 p2 c)'. No parameters (the ``Rearrange`` at index 0 of
    ``to_patch_embedding``). Checks the input is (B, channels, H', W') with H' <= H, W' <= W of the
    configured size and multiples of the patch size."""

    def __init__(self, image_size: tuple[int, int], patch_size: tuple[int, int], channels: int) -> None:
        super().__init__()
        self.image_size, self.patch_size, self.channels = image_size, patch_size, channels

    def forward(self, img: Tensor) -> Tensor:
        (H0, W0), (p1, p2), C = self.image_size, self.patch_size, self.channels
        if img.ndim != 4 or img.shape[1] != C or not (img.shape[2] <= H0 and img.shape[3] <= W0):
            raise ValueError(
                f"expected images of shape (B, C, H, W) = (B, {C}, {H0}, {W0}) (or smaller, at most "
                f"{H0}x{W0}), got {img.shape}"
            )
        B, _, H, W = img.shape
        if H % p1 or W % p2:
            raise ValueError(f"image size {H}x{W} is not divisible by the patch size {p1}x{p2}")
        x = img.reshape(B, C, H // p1, p1, W // p2, p2).transpose(0, 2, 4, 3, 5, 1)
        return x.reshape(B, (H // p1) * (W // p2), p1 * p2 * C)

    def extra_repr(self) -> str:
        return (
            "'b c (h p1) (w p2) -> b (h w) (p1 p2 c)', " + f"p1={self.patch_size[0]}, p2={self.patch_size[1]}"
        )


class PatchClassifier(Module):
    """The skeleton CRATE and ViT share: patch embedding, cls token, positional embedding,
    ``transformer`` (built by the subclass, a module mapping (B, N, dim) to (B, N, dim)),
    ``mlp_head`` on the cls token (``pool="cls"``) or the mean of all tokens (``pool="mean"``).

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
        pool: str = "cls",
    ) -> None:
        super().__init__()
        if pool not in ("cls", "mean"):
            raise ValueError(f"{type(self).__name__}: pool must be 'cls' or 'mean', got {pool!r}")
        self.pool = pool
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
        B, n = x.shape[0], x.shape[1]
        pos = self.pos_embedding if n == self.num_patches else self.pos_embedding[:, : n + 1]
        x = ops.concat([self.cls_token.expand(B, 1, self.dim), x], axis=1) + pos
        return self.transformer(self.dropout(x))

    def forward(self, img: Any) -> Tensor:
        """Logits (B, num_classes) for images (B, C, H, W)."""
        tokens = self.forward_features(img)
        return self.mlp_head(tokens.mean(axis=1) if self.pool == "mean" else tokens[:, 0])
