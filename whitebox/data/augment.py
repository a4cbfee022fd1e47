"""Batch augmentations: ``aug(batch, rng) -> batch`` on (B, C, H, W) arrays.

Each transform draws its randomness from the ``np.random.Generator`` it is
given (the loader passes its per-epoch generator, so augmented batches are
reproducible from the seed and epoch) and works on the whole batch at once
with fancy indexing. Inputs may be uint8 or float; the dtype is kept.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

Augment = Callable[[np.ndarray, np.random.Generator], np.ndarray]


def _check_batch(batch: np.ndarray) -> None:
    if batch.ndim != 4:
        raise ValueError(f"augmentations take (B, C, H, W) batches, got shape {batch.shape}")


class RandomCrop:
    """Zero-pad each side by ``padding``, then crop a random ``size`` window per image."""

    def __init__(self, size: int | tuple[int, int], padding: int = 0) -> None:
        self.size = (size, size) if isinstance(size, int) else tuple(size)
        if padding < 0 or min(self.size) < 1:
            raise ValueError(f"need size >= 1 and padding >= 0, got size={size}, padding={padding}")
        self.padding = padding

    def __call__(self, batch: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        _check_batch(batch)
        B, C, H, W = batch.shape
        h, w = self.size
        p = self.padding
        if h > H + 2 * p or w > W + 2 * p:
            raise ValueError(f"crop {self.size} is larger than the padded image {(H + 2 * p, W + 2 * p)}")
        padded = np.pad(batch, ((0, 0), (0, 0), (p, p), (p, p))) if p else batch
        top = rng.integers(0, H + 2 * p - h + 1, size=B)
        left = rng.integers(0, W + 2 * p - w + 1, size=B)
        rows = (top[:, None] + np.arange(h))[:, None, :, None]  # (B, 1, h, 1)
        cols = (left[:, None] + np.arange(w))[:, None, None, :]  # (B, 1, 1, w)
        return padded[np.arange(B)[:, None, None, None], np.arange(C)[None, :, None, None], rows, cols]

    def __repr__(self) -> str:
        return f"RandomCrop(size={self.size}, padding={self.padding})"


class RandomHorizontalFlip:
    """Mirror each image left-right with probability ``p``."""

    def __init__(self, p: float = 0.5) -> None:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be in [0, 1], got {p}")
        self.p = p

    def __call__(self, batch: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        _check_batch(batch)
        flip = rng.random(len(batch)) < self.p
        out = batch.copy()
        out[flip] = batch[flip, :, :, ::-1]
        return out

    def __repr__(self) -> str:
        return f"RandomHorizontalFlip(p={self.p})"


class Compose:
    """Apply augmentations in order, all drawing from the same generator."""

    def __init__(self, transforms: Sequence[Augment]) -> None:
        self.transforms = list(transforms)

    def __call__(self, batch: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        for t in self.transforms:
            batch = t(batch, rng)
        return batch

    def __repr__(self) -> str:
        return f"Compose({self.transforms!r})"
