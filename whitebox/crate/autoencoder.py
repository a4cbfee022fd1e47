"""Masked autoencoding of images: patches, masking, the loss, and the skeleton every MAE here shares.

The objective (He et al., "Masked Autoencoders Are Scalable Vision Learners"): cut an image
into L patches, hide a random fraction r of them, and predict the hidden patches' pixels:

    keep_b = the int(L (1 - r)) patches with the smallest noise_b,   mask_{b,i} = [i not in keep_b],
    loss   = sum_{b,i} mask_{b,i} mean_j (pred_{b,i,j} - target_{b,i,j})^2 / sum_{b,i} mask_{b,i},

target = the patchified image, or each patch standardized to mean 0, variance 1 (``norm_pix_loss``).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from whitebox import backend
from whitebox import functional as F
from whitebox.nn import Linear, Module, Parameter, init
from whitebox.tensor import Tensor, no_grad

NORM_PIX_EPS = 1e-6


def _pair(x: int | tuple[int, int]) -> tuple[int, int]:
    return (x, x) if isinstance(x, int) else (int(x[0]), int(x[1]))


def sincos_pos_embed(dim: int, grid: tuple[int, int]) -> np.ndarray:
    """The fixed 2-D sine-cosine position embedding, (1 + h w, dim) float64; row 0 (the cls token) is 0.

    Patch t = i w + j (row i, column j) gets [e(j), e(i)], with the 1-D code of width d = dim / 2

        e(pos) = [sin(pos omega_k) for k < d/2, cos(pos omega_k) for k < d/2],   omega_k = 10000^(-2k/d).
    """
    if dim % 4:
        raise ValueError(f"sincos_pos_embed: dim must be a multiple of 4, got {dim}")
    h, w = grid
    omega = 1.0 / 10000 ** (np.arange(dim // 4) / (dim // 4))

    def code(pos: np.ndarray) -> np.ndarray:
        angle = np.outer(pos, omega)
        return np.concatenate([np.sin(angle), np.cos(angle)], axis=1)

    rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    emb = np.concatenate([code(cols.reshape(-1)), code(rows.reshape(-1))], axis=1)
    return np.concatenate([np.zeros((1, dim)), emb], axis=0)


def patchify(images: Any, patch_size: int | tuple[int, int]) -> Any:
    """(B, C, H, W) -> (B, L, p1 p2 C), patches in row-major order, each flattened as (p1, p2, C).

    Works on Tensors (differentiable) and on backend arrays alike."""
    (p1, p2), (B, C, H, W) = _pair(patch_size), images.shape
    if H % p1 or W % p2:
        raise ValueError(f"patchify: image size {H}x{W} is not a multiple of the patch size {p1}x{p2}")
    x = images.reshape(B, C, H // p1, p1, W // p2, p2).transpose(0, 2, 4, 3, 5, 1)
    return x.reshape(B, (H // p1) * (W // p2), p1 * p2 * C)


def unpatchify(patches: Any, patch_size: int | tuple[int, int], image_size: int | tuple[int, int]) -> Any:
    """The inverse of ``patchify``: (B, L, p1 p2 C) -> (B, C, H, W)."""
    (p1, p2), (H, W) = _pair(patch_size), _pair(image_size)
    B, L, P = patches.shape
    if L != (H // p1) * (W // p2) or P % (p1 * p2):
        raise ValueError(f"unpatchify: {patches.shape} are not {p1}x{p2} patches of a {H}x{W} image")
    C = P // (p1 * p2)
    x = patches.reshape(B, H // p1, W // p2, p1, p2, C).transpose(0, 5, 1, 3, 2, 4)
    return x.reshape(B, C, H, W)


def random_masking(noise: Any, mask_ratio: float) -> tuple[Any, Any, Any]:
    """Per-image masking decided by ``noise`` (B, L): the int(L (1 - mask_ratio)) patches with the
    smallest noise are kept. Returns backend arrays (ids_keep (B, K), ids_restore (B, L), mask (B, L)):
    ids_keep lists the kept patches by increasing noise, ids_restore[b, i] is the rank of patch i,
    and mask = 1 for removed patches (rank >= K), 0 for kept ones."""
    xp = backend.array_module(noise)
    keep = int(noise.shape[1] * (1 - mask_ratio))
    ids_shuffle = xp.argsort(noise, axis=1, kind="stable")
    ids_restore = xp.argsort(ids_shuffle, axis=1, kind="stable")
    return ids_shuffle[:, :keep], ids_restore, ids_restore >= keep


def masked_patch_loss(pred: Tensor, target: Any, mask: Any, norm_pix_loss: bool = False) -> Tensor:
    """Mean over the masked patches of each patch's mean squared error (module docstring).

    ``target`` (B, L, P) is a constant array; with ``norm_pix_loss`` each target patch becomes
    (t - mean(t)) / sqrt(var(t) + 1e-6) with the unbiased variance (ddof = 1)."""
    xp = pred.xp
    target = backend.to_device(xp.asarray(target), pred.device).astype(pred.dtype)
    if norm_pix_loss:
        mean = target.mean(axis=-1, keepdims=True)
        var = target.var(axis=-1, keepdims=True, ddof=1)
        target = (target - mean) / (var + NORM_PIX_EPS) ** 0.5
    per_patch = ((pred - target) ** 2).mean(axis=-1)
    m = xp.asarray(mask, dtype=pred.dtype)
    return (per_patch * m).sum() / float(m.sum())


class PatchConv(Module):
    """A convolution with kernel = stride = patch size, computed as patchify + linear:
    out[b, t] = W_flat x[b, t] + b_, x[b, t] the patch flattened as (C, p1, p2), W_flat = ``weight``
    (dim, C, p1, p2) reshaped to (dim, C p1 p2). Init as the official MAE: ``weight`` xavier-uniform
    on W_flat, ``bias`` PyTorch's conv default U(-1/sqrt(C p1 p2), 1/sqrt(C p1 p2))."""

    def __init__(self, channels: int, dim: int, patch_size: tuple[int, int]) -> None:
        super().__init__()
        (p1, p2), fan_in = patch_size, channels * patch_size[0] * patch_size[1]
        self.channels, self.dim, self.patch_size = channels, dim, patch_size
        bound = math.sqrt(6 / (fan_in + dim))
        self.weight = Parameter(init.uniform((dim, channels, p1, p2), bound), dtype=backend.DEFAULT_DTYPE)
        self.bias = Parameter(init.uniform((dim,), 1 / math.sqrt(fan_in)), dtype=backend.DEFAULT_DTYPE)

    def forward(self, images: Tensor) -> Tensor:
        (p1, p2), (B, C, H, W) = self.patch_size, images.shape
        x = images.reshape(B, C, H // p1, p1, W // p2, p2).transpose(0, 2, 4, 1, 3, 5)
        x = x.reshape(B, (H // p1) * (W // p2), C * p1 * p2)
        return F.linear(x, self.weight.reshape(self.dim, -1), self.bias)

    def extra_repr(self) -> str:
        return f"{self.channels}, {self.dim}, kernel_size=stride={self.patch_size}"


class PatchEmbed(Module):
    """Patches to tokens (B, L, dim) through ``proj`` (a PatchConv): keys ``proj.weight``, ``proj.bias``."""

    def __init__(self, channels: int, dim: int, patch_size: tuple[int, int]) -> None:
        super().__init__()
        self.proj = PatchConv(channels, dim, patch_size)

    def forward(self, images: Tensor) -> Tensor:
        return self.proj(images)


class MaskedAutoencoder(Module):
    """What every masked autoencoder here shares: patch embedding ``patch_embed.proj``, ``cls_token``
    and ``mask_token`` (N(0, 0.02^2)), fixed sine-cosine embeddings ``pos_embed`` and
    ``decoder_pos_embed`` (buffers: saved, never trained), the masking and the loss.
    Subclasses build the rest and define ``forward`` and ``encode``."""

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {}

    def __init__(  # noqa: PLR0917
        self,
        image_size: int | tuple[int, int],
        patch_size: int | tuple[int, int],
        channels: int,
        dim: int,
        decoder_dim: int,
        mask_ratio: float,
        norm_pix_loss: bool,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        (H, W), (p1, p2) = _pair(image_size), _pair(patch_size)
        if H % p1 or W % p2:
            raise ValueError(f"{name}: image_size {H}x{W} must be a multiple of patch_size {p1}x{p2}")
        if not 0 < mask_ratio < 1:
            raise ValueError(f"{name}: mask_ratio must be in (0, 1), got {mask_ratio}")
        self.image_size, self.patch_size, self.channels = (H, W), (p1, p2), channels
        self.grid = (H // p1, W // p2)
        self.num_patches = self.grid[0] * self.grid[1]
        self.dim, self.decoder_dim = dim, decoder_dim
        self.mask_ratio, self.norm_pix_loss = float(mask_ratio), bool(norm_pix_loss)
        dtype = backend.DEFAULT_DTYPE
        self.patch_embed = PatchEmbed(channels, dim, (p1, p2))
        self.cls_token = Parameter(init.normal((1, 1, dim), 0.02), dtype=dtype)
        self.mask_token = Parameter(init.normal((1, 1, decoder_dim), 0.02), dtype=dtype)
        self.register_buffer("pos_embed", Tensor(sincos_pos_embed(dim, self.grid)[None], dtype=dtype))
        self.register_buffer(
            "decoder_pos_embed", Tensor(sincos_pos_embed(decoder_dim, self.grid)[None], dtype=dtype)
        )

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> MaskedAutoencoder:
        """A new model from ``cls.PRESETS[name]``, any argument overridden by keyword."""
        if name not in cls.PRESETS:
            raise ValueError(
                f"{cls.__name__}: unknown preset {name!r}; choose one of {', '.join(cls.PRESETS)}"
            )
        return cls(**{**cls.PRESETS[name], **overrides})

    def _xavier_linears(self) -> None:
        """The official MAE init of every Linear: xavier-uniform weight, zero bias."""
        for m in self.modules():
            if isinstance(m, Linear):
                bound = math.sqrt(6 / (m.in_features + m.out_features))
                m.weight.data = backend.to_device(
                    init.uniform(m.weight.shape, bound), m.weight.device
                ).astype(m.weight.dtype)
                if m.bias is not None:
                    m.bias.data = m.bias.xp.zeros_like(m.bias.data)

    def _images(self, images: Any) -> Tensor:
        if not isinstance(images, Tensor):
            images = Tensor(images, dtype=self.cls_token.dtype, device=self.cls_token.device)
        C, (H, W) = self.channels, self.image_size
        if images.ndim != 4 or tuple(images.shape[1:]) != (C, H, W):
            raise ValueError(
                f"{type(self).__name__}: expected images of shape (B, C, H, W) = (B, {C}, {H}, {W}), "
                f"got {images.shape}"
            )
        return images

    def masking(self, batch: int, noise: Any = None) -> tuple[Any, Any, Any]:
        """``random_masking`` of (batch, L) noise: the given array, or U(0, 1) from the device RNG."""
        device, L = self.cls_token.device, self.num_patches
        if noise is None:
            noise = backend.device_rng(device).random((batch, L))
        else:
            noise = noise.data if isinstance(noise, Tensor) else noise
            if tuple(np.shape(noise)) != (batch, L):
                raise ValueError(
                    f"{type(self).__name__}: noise must have shape (B, L) = ({batch}, {L}), "
                    f"got {np.shape(noise)}"
                )
            noise = backend.to_device(backend.array_module(noise).asarray(noise), device)
        return random_masking(noise, self.mask_ratio)

    def loss(self, images: Tensor, pred: Tensor, mask: Any) -> Tensor:
        """``masked_patch_loss`` of ``pred`` against the patchified ``images``."""
        return masked_patch_loss(pred, patchify(images.data, self.patch_size), mask, self.norm_pix_loss)

    def encode(self, images: Any) -> Tensor:
        """The encoder's tokens (B, L + 1, dim) with every patch visible; token 0 is the cls token."""
        raise NotImplementedError(f"{type(self).__name__} must define encode()")

    def features(self, images: Any, pool: str = "cls") -> Tensor:
        """One vector per image (B, dim) from ``encode`` (no masking), for probes: the cls token
        (``pool="cls"``) or the mean of the patch tokens (``pool="mean"``)."""
        if pool not in ("cls", "mean"):
            raise ValueError(f"{type(self).__name__}.features: pool must be 'cls' or 'mean', got {pool!r}")
        tokens = self.encode(images)
        return tokens[:, 0] if pool == "cls" else tokens[:, 1:].mean(axis=1)

    def reconstruct(self, images: Any, noise: Any = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(masked input, reconstruction, mask) for showing: host images (B, C, H, W) and mask (B, L).

        The masked input has the removed patches set to 0; the reconstruction keeps the visible
        patches of the image and puts the prediction in the removed ones (with ``norm_pix_loss``,
        each predicted patch is mapped back with its true patch's mean and standard deviation)."""
        with no_grad():
            images = self._images(images)
            _, pred, mask = self.forward(images, noise)
        x = backend.to_numpy(images.data).astype(np.float64)
        target, pred = patchify(x, self.patch_size), backend.to_numpy(pred.data).astype(np.float64)
        if self.norm_pix_loss:
            mean = target.mean(axis=-1, keepdims=True)
            pred = pred * (target.var(axis=-1, keepdims=True, ddof=1) + NORM_PIX_EPS) ** 0.5 + mean
        removed = backend.to_numpy(mask.data).astype(bool)[..., None]
        masked = unpatchify(np.where(removed, 0.0, target), self.patch_size, self.image_size)
        filled = unpatchify(np.where(removed, pred, target), self.patch_size, self.image_size)
        return masked, filled, backend.to_numpy(mask.data)

    def load_state_dict(self, state: dict[str, Any], strict: bool = True) -> None:
        """As ``Module.load_state_dict``, with one clear error for a checkpoint of another kind of model."""
        if strict and "patch_embed.proj.weight" not in state:
            raise ValueError(
                f"load_state_dict into {type(self).__name__}: not a masked-autoencoder checkpoint: expected "
                "keys cls_token, mask_token, patch_embed.proj.weight, blocks.*, decoder_blocks.*, got "
                f"{', '.join(list(state)[:4])}, ..."
                + (" (a classifier's keys)" if any(k.startswith("mlp_head.") for k in state) else "")
            )
        super().load_state_dict(state, strict)

    def extra_repr(self) -> str:
        return (
            f"image_size={self.image_size}, patch_size={self.patch_size}, channels={self.channels}, "
            f"mask_ratio={self.mask_ratio}, norm_pix_loss={self.norm_pix_loss}"
        )
