"""Packing many small arrays into few flat buffers, so one collective moves many tensors.

A collective call has a fixed cost (a handshake, a kernel launch), so sending
a model's gradients one tensor at a time pays it once per tensor. Instead the
arrays are grouped, in order, into buckets of one dtype and one device of at
most ``bucket_bytes`` each (an array larger than that gets a bucket of its
own), each bucket is copied into one contiguous 1-D buffer, the buffer goes
through the collective, and the results are cut back out of it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from whitebox import backend


def plan_buckets(arrays: Sequence[Any], bucket_bytes: int) -> list[list[int]]:
    """Indices into ``arrays`` grouped into buckets of one (dtype, device), each <= bucket_bytes if possible.

    Arrays keep their order inside a bucket; buckets of a (dtype, device) are
    listed in the order their first array appears.
    """
    if bucket_bytes < 1:
        raise ValueError(f"plan_buckets: bucket_bytes must be >= 1, got {bucket_bytes}")
    open_bucket: dict[tuple[str, str], int] = {}  # (dtype, device) -> index of its bucket being filled
    buckets: list[list[int]] = []
    sizes: list[int] = []
    for i, a in enumerate(arrays):
        key = (str(a.dtype), backend.device_of(a))
        j = open_bucket.get(key)
        if j is None or sizes[j] + a.nbytes > bucket_bytes:
            buckets.append([])
            sizes.append(0)
            j = open_bucket[key] = len(buckets) - 1
        buckets[j].append(i)
        sizes[j] += a.nbytes
    return buckets


def flatten(arrays: Sequence[Any]) -> Any:
    """One new contiguous 1-D array holding every array's elements in turn (all of one dtype and device)."""
    xp = backend.array_module(arrays[0])
    return xp.concatenate([xp.ravel(a) for a in arrays])


def unflatten(flat: Any, shapes: Sequence[tuple[int, ...]]) -> list[Any]:
    """Cut ``flat`` back into arrays of ``shapes`` (views into ``flat``, no copies)."""
    out, offset = [], 0
    for shape in shapes:
        size = 1
        for d in shape:
            size *= d
        out.append(flat[offset : offset + size].reshape(shape))
        offset += size
    if offset != flat.size:
        raise ValueError(f"unflatten: shapes hold {offset} elements, the buffer {flat.size}")
    return out
