"""CRATE-MAE against a PyTorch transcription of the official forward (model/crate_ae/ in
Ma-Lab-Berkeley/CRATE): keys, checkpoints both ways, loss, prediction and gradients."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402

from whitebox.crate import CRATEMAE  # noqa: E402
from whitebox.crate.autoencoder import sincos_pos_embed  # noqa: E402
from whitebox.interop import load_official_checkpoint, to_torch_state_dict  # noqa: E402
from whitebox.torch_reference import Attention, FeedForward, PreNorm  # noqa: E402

CFG = {"image_size": 16, "patch_size": 4, "channels": 3, "dim": 24, "depth": 2, "heads": 3}


# ---- the official model, transcribed (einops as reshapes, timm's PatchEmbed as its Conv2d); ----
# ---- PreNorm, Attention and the encoder's FeedForward (ISTA) are the classifier's, shared  ----


def official_sincos(embed_dim: int, grid_size: int) -> np.ndarray:
    """get_2d_sincos_pos_embed(embed_dim, grid_size, cls_token=True) of the official pos_embed.py."""

    def one_d(d: int, pos: np.ndarray) -> np.ndarray:
        omega = np.arange(d // 2, dtype=np.float64) / (d / 2.0)
        out = np.einsum("m,d->md", pos.reshape(-1), 1.0 / 10000**omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    g = np.arange(grid_size, dtype=np.float64)
    grid = np.stack(np.meshgrid(g, g), axis=0).reshape(2, 1, grid_size, grid_size)
    emb = np.concatenate([one_d(embed_dim // 2, grid[0]), one_d(embed_dim // 2, grid[1])], axis=1)
    return np.concatenate([np.zeros((1, embed_dim)), emb], axis=0)


class DecoderFF(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(dim, dim))
        nn.init.kaiming_uniform_(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(x, self.weight, bias=None)


class EncoderBlock(nn.Module):
    def __init__(self, dim: int, heads: int, dim_head: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            [
                nn.ModuleList(
                    [
                        PreNorm(dim, Attention(dim, heads, dim_head)),
                        PreNorm(dim, FeedForward(dim, step_size=0.1, lambd=0.5)),
                    ]
                )
            ]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for attn, ff in self.layers:
            x = ff(attn(x) + x)
        return x


class DecoderBlock(nn.Module):
    def __init__(self, dim: int, heads: int, dim_head: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            [nn.ModuleList([PreNorm(dim, DecoderFF(dim)), PreNorm(dim, Attention(dim, heads, dim_head))])]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for ff, attn in self.layers:
            grad_x = ff(x)
            x = grad_x - attn(grad_x)
        return x


class PatchEmbed(nn.Module):
    def __init__(self, channels: int, dim: int, patch: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(channels, dim, kernel_size=patch, stride=patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class TorchCRATEMAE(nn.Module):
    """The official MaskedAutoencoderViT(CRATEEncoderBlock, CRATEDecoderBlock, ...) forward, with the
    masking noise passed in (the official draws torch.rand(N, L)) and patchify for any channel count."""

    def __init__(  # noqa: PLR0917
        self,
        image_size: int,
        patch_size: int,
        channels: int,
        dim: int,
        depth: int,
        heads: int,
        norm_pix_loss: bool,
    ) -> None:
        super().__init__()
        self.p, self.c, self.norm_pix_loss = patch_size, channels, norm_pix_loss
        grid = image_size // patch_size
        self.patch_embed = PatchEmbed(channels, dim, patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        pos = torch.from_numpy(official_sincos(dim, grid)).float()[None]
        self.pos_embed = nn.Parameter(pos.clone(), requires_grad=False)
        self.blocks = nn.ModuleList(EncoderBlock(dim, heads, dim // heads) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.decoder_embed = nn.Linear(dim, dim, bias=True)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.decoder_pos_embed = nn.Parameter(pos.clone(), requires_grad=False)
        self.decoder_blocks = nn.ModuleList(DecoderBlock(dim, heads, dim // heads) for _ in range(depth))
        self.decoder_norm = nn.LayerNorm(dim, eps=1e-6)
        self.decoder_pred = nn.Linear(dim, patch_size**2 * channels, bias=True)

    def patchify(self, imgs: torch.Tensor) -> torch.Tensor:
        p, c, h = self.p, self.c, imgs.shape[2] // self.p
        x = imgs.reshape(imgs.shape[0], c, h, p, h, p)
        return torch.einsum("nchpwq->nhwpqc", x).reshape(imgs.shape[0], h * h, p**2 * c)

    def forward(self, imgs: torch.Tensor, noise: torch.Tensor, mask_ratio: float = 0.75) -> tuple:
        x = self.patch_embed(imgs)
        N, L, D = x.shape
        len_keep = int(L * (1 - mask_ratio))
        ids_shuffle = torch.argsort(noise, dim=1)
        ids_restore = torch.argsort(ids_shuffle, dim=1)
        ids_keep = ids_shuffle[:, :len_keep]
        x = torch.gather(x, dim=1, index=ids_keep.unsqueeze(-1).repeat(1, 1, D))
        mask = torch.ones([N, L], dtype=x.dtype)
        mask[:, :len_keep] = 0
        mask = torch.gather(mask, dim=1, index=ids_restore)
        x = torch.cat((self.cls_token.expand(N, -1, -1), x), dim=1)
        mask_tokens = self.mask_token.repeat(N, ids_restore.shape[1] + 1 - x.shape[1], 1)
        x_ = torch.cat([x[:, 1:, :], mask_tokens], dim=1)
        x_ = torch.gather(x_, dim=1, index=ids_restore.unsqueeze(-1).repeat(1, 1, x.shape[2]))
        x = torch.cat([x[:, :1, :], x_], dim=1) + self.decoder_pos_embed
        for blk in self.blocks:
            x = blk(x)
        x = self.norm(x)
        for blk in self.decoder_blocks:
            x = blk(x)
        pred = self.decoder_pred(self.decoder_norm(x))[:, 1:, :]
        target = self.patchify(imgs)
        if self.norm_pix_loss:
            mean = target.mean(dim=-1, keepdim=True)
            var = target.var(dim=-1, keepdim=True)
            target = (target - mean) / (var + 1.0e-6) ** 0.5
        loss = ((pred - target) ** 2).mean(dim=-1)
        return (loss * mask).sum() / mask.sum(), pred, mask


# ---- the checks ----------------------------------------------------------------------------


def _torch_model(norm_pix_loss: bool = False, seed: int = 0) -> TorchCRATEMAE:
    torch.manual_seed(seed)
    model = TorchCRATEMAE(**CFG, norm_pix_loss=norm_pix_loss)
    with torch.no_grad():  # every weight non-trivial (tokens, LayerNorm affines, biases), as after training
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.1 * torch.randn_like(p))
    return model


def _batch(seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((3, 3, 16, 16)), rng.random((3, 16))


def test_official_keys_and_shapes() -> None:
    ours = {k: tuple(v.shape) for k, v in CRATEMAE(**CFG).state_dict().items()}
    theirs = {k: tuple(v.shape) for k, v in TorchCRATEMAE(**CFG, norm_pix_loss=False).state_dict().items()}
    assert ours == theirs
    assert {"pos_embed", "decoder_embed.weight", "blocks.1.layers.0.1.fn.weight"} <= set(ours)
    assert "decoder_blocks.0.layers.0.0.fn.weight" in ours


def test_position_embedding_is_the_official_one() -> None:
    for dim, grid in [(24, 4), (64, 7), (384, 14)]:
        np.testing.assert_allclose(
            sincos_pos_embed(dim, (grid, grid)), official_sincos(dim, grid), atol=1e-15
        )


@pytest.mark.parametrize("norm_pix_loss", [False, True])
@pytest.mark.parametrize(("dtype", "tol"), [(np.float64, 1e-10), (np.float32, 1e-4)])
def test_loss_prediction_and_gradients_match(
    tmp_path: Path, norm_pix_loss: bool, dtype: type, tol: float
) -> None:
    tm = _torch_model(norm_pix_loss)
    path = tmp_path / "crate_mae.pth"
    torch.save({"model": tm.state_dict()}, path)  # the official training script's checkpoint layout
    wm = load_official_checkpoint(path, CRATEMAE(**CFG, norm_pix_loss=norm_pix_loss).to(dtype=dtype))
    tm = tm.to(torch.float64 if dtype == np.float64 else torch.float32)
    images, noise = _batch()
    t_loss, t_pred, t_mask = tm(torch.from_numpy(images.astype(dtype)), torch.from_numpy(noise))
    t_loss.backward()
    w_loss, w_pred, w_mask = wm(images.astype(dtype), noise=noise)
    w_loss.backward()
    assert w_pred.dtype == dtype and w_loss.dtype == dtype
    np.testing.assert_array_equal(w_mask.numpy(), t_mask.numpy())
    assert abs(w_loss.item() - t_loss.item()) <= tol * abs(t_loss.item())
    t_pred = t_pred.detach().numpy()
    assert np.abs(w_pred.numpy() - t_pred).max() <= tol * np.abs(t_pred).max()
    t_grads = {k: p.grad.numpy() for k, p in tm.named_parameters() if p.grad is not None}
    w_grads = {k: p.grad for k, p in wm.named_parameters() if p.grad is not None}
    assert set(w_grads) == set(t_grads)  # every parameter but decoder_embed (unused) has a gradient
    assert set(dict(wm.named_parameters())) - set(w_grads) == {"decoder_embed.weight", "decoder_embed.bias"}
    for k, g in t_grads.items():
        err = np.abs(w_grads[k] - g).max() / np.abs(g).max()
        assert err <= tol, (k, err)


def test_whitebox_checkpoint_loads_into_the_official_model() -> None:
    wm = CRATEMAE(**CFG)
    tm = TorchCRATEMAE(**CFG, norm_pix_loss=False)
    tm.load_state_dict(to_torch_state_dict(wm), strict=True)
    images, noise = _batch(seed=5)
    with torch.no_grad():
        t_loss, t_pred, _ = tm(torch.from_numpy(images.astype(np.float32)), torch.from_numpy(noise))
    w_loss, w_pred, _ = wm(images.astype(np.float32), noise=noise)
    assert np.abs(w_pred.numpy() - t_pred.numpy()).max() <= 1e-4 * np.abs(t_pred.numpy()).max()
    assert abs(w_loss.item() - t_loss.item()) <= 1e-4 * t_loss.item()
