"""Row blocks over the host's cores: the work of an op, split across threads.

NumPy runs each ufunc on one core, so on a machine with several cores the elementwise passes
of an op (layer norm's normalization, attention's softmax and its small per-head products)
leave the other cores idle. ``for_blocks(fn, rows, like)`` cuts ``range(rows)`` into one
contiguous block per thread and calls ``fn(block)`` (a slice) on each at the same time; NumPy
releases the GIL inside its loops and BLAS calls, so the blocks really run in parallel.

The contract that keeps this simple and exact: ``fn`` is *row-local*. Block i reads whatever
it likes but writes only its own rows, of arrays allocated before the call, and computes each
row exactly as a single call over all rows would. Elementwise work is then bit-for-bit the
same for any number of threads. Products split the same way (``ops.linalg.matmul_arrays``:
one BLAS call per block of rows), which is exact when BLAS computes a row the same whatever
the number of rows it is given, as the OpenBLAS NumPy ships does (``tests/test_host_threads.py``
checks elementwise ops bit for bit, products to float rounding).

So whitebox, not BLAS, spreads the work over the cores: at the first split this module limits
NumPy's BLAS to one thread (threadpoolctl, process-wide), which also keeps idle BLAS threads
from spinning on the cores the blocks need; ``set_num_threads(1)`` gives BLAS its threads back.

Threads: ``WHITEBOX_NUM_THREADS``, else ``OMP_NUM_THREADS``, else the cores this process may
run on; ``set_num_threads(n)`` changes it. Work under ``MIN_BLOCK`` elements a block, CuPy
arrays (a GPU kernel is parallel already) and calls made from inside a block run as one call.
"""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

MIN_BLOCK = 1 << 18  # elements a block at least: smaller blocks cost more to hand over than they save

_num_threads: int | None = None
_pool: ThreadPoolExecutor | None = None
_blas_limit: Any = None  # threadpoolctl's limit object while whitebox holds BLAS to one thread
_inside = threading.local()


def _default_threads() -> int:
    for var in ("WHITEBOX_NUM_THREADS", "OMP_NUM_THREADS"):
        value = os.environ.get(var, "").strip()
        if value:
            try:
                return max(1, int(value))
            except ValueError:
                raise ValueError(f"{var} must be a positive integer, got {value!r}") from None
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def num_threads() -> int:
    """How many threads ``for_blocks`` splits work over."""
    global _num_threads
    if _num_threads is None:
        _num_threads = _default_threads()
    return _num_threads


def set_num_threads(n: int) -> None:
    """Split host elementwise work over ``n`` threads (1: never split)."""
    global _num_threads, _pool, _blas_limit
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"set_num_threads: n must be a positive integer, got {n!r}")
    _num_threads = n
    if _pool is not None:
        _pool.shutdown(wait=True)
        _pool = None
    if n == 1 and _blas_limit is not None:
        _blas_limit.restore_original_limits()
        _blas_limit = None


def _hold_blas_to_one_thread() -> None:
    global _blas_limit
    from threadpoolctl import threadpool_limits

    _blas_limit = threadpool_limits(limits=1, user_api="blas")


def _reset_after_fork() -> None:  # a forked child inherits the pool object, not its threads
    global _pool
    _pool = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)


def _run(fn: Callable[[slice], Any], block: slice) -> Any:
    _inside.active = True
    try:
        return fn(block)
    finally:
        _inside.active = False


def for_blocks(fn: Callable[[slice], Any], rows: int, like: Any, min_rows: int = 1) -> list[Any]:
    """Call ``fn(slice)`` over contiguous blocks covering ``range(rows)``, in parallel on the host
    when ``like`` (an array the work is proportional to) is a large NumPy array; returns the
    calls' results in block order, each block at least ``min_rows`` long. ``fn`` must be
    row-local (see the module docstring)."""
    blocks = (
        min(num_threads(), rows // min_rows, like.size // MIN_BLOCK) if isinstance(like, np.ndarray) else 1
    )
    if blocks <= 1 or getattr(_inside, "active", False):
        return [fn(slice(0, rows))]
    global _pool
    if _blas_limit is None:
        _hold_blas_to_one_thread()
    if _pool is None:
        _pool = ThreadPoolExecutor(max_workers=num_threads() - 1, thread_name_prefix="whitebox")
    cuts = [rows * i // blocks for i in range(blocks + 1)]
    slices = [slice(a, b) for a, b in itertools.pairwise(cuts)]
    futures = [_pool.submit(_run, fn, s) for s in slices[1:]]
    try:
        first = _run(fn, slices[0])
    finally:
        rest = [f.result() for f in futures]  # wait for every block, even when one failed
    return [first, *rest]
