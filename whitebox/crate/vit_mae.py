"""The black-box twin of CRATE-MAE: a masked autoencoder with standard ViT blocks (FAIR's MAE design).

Same patch embedding, masking and loss as CRATE-MAE (``whitebox.crate.autoencoder``); unlike
CRATE-MAE, the encoder sees only the visible patches and the mask tokens join in the decoder:

    x    = patch_embed(images) + pos_embed[1:];   keep the int(L (1 - r)) visible tokens
    z    = norm(ViT blocks([cls + pos_embed[0]; visible tokens]))
    u    = decoder_embed(z);   put each visible token back in its place, mask_token elsewhere
    pred = decoder_pred(decoder_norm(ViT blocks(u + decoder_pos_embed)))[:, 1:]

Each ViT block is x = x + Attention(LN x); x = x + MLP(LN x)
(``whitebox.crate.transformer_block.TransformerBlock``).
"""

from __future__ import annotations

from typing import Any

from whitebox import ops
from whitebox.crate.autoencoder import MaskedAutoencoder
from whitebox.crate.mae import CRATEMAE
from whitebox.crate.transformer_block import TransformerBlock
from whitebox.nn import LayerNorm, Linear, ModuleList
from whitebox.tensor import Tensor


class ViTMAE(MaskedAutoencoder):
    """MAE with a ViT encoder on the visible patches and a lighter ViT decoder on all of them.

    ``decoder_dim`` defaults to ``dim``, ``decoder_depth`` to max(1, 2 depth // 3) (8 for 12, as the
    official ``mae_vit_base``), ``decoder_heads`` to ``heads``. Keys: ``cls_token``, ``mask_token``,
    ``patch_embed.proj.*``, ``blocks.{i}.{0,1}.*``, ``norm.*``, ``decoder_embed.*``,
    ``decoder_blocks.{i}.{0,1}.*``, ``decoder_norm.*``, ``decoder_pred.*`` and the fixed buffers
    ``pos_embed`` (width dim) and ``decoder_pos_embed`` (width decoder_dim).
    """

    def __init__(  # noqa: PLR0917
        self,
        image_size: int | tuple[int, int],
        patch_size: int | tuple[int, int],
        channels: int,
        dim: int,
        depth: int,
        heads: int,
        dim_head: int | None = None,
        decoder_dim: int | None = None,
        decoder_depth: int | None = None,
        decoder_heads: int | None = None,
        mask_ratio: float = 0.75,
        norm_pix_loss: bool = False,
        mlp_ratio: float = 4.0,
    ) -> None:
        decoder_dim = dim if decoder_dim is None else decoder_dim
        super().__init__(image_size, patch_size, channels, dim, decoder_dim, mask_ratio, norm_pix_loss)
        self.depth, self.heads = depth, heads
        self.decoder_depth = max(1, 2 * depth // 3) if decoder_depth is None else decoder_depth
        self.decoder_heads = heads if decoder_heads is None else decoder_heads
        self.blocks = ModuleList(
            TransformerBlock(dim, heads, dim_head, int(mlp_ratio * dim)) for _ in range(depth)
        )
        self.norm = LayerNorm(dim, eps=1e-6)
        self.decoder_embed = Linear(dim, decoder_dim)
        self.decoder_blocks = ModuleList(
            TransformerBlock(decoder_dim, self.decoder_heads, None, int(mlp_ratio * decoder_dim))
            for _ in range(self.decoder_depth)
        )
        self.decoder_norm = LayerNorm(decoder_dim, eps=1e-6)
        self.decoder_pred = Linear(decoder_dim, self.patch_size[0] * self.patch_size[1] * channels)
        self._xavier_linears()

    def _encoder(self, images: Tensor, ids_keep: Any = None) -> Tensor:
        x = self.patch_embed(images) + self.pos_embed[:, 1:]
        B = x.shape[0]
        if ids_keep is not None:
            rows = x.xp.arange(B)[:, None]
            x = x[rows, ids_keep]
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(B, 1, self.dim)
        x = ops.concat([cls, x], axis=1)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)

    def decode(self, latent: Tensor, ids_restore: Any) -> Tensor:
        """Pixels per patch (B, L, p1 p2 C) from the encoder's tokens (B, 1 + K, dim) of the K
        visible patches, put back in place by ``ids_restore`` (``random_masking``)."""
        x = self.decoder_embed(latent)
        B, L = x.shape[0], self.num_patches
        fill = self.mask_token.expand(B, L + 1 - x.shape[1], self.decoder_dim)
        tokens = ops.concat([x[:, 1:], fill], axis=1)[x.xp.arange(B)[:, None], ids_restore]
        x = ops.concat([x[:, :1], tokens], axis=1) + self.decoder_pos_embed
        for block in self.decoder_blocks:
            x = block(x)
        return self.decoder_pred(self.decoder_norm(x))[:, 1:]

    def forward(self, images: Any, noise: Any = None) -> tuple[Tensor, Tensor, Tensor]:
        """(loss, pred (B, L, p1 p2 C), mask (B, L), 1 = removed), as ``CRATEMAE.forward``."""
        images = self._images(images)
        ids_keep, ids_restore, mask = self.masking(images.shape[0], noise)
        pred = self.decode(self._encoder(images, ids_keep), ids_restore)
        return self.loss(images, pred, mask), pred, Tensor(mask.astype(pred.dtype))

    def encode(self, images: Any) -> Tensor:
        """The encoder's tokens (B, L + 1, dim) with every patch visible (token 0 is the cls token)."""
        return self._encoder(self._images(images))


_IMAGENET = {"image_size": 224, "patch_size": 16, "channels": 3}

ViTMAE.PRESETS = {
    # The official twins (mae_vit_* in model/crate_ae/crate_ae.py): decoder 8 layers of 16 heads.
    "mae_vit_base": {
        **_IMAGENET,
        "dim": 768,
        "depth": 12,
        "heads": 12,
        "decoder_depth": 8,
        "decoder_heads": 16,
    },
    "mae_vit_large": {
        **_IMAGENET,
        "dim": 1024,
        "depth": 24,
        "heads": 16,
        "decoder_depth": 8,
        "decoder_heads": 16,
    },
    # Twins of the small CRATE-MAE presets: the same patching, width, depth and heads.
    **{
        name.replace("mae_crate_", "mae_vit_"): dict(cfg)
        for name, cfg in CRATEMAE.PRESETS.items()
        if cfg["image_size"] != 224
    },
}
