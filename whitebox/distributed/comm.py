"""The communicator interface of data-parallel training, and its one-process case.

Data parallelism keeps a full replica of the model in each of W processes
(ranks). Each step, rank r computes the gradient g_r of the mean loss over its
own b = B / W samples; the ranks then replace every g_r by the average::

    g = (1 / W) * sum_r g_r  =  (1 / W) * sum_r (1 / b) * sum_{i in batch_r} grad l_i
      = (1 / B) * sum_{i in all batches} grad l_i

which is the gradient of the mean loss over the global batch of B samples. As
every replica starts from the same weights (broadcast from rank 0) and applies
the same optimizer update to the same averaged gradient, the replicas stay
equal, and W ranks with batch B / W follow the trajectory of one process with
batch B (up to floating-point summation order).

The average is an *all-reduce* (every rank contributes an array and receives
the elementwise sum), run over flat buckets of gradients (``buckets``).

A collective blocks until every rank has joined it, so a rank that dies or
hangs would stall the others for ever. Every collective here therefore runs
under a deadline (``timeout`` seconds); past it, the waiting ranks raise
``RankFailureError`` naming the ranks that never arrived, and ``guard()`` turns any
exception on one rank into the end of every rank.
"""

from __future__ import annotations

import contextlib
import sys
import traceback
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, NoReturn

import numpy as np

from whitebox import backend
from whitebox.distributed.buckets import flatten, plan_buckets, unflatten
from whitebox.nn.module import Module
from whitebox.tensor import Tensor

DEFAULT_TIMEOUT = 300.0
DEFAULT_BUCKET_MB = 25.0


class RankFailureError(RuntimeError):
    """A collective could not complete: ``ranks`` lists the ranks that never reached it."""

    def __init__(self, message: str, ranks: Sequence[int] = ()) -> None:
        super().__init__(message)
        self.ranks = tuple(ranks)


def model_arrays(model: Module | Iterable[Tensor]) -> list[Any]:
    """The arrays of a module's parameters and buffers (``state_dict`` order, each once), or of the tensors.

    These are the tensors' own arrays, not copies: writing into them updates the model.
    """
    if isinstance(model, Module):
        arrays = list(model.state_dict().values())
    else:
        arrays = []
        for i, t in enumerate(model):
            if not isinstance(t, Tensor):
                raise TypeError(f"expected a Module or Tensors, got a {type(t).__name__} at position {i}")
            arrays.append(t.data)
    return list({id(a): a for a in arrays}.values())


class Communicator:
    """One rank's view of the group: its ``rank`` among ``world_size`` processes, and the collectives.

    Subclasses move data (``_allreduce_sum_``, ``_broadcast_``, ``_host_allreduce_sum``);
    this class turns gradients and parameters into buckets and back.
    """

    backend_name = "none"

    def __init__(
        self,
        rank: int,
        world_size: int,
        device: str,
        timeout: float = DEFAULT_TIMEOUT,
        bucket_mb: float = DEFAULT_BUCKET_MB,
    ) -> None:
        if timeout <= 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout}")
        if bucket_mb <= 0:
            raise ValueError(f"bucket_mb must be > 0, got {bucket_mb}")
        self.rank, self.world_size = int(rank), int(world_size)
        self.device = backend.check_device(device)
        self.timeout = float(timeout)
        self.bucket_bytes = max(1, int(bucket_mb * 2**20))

    @property
    def is_root(self) -> bool:
        """True on rank 0, the rank that alone logs, writes checkpoints and draws figures."""
        return self.rank == 0

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(rank={self.rank}, world_size={self.world_size}, "
            f"device={self.device!r}, timeout={self.timeout:g})"
        )

    def describe(self) -> str:
        """One line naming the backend and the ranks, for the root's log."""
        return f"{self.backend_name}, {self.world_size} rank(s)"

    def local_batch_size(self, global_batch_size: int) -> int:
        """The per-rank batch B / W of a global batch B (which W must divide)."""
        if global_batch_size < 1 or global_batch_size % self.world_size:
            raise ValueError(
                f"global batch size {global_batch_size} must be a positive multiple of the "
                f"world size {self.world_size}"
            )
        return global_batch_size // self.world_size

    # ---- the collectives a training loop calls ---------------------------------------
    def allreduce_gradients(self, params: Iterable[Tensor]) -> None:
        """Replace every ``p.grad`` by its average over the ranks, in buckets.

        A parameter without a gradient on some rank counts as a zero gradient
        there; one without a gradient on every rank keeps ``grad = None``.
        """
        params = list(params)
        present = np.array([p.grad is not None for p in params], dtype=np.int32)
        counts = self._host_allreduce_sum(present, "gradient presence flags")
        active = [p for p, c in zip(params, counts, strict=True) if c > 0]
        for p in active:
            if p.grad is None:
                p.grad = p.xp.zeros_like(p.data)
            self._check_array(p.grad, "gradient")
        grads = [p.grad for p in active]
        plan = plan_buckets(grads, self.bucket_bytes)
        buffers = [flatten([grads[i] for i in bucket]) for bucket in plan]
        self._allreduce_sum_(buffers, f"all-reduce of {len(buffers)} gradient bucket(s)")
        for bucket, flat in zip(plan, buffers, strict=True):
            flat[...] /= self.world_size
            for i, g in zip(bucket, unflatten(flat, [grads[i].shape for i in bucket]), strict=True):
                active[i].grad = g

    def broadcast_parameters(self, model: Module | Iterable[Tensor], root: int = 0) -> None:
        """Copy rank ``root``'s parameters and buffers (a Module's, or the given tensors) to every rank."""
        if not 0 <= root < self.world_size:
            raise ValueError(f"root must be in [0, {self.world_size}), got {root}")
        arrays = model_arrays(model)
        for a in arrays:
            self._check_array(a, "parameter")
        plan = plan_buckets(arrays, self.bucket_bytes)
        buffers = [flatten([arrays[i] for i in bucket]) for bucket in plan]
        self._broadcast_(buffers, root, f"broadcast of {len(buffers)} parameter bucket(s)")
        if self.rank != root:
            for bucket, flat in zip(plan, buffers, strict=True):
                for i, a in zip(bucket, unflatten(flat, [arrays[i].shape for i in bucket]), strict=True):
                    arrays[i][...] = a

    def allreduce_sum(self, values: Sequence[float] | np.ndarray) -> np.ndarray:
        """The float64 elementwise sum over ranks of host numbers (loss sums, correct counts)."""
        return self._host_allreduce_sum(np.asarray(values, dtype=np.float64), "all-reduce of metrics")

    def barrier(self, timeout: float | None = None) -> None:
        """Return once every rank has called it, within ``timeout`` seconds (default: the communicator's).

        A longer timeout suits a barrier that waits for slow work on one rank,
        such as rank 0 downloading a data set the others then read.
        """
        saved = self.timeout
        if timeout is not None:
            if timeout <= 0:
                raise ValueError(f"barrier: timeout must be > 0 seconds, got {timeout}")
            self.timeout = float(timeout)
        try:
            self._host_allreduce_sum(np.zeros(1, dtype=np.int32), "barrier")
        finally:
            self.timeout = saved

    # ---- failure -------------------------------------------------------------------
    def abort(self, message: str, code: int = 1) -> NoReturn:
        """Print ``message`` and end this process (``MPICommunicator`` ends every rank)."""
        print(message, file=sys.stderr, flush=True)
        raise SystemExit(code)

    @contextlib.contextmanager
    def guard(self) -> Iterator[Communicator]:
        """Run a block so that an exception on this rank ends every rank, with its rank named.

        Without it, a rank that fails leaves the others blocked in their next
        collective until the timeout, and a process stuck in MPI's shutdown.
        In a group of one it changes nothing.
        """
        try:
            yield self
        except SystemExit as exc:
            if exc.code not in (0, None) and self.world_size > 1:
                self.abort(f"rank {self.rank} of {self.world_size} exited with status {exc.code}")
            raise
        except BaseException as exc:
            if self.world_size == 1:  # nobody else to end: the exception goes on as usual
                raise
            traceback.print_exc()
            self.abort(f"rank {self.rank} of {self.world_size} failed: {type(exc).__name__}: {exc}")

    def close(self) -> None:
        """Release the backend's resources (a no-op by default)."""

    # ---- what a backend implements ---------------------------------------------------
    def _check_array(self, a: Any, what: str) -> None:
        if backend.device_of(a) != self.device:
            raise ValueError(
                f"{type(self).__name__} on device {self.device!r} got a {what} on "
                f"{backend.device_of(a)!r}; move the model with model.to({self.device!r})"
            )

    def _allreduce_sum_(self, buffers: list[Any], what: str) -> None:
        """Sum each device buffer over the ranks, in place."""
        raise NotImplementedError

    def _broadcast_(self, buffers: list[Any], root: int, what: str) -> None:
        """Overwrite each device buffer with rank ``root``'s, in place."""
        raise NotImplementedError

    def _host_allreduce_sum(self, values: np.ndarray, what: str) -> np.ndarray:
        """The elementwise sum over ranks of a small host array."""
        raise NotImplementedError


class LocalCommunicator(Communicator):
    """The group of one process: every collective is the identity, and nothing needs MPI."""

    backend_name = "local"

    def __init__(
        self, device: str = "cpu", timeout: float = DEFAULT_TIMEOUT, bucket_mb: float = DEFAULT_BUCKET_MB
    ) -> None:
        super().__init__(0, 1, device, timeout, bucket_mb)

    def allreduce_gradients(self, params: Iterable[Tensor]) -> None:
        """The average over one rank is the gradient itself: nothing to do."""

    def broadcast_parameters(self, model: Module | Iterable[Tensor], root: int = 0) -> None:
        """One rank already holds rank 0's parameters: nothing to do."""
        if root != 0:
            raise ValueError(f"root must be 0 in a group of one, got {root}")

    def _host_allreduce_sum(self, values: np.ndarray, what: str) -> np.ndarray:
        return values.copy()
