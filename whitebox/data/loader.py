"""Mini-batches of an ``ImageDataset`` as device tensors.

Each epoch's randomness, both the shuffling order and the augmentation draws,
comes from one generator, ``np.random.default_rng([seed, epoch])``. So a
(seed, epoch) pair fixes that epoch's batches exactly, whatever happened
before: resuming at epoch e after a restart replays it bit for bit.

Images stay uint8 until a batch is drawn; the batch is augmented on the host,
moved to the device as uint8 (a quarter of the float32 bytes), and converted
there to float32, scaled to [0, 1] and (by default) normalized with the
dataset's train-split mean and std.

With ``world_size`` W > 1 the loader is one rank's share of data-parallel
training: the epoch's permutation is sharded by
``whitebox.distributed.shard_indices`` (rank r takes every W-th index, the
order padded to a multiple of W), ``batch_size`` is the per-rank batch, and
the augmentations are drawn from ``default_rng([seed, epoch, rank])``, so
that the ranks do not draw the same crops for different images.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from whitebox import backend
from whitebox.data.augment import Augment
from whitebox.data.datasets import ImageDataset
from whitebox.distributed.sampler import shard_indices
from whitebox.tensor import Tensor


class DataLoader:
    """Iterate over ``dataset`` in batches of (images Tensor (B, C, H, W) float32, labels int64 array).

    An augmentation that returns a list of views (``MultiCrop``) gives batches of
    (list of image Tensors, labels), one Tensor per view.
    """

    def __init__(  # noqa: PLR0917 (the documented positional API)
        self,
        dataset: ImageDataset,
        batch_size: int,
        shuffle: bool = True,
        seed: int = 0,
        augment: Augment | None = None,
        normalize: bool = True,
        device: str = "cpu",
        drop_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.seed = int(seed)
        self.augment = augment
        self.normalize = normalize
        self.device = backend.check_device(device)
        self.drop_last = drop_last
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
        self.rank, self.world_size = int(rank), int(world_size)
        self.epoch = 0
        C = dataset.image_shape[0]
        mean = np.asarray(dataset.mean if normalize else (0.0,) * C, dtype=np.float32).reshape(1, C, 1, 1)
        std = np.asarray(dataset.std if normalize else (1.0,) * C, dtype=np.float32).reshape(1, C, 1, 1)
        # x_normalized = (u8 / 255 - mean) / std = u8 * scale - shift
        self._scale = backend.to_device(1.0 / (255.0 * std), self.device)
        self._shift = backend.to_device(mean / std, self.device)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order and augmentations the next iteration produces."""
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        self.epoch = int(epoch)

    def __len__(self) -> int:
        n, b = -(-len(self.dataset) // self.world_size), self.batch_size  # this rank's share
        return n // b if self.drop_last else -(-n // b)

    def __iter__(self) -> Iterator[tuple[Tensor, Any]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        n = len(self.dataset)
        if self.world_size == 1:
            order = rng.permutation(n) if self.shuffle else np.arange(n)
        else:
            order = shard_indices(n, self.rank, self.world_size, self.seed, self.epoch, shuffle=self.shuffle)
            rng = np.random.default_rng([self.seed, self.epoch, self.rank])
        for i in range(len(self)):
            idx = order[i * self.batch_size : (i + 1) * self.batch_size]
            batch = self.dataset.images[idx]
            if self.augment is not None:
                batch = self.augment(batch, rng)
            labels = backend.to_device(self.dataset.labels[idx], self.device)
            if isinstance(batch, list):  # several views of each image (e.g. MultiCrop)
                yield [self._to_tensor(view) for view in batch], labels
            else:
                yield self._to_tensor(batch), labels

    def _to_tensor(self, batch: np.ndarray) -> Tensor:
        """The uint8 batch on the device, as float32 scaled and normalized."""
        x = backend.to_device(np.ascontiguousarray(batch), self.device).astype(np.float32)
        x *= self._scale
        x -= self._shift
        return Tensor(x)
