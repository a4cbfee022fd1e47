"""CRATE-MAE: a masked autoencoder whose encoder and decoder come from one operator family.

Pai et al., "Masked Completion via Structured Diffusion with White-Box Transformers" (ICLR 2024);
the objective is in ``whitebox.crate.autoencoder``. The encoder is CRATE: each layer compresses the
tokens against K subspaces (MSSA) and then sparsifies them (one ISTA step),

    z' = z + MSSA(LN z),          z'' = ReLU(LN(z') + eta (LN(z') D - LN(z') D^T D) - eta lam).

Each decoder layer undoes one encoder layer, with operators of the same family, in reverse order:

    y  = LN(x) W^T                 a dictionary step with no ReLU: synthesis of a sparse code,
    x' = y - MSSA(LN y)            subtracting the compression step (which z' = z + MSSA(LN z) added).

For x' = y - f(y) against z' = z + f(z) with the same f, x' - z = f(z) - f(z + f(z)) = O(|f|^2):
the decoder's compression step is the encoder's inverse to first order. The dictionary step is not
an inverse of ISTA in that sense (ISTA's ReLU maps many inputs to one output); trained, it undoes
the sparsification on the data distribution only (docs/math.md §6.1; tutorial 09, §2).
"""

from __future__ import annotations

import math
from typing import Any

from whitebox import backend, ops
from whitebox import functional as F
from whitebox.crate.autoencoder import MaskedAutoencoder
from whitebox.crate.block import PreNorm
from whitebox.crate.crate_block import CRATEBlock
from whitebox.crate.mssa import MSSA
from whitebox.nn import LayerNorm, Linear, Module, ModuleList, Parameter, init
from whitebox.tensor import Tensor


class Dictionary(Module):
    """The decoder's sparsification inverse: a dictionary step y = x W^T, no bias and no ReLU,
    ``weight`` (dim, dim) kaiming-uniform U(-sqrt(6/dim), sqrt(6/dim)) like ISTA's dictionary."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.weight = Parameter(init.uniform((dim, dim), math.sqrt(6 / dim)), dtype=backend.DEFAULT_DTYPE)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


class CRATEDecoderBlock(ModuleList):
    """One CRATE-MAE decoder layer: y = LN(x) W^T; x' = y - MSSA(LN y). Item 0 = PreNorm(Dictionary),
    item 1 = PreNorm(MSSA): keys ``0.norm.*``, ``0.fn.weight``, ``1.norm.*``, ``1.fn.qkv.weight``,
    ``1.fn.to_out.0.*``."""

    def __init__(self, dim: int, heads: int, dim_head: int | None = None) -> None:
        super().__init__([PreNorm(dim, Dictionary(dim)), PreNorm(dim, MSSA(dim, heads, dim_head))])

    def forward(self, x: Tensor) -> Tensor:
        y = self[0](x)
        return y - self[1](y)


class OfficialLayer(Module):
    """A block held as ``layers.0`` (the official ``Block_CRATE`` wrapping), so keys read
    ``layers.0.0.*`` and ``layers.0.1.*``."""

    def __init__(self, block: Module) -> None:
        super().__init__()
        self.layers = ModuleList([block])

    def forward(self, x: Tensor) -> Tensor:
        return self.layers[0](x)


class CRATEMAE(MaskedAutoencoder):
    """CRATE-MAE, the official ``MaskedAutoencoderViT`` with CRATE encoder and decoder blocks.

    forward: tokens = patch_embed(images) (B, L, dim); masked patches' tokens replaced by
    ``mask_token`` (before the encoder, which sees all L + 1 tokens); [cls; tokens] +
    ``decoder_pos_embed``; ``blocks`` (CRATE layers, x = x + MSSA(LN x); x = ISTA(LN x) with
    ``eta``, ``lam``); ``norm`` (eps 1e-6); ``decoder_blocks`` (``CRATEDecoderBlock``);
    ``decoder_norm`` (eps 1e-6); ``decoder_pred`` to p1 p2 C pixels per patch; cls dropped.

    Keys are the official ones: ``cls_token``, ``pos_embed``, ``mask_token``, ``decoder_pos_embed``,
    ``patch_embed.proj.*``, ``blocks.{i}.layers.0.{0,1}.*``, ``norm.*``, ``decoder_embed.*``,
    ``decoder_blocks.{i}.layers.0.{0,1}.*``, ``decoder_norm.*``, ``decoder_pred.*``. The official
    forward never uses ``pos_embed`` nor ``decoder_embed`` (a Linear(dim, dim)); they are kept only
    so official checkpoints load and save. Encoder and decoder have the same width (the mask
    token is added before the encoder) and the same heads and ``dim_head``. MSSA always has its
    output projection (the official code drops it when heads == 1 and dim_head == dim).
    """

    def __init__(  # noqa: PLR0917 (the issue's signature)
        self,
        image_size: int | tuple[int, int],
        patch_size: int | tuple[int, int],
        channels: int,
        dim: int,
        depth: int,
        heads: int,
        dim_head: int | None = None,
        decoder_depth: int | None = None,
        mask_ratio: float = 0.75,
        norm_pix_loss: bool = False,
        eta: float = 0.1,
        lam: float = 0.5,
    ) -> None:
        super().__init__(image_size, patch_size, channels, dim, dim, mask_ratio, norm_pix_loss)
        decoder_depth = depth if decoder_depth is None else decoder_depth
        self.depth, self.decoder_depth, self.heads, self.eta, self.lam = depth, decoder_depth, heads, eta, lam
        self.blocks = ModuleList(
            OfficialLayer(CRATEBlock(dim, heads, dim_head, 0.0, eta, lam)) for _ in range(depth)
        )
        self.norm = LayerNorm(dim, eps=1e-6)
        self.decoder_embed = Linear(dim, dim)
        self.decoder_blocks = ModuleList(
            OfficialLayer(CRATEDecoderBlock(dim, heads, dim_head)) for _ in range(decoder_depth)
        )
        self.decoder_norm = LayerNorm(dim, eps=1e-6)
        self.decoder_pred = Linear(dim, self.patch_size[0] * self.patch_size[1] * channels)
        self._xavier_linears()

    def _encoder(self, images: Tensor, mask: Any = None) -> Tensor:
        x = self.patch_embed(images)
        if mask is not None:
            x = ops.where(mask[..., None], self.mask_token, x)
        cls = self.cls_token.expand(x.shape[0], 1, self.dim)
        x = ops.concat([cls, x], axis=1) + self.decoder_pos_embed
        for block in self.blocks:
            x = block(x)
        return self.norm(x)

    def decode(self, latent: Tensor) -> Tensor:
        """Pixels per patch (B, L, p1 p2 C) from the encoder's tokens (B, L + 1, dim)."""
        x = latent
        for block in self.decoder_blocks:
            x = block(x)
        return self.decoder_pred(self.decoder_norm(x))[:, 1:]

    def forward(self, images: Any, noise: Any = None) -> tuple[Tensor, Tensor, Tensor]:
        """(loss, pred (B, L, p1 p2 C), mask (B, L), 1 = removed) for images (B, C, H, W);
        ``noise`` (B, L) fixes the masking (``random_masking``), else it is drawn."""
        images = self._images(images)
        _, _, mask = self.masking(images.shape[0], noise)
        pred = self.decode(self._encoder(images, mask))
        mask_t = Tensor(mask.astype(pred.dtype))
        return self.loss(images, pred, mask), pred, mask_t

    def encode(self, images: Any) -> Tensor:
        """The encoder's tokens (B, L + 1, dim) for unmasked images (token 0 is the cls token)."""
        return self._encoder(self._images(images))


_IMAGENET = {"image_size": 224, "patch_size": 16, "channels": 3}
_MNIST = {"image_size": 28, "patch_size": 4, "channels": 1}
_CIFAR = {"image_size": 32, "patch_size": 4, "channels": 3}
_TINY = {"dim": 96, "depth": 4, "heads": 4}
_SMALL = {"dim": 192, "depth": 6, "heads": 6}

CRATEMAE.PRESETS = {
    # The official sizes (mae_crate_* in model/crate_ae/crate_ae.py): decoder as deep as the encoder.
    "mae_crate_tiny": {**_IMAGENET, "dim": 384, "depth": 12, "heads": 6},
    "mae_crate_small": {**_IMAGENET, "dim": 576, "depth": 12, "heads": 12},
    "mae_crate_base": {**_IMAGENET, "dim": 768, "depth": 12, "heads": 12},
    "mae_crate_large": {**_IMAGENET, "dim": 1024, "depth": 24, "heads": 16},
    # Small images: 28x28x1 (49 patches) and 32x32x3 (64 patches).
    "mae_crate_mnist_tiny": {**_MNIST, **_TINY},
    "mae_crate_mnist_small": {**_MNIST, **_SMALL},
    "mae_crate_cifar_tiny": {**_CIFAR, **_TINY},
    "mae_crate_cifar_small": {**_CIFAR, **_SMALL},
}
