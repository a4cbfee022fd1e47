"""Sharding each epoch's sample order across ranks.

Every rank draws the same permutation of ``range(n)`` from
``np.random.default_rng([seed, epoch])`` (the generator ``DataLoader`` draws
its order from), and rank r keeps every ``world_size``-th index starting at r::

    order = permutation(n)            identical on every rank
    shard_r = order[r :: world_size]

Taking strides rather than contiguous blocks keeps the global batches of one
rank: with per-rank batch b = B / world_size, step t on rank r sees
``order[t*B + r : (t+1)*B : world_size]``, and the union over ranks is
``order[t*B : (t+1)*B]``, exactly the batch one process with batch B sees.

Every rank must take the same number of steps, so the shards have equal
lengths: when n is not a multiple of world_size the order is either padded
by repeating its first indices (``drop_last=False``, every sample is seen at
least once) or cut to a multiple of world_size (``drop_last=True``, the shards
are disjoint). The shard depends only on (seed, epoch, rank, world_size), so a
run resumed at an epoch boundary with any number of ranks sees the epoch it
would have seen.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np


def shard_indices(
    n: int,
    rank: int,
    world_size: int,
    seed: int = 0,
    epoch: int = 0,
    *,
    shuffle: bool = True,
    drop_last: bool = False,
) -> np.ndarray:
    """The int64 indices of ``range(n)`` that ``rank`` of ``world_size`` visits in ``epoch``, in order."""
    if n < 1:
        raise ValueError(f"shard_indices: n must be >= 1, got {n}")
    if world_size < 1:
        raise ValueError(f"shard_indices: world_size must be >= 1, got {world_size}")
    if not 0 <= rank < world_size:
        raise ValueError(f"shard_indices: rank must be in [0, {world_size}), got {rank}")
    if seed < 0 or epoch < 0:
        raise ValueError(f"shard_indices: seed and epoch must be >= 0, got {seed}, {epoch}")
    if drop_last and n < world_size:
        raise ValueError(f"shard_indices: drop_last with n={n} < world_size={world_size} leaves no sample")
    order = np.random.default_rng([seed, epoch]).permutation(n) if shuffle else np.arange(n)
    if drop_last:
        order = order[: n - n % world_size]
    elif n % world_size:
        pad = world_size - n % world_size
        order = np.concatenate([order, np.resize(order, pad)])
    return order[rank::world_size].astype(np.int64)


class DistributedSampler:
    """Iterate over this rank's share of an epoch; ``set_epoch`` before each epoch reshuffles."""

    def __init__(
        self,
        n: int,
        rank: int,
        world_size: int,
        seed: int = 0,
        epoch: int = 0,
        *,
        shuffle: bool = True,
        drop_last: bool = False,
    ) -> None:
        self.n, self.rank, self.world_size, self.seed = int(n), int(rank), int(world_size), int(seed)
        self.shuffle, self.drop_last = bool(shuffle), bool(drop_last)
        self.epoch = 0
        self.set_epoch(epoch)
        self.indices()  # validate the arguments now, not at the first epoch

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose permutation the next iteration shards."""
        if epoch < 0:
            raise ValueError(f"DistributedSampler: epoch must be >= 0, got {epoch}")
        self.epoch = int(epoch)

    def indices(self) -> np.ndarray:
        """This rank's indices for the current epoch."""
        return shard_indices(
            self.n,
            self.rank,
            self.world_size,
            self.seed,
            self.epoch,
            shuffle=self.shuffle,
            drop_last=self.drop_last,
        )

    def __len__(self) -> int:
        return self.n // self.world_size if self.drop_last else -(-self.n // self.world_size)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices().tolist())
