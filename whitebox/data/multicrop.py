"""Multi-crop views for self-distillation: random resized crops, flips and brightness/contrast
jitter, vectorized over a (B, C, H, W) batch.

``RandomResizedCrop`` picks, per image, a window of area s H W (s uniform in ``scale``) and
aspect ratio r (log r uniform in log ``ratio``), clipped to the image, at a uniform position,
and resamples it bilinearly to ``size`` x ``size``. ``ColorJitter`` multiplies the image by a
brightness factor b, then moves it away from or toward its mean by a contrast factor c:
x <- (b x - m) c + m, m the mean of b x over the image (all channels), with probability ``p``.

``MultiCrop`` makes the views DINO trains on: ``n_global`` large crops (``global_scale``) at
``global_size`` and ``n_local`` small ones (``local_scale``) at ``local_size``, each then flipped
and jittered; ``MultiCrop(batch, rng)`` returns the list of views, global ones first. Like every
augmentation here it draws only from the generator it is given, so a seed fixes the views.
Images are uint8 in [0, 255] (kept uint8, rounded) or floats in [0, 1] (kept in their dtype).
"""

from __future__ import annotations

import math

import numpy as np

from whitebox.data.augment import RandomHorizontalFlip, _check_batch


def _check_scale(scale: tuple[float, float], name: str) -> tuple[float, float]:
    lo, hi = (float(s) for s in scale)
    if not (0 < lo <= hi <= 1):
        raise ValueError(f"{name} must be (low, high) with 0 < low <= high <= 1, got {tuple(scale)}")
    return lo, hi


def _to_dtype(x: np.ndarray, dtype: np.dtype) -> np.ndarray:
    if np.issubdtype(dtype, np.integer):
        return np.clip(np.rint(x), 0, 255).astype(dtype)
    return np.clip(x, 0.0, 1.0).astype(dtype, copy=False)


class RandomResizedCrop:
    """A random window of each image (relative area in ``scale``, aspect in ``ratio``),
    resampled bilinearly to ``size`` x ``size``."""

    def __init__(
        self,
        size: int,
        scale: tuple[float, float] = (0.08, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
    ) -> None:
        if int(size) != size or size < 1:
            raise ValueError(f"RandomResizedCrop: size must be a positive integer, got {size!r}")
        self.size = int(size)
        self.scale = _check_scale(scale, "scale")
        if not 0 < ratio[0] <= ratio[1]:
            raise ValueError(f"ratio must be (low, high) with 0 < low <= high, got {tuple(ratio)}")
        self.ratio = (float(ratio[0]), float(ratio[1]))

    def __call__(self, batch: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        _check_batch(batch)
        B, C, H, W = batch.shape
        area = rng.uniform(*self.scale, size=B) * H * W
        aspect = np.exp(rng.uniform(math.log(self.ratio[0]), math.log(self.ratio[1]), size=B))
        h = np.clip(np.sqrt(area / aspect), 1.0, H)
        w = np.clip(np.sqrt(area * aspect), 1.0, W)
        top = rng.uniform(0.0, 1.0, size=B) * (H - h)
        left = rng.uniform(0.0, 1.0, size=B) * (W - w)
        centers = (np.arange(self.size) + 0.5) / self.size  # output pixel centers in [0, 1]
        ys = np.clip(top[:, None] + centers * h[:, None] - 0.5, 0, H - 1)  # (B, size), source rows
        xs = np.clip(left[:, None] + centers * w[:, None] - 0.5, 0, W - 1)
        y0, x0 = np.floor(ys).astype(np.intp), np.floor(xs).astype(np.intp)
        y1, x1 = np.minimum(y0 + 1, H - 1), np.minimum(x0 + 1, W - 1)
        wy = (ys - y0).astype(np.float32)[:, None, :, None]  # (B, 1, size, 1)
        wx = (xs - x0).astype(np.float32)[:, None, None, :]  # (B, 1, 1, size)
        b = np.arange(B)[:, None, None, None]
        c = np.arange(C)[None, :, None, None]

        def at(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
            return batch[b, c, rows[:, None, :, None], cols[:, None, None, :]].astype(np.float32)

        top_row = at(y0, x0) * (1 - wx) + at(y0, x1) * wx
        bottom_row = at(y1, x0) * (1 - wx) + at(y1, x1) * wx
        return _to_dtype(top_row * (1 - wy) + bottom_row * wy, batch.dtype)

    def __repr__(self) -> str:
        return f"RandomResizedCrop(size={self.size}, scale={self.scale}, ratio={self.ratio})"


class ColorJitter:
    """With probability ``p`` per image: x <- (b x - m) c + m, with b uniform in
    [1 - brightness, 1 + brightness], c uniform in [1 - contrast, 1 + contrast] and m the
    image's mean after the brightness change."""

    def __init__(self, brightness: float = 0.4, contrast: float = 0.4, p: float = 0.8) -> None:
        if not (0 <= brightness <= 1 and 0 <= contrast <= 1):
            raise ValueError(
                f"ColorJitter: brightness and contrast must be in [0, 1], got {brightness}, {contrast}"
            )
        if not 0 <= p <= 1:
            raise ValueError(f"ColorJitter: p must be in [0, 1], got {p}")
        self.brightness, self.contrast, self.p = float(brightness), float(contrast), float(p)

    def __call__(self, batch: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        _check_batch(batch)
        B = len(batch)
        apply = rng.random(B) < self.p
        b = rng.uniform(1 - self.brightness, 1 + self.brightness, size=B)
        c = rng.uniform(1 - self.contrast, 1 + self.contrast, size=B)
        b = np.where(apply, b, 1.0).astype(np.float32)[:, None, None, None]
        c = np.where(apply, c, 1.0).astype(np.float32)[:, None, None, None]
        x = batch.astype(np.float32) * b
        mean = x.mean(axis=(1, 2, 3), keepdims=True)
        return _to_dtype((x - mean) * c + mean, batch.dtype)

    def __repr__(self) -> str:
        return f"ColorJitter(brightness={self.brightness}, contrast={self.contrast}, p={self.p})"


class MultiCrop:
    """``n_global`` global and ``n_local`` local views of a batch: crop, flip, jitter."""

    def __init__(  # noqa: PLR0917
        self,
        global_size: int,
        local_size: int,
        n_local: int = 6,
        global_scale: tuple[float, float] = (0.4, 1.0),
        local_scale: tuple[float, float] = (0.05, 0.4),
        n_global: int = 2,
        flip_p: float = 0.5,
        brightness: float = 0.4,
        contrast: float = 0.4,
        jitter_p: float = 0.8,
    ) -> None:
        if int(n_local) != n_local or n_local < 0:
            raise ValueError(f"MultiCrop: n_local (the number of local crops) must be >= 0, got {n_local!r}")
        if int(n_global) != n_global or n_global < 1:
            raise ValueError(f"MultiCrop: n_global must be >= 1, got {n_global!r}")
        global_scale = _check_scale(global_scale, "global_scale")
        local_scale = _check_scale(local_scale, "local_scale")
        if local_scale[1] > global_scale[0]:
            raise ValueError(
                f"MultiCrop: crop scales out of order: local crops {local_scale} must not be larger "
                f"than global ones {global_scale} (need local_scale[1] <= global_scale[0])"
            )
        self.n_global, self.n_local = int(n_global), int(n_local)
        self.global_crop = RandomResizedCrop(global_size, global_scale)
        self.local_crop = RandomResizedCrop(local_size, local_scale)
        self.flip = RandomHorizontalFlip(flip_p)
        self.jitter = ColorJitter(brightness, contrast, jitter_p)

    @property
    def num_views(self) -> int:
        return self.n_global + self.n_local

    def __call__(self, batch: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
        crops = [self.global_crop] * self.n_global + [self.local_crop] * self.n_local
        return [self.jitter(self.flip(crop(batch, rng), rng), rng) for crop in crops]

    def __repr__(self) -> str:
        return (
            f"MultiCrop(n_global={self.n_global}, n_local={self.n_local}, global={self.global_crop}, "
            f"local={self.local_crop}, {self.flip}, {self.jitter})"
        )
