"""The NCCL backend (CuPy's ``cupy.cuda.nccl``): all-reduce and broadcast of GPU arrays.

MPI still starts the processes and carries the small host messages (the
arrival notices that name a missing rank, metric sums, the presence flags);
NCCL moves the gradient buckets directly between GPUs (NVLink, PCIe, or
InfiniBand and sockets across nodes). Setup follows NCCL's recipe: rank 0
draws a unique id (``get_unique_id``), MPI broadcasts it, and every rank
joins ``NcclCommunicator(world_size, id, rank)`` on its own GPU: the
``local rank``-th of its node, or the only one it sees when the launcher gives
each rank its own (``CUDA_VISIBLE_DEVICES``).

NCCL calls are asynchronous: they are queued on the current CUDA stream, so
they run after the backward pass that produced the gradients. The deadline is
kept by polling the stream (``Stream.done``) and NCCL's error state
(``check_async_error``); past it the NCCL communicator is aborted (which frees
a kernel stuck waiting for a dead peer) and ``RankFailureError`` names the ranks
that never arrived.
"""

from __future__ import annotations

import time
from typing import Any

from whitebox import backend
from whitebox.distributed.comm import DEFAULT_BUCKET_MB, DEFAULT_TIMEOUT, RankFailureError
from whitebox.distributed.mpi import MPICommunicator

_NCCL_TYPES = {
    "float16": "NCCL_FLOAT16",
    "float32": "NCCL_FLOAT32",
    "float64": "NCCL_FLOAT64",
    "int32": "NCCL_INT32",
    "int64": "NCCL_INT64",
    "uint8": "NCCL_UINT8",
}


class NCCLCommunicator(MPICommunicator):
    """Collectives on CuPy arrays over NCCL, one GPU per rank; MPI for start-up and host messages."""

    backend_name = "nccl"

    def __init__(
        self,
        comm: Any = None,
        timeout: float = DEFAULT_TIMEOUT,
        bucket_mb: float = DEFAULT_BUCKET_MB,
    ) -> None:
        cp = backend.cupy()  # raises with the install hint when CuPy or a GPU is missing
        from cupy.cuda import nccl

        super().__init__(comm, "cuda", timeout, bucket_mb)
        self._cp, self._nccl_mod = cp, nccl
        node = self._comm.Split_type(self._MPI.COMM_TYPE_SHARED)
        local_rank = node.Get_rank()
        node.Free()
        n_gpus = cp.cuda.runtime.getDeviceCount()
        # One GPU visible: the launcher gave each rank its own (CUDA_VISIBLE_DEVICES); else the local_rank-th.
        self.gpu = 0 if n_gpus == 1 else local_rank
        if self.gpu >= n_gpus:
            raise RuntimeError(
                f"rank {self.rank} is process {local_rank} on its node, which has only {n_gpus} GPU(s): "
                "start at most one process per GPU"
            )
        cp.cuda.Device(self.gpu).use()
        # NCCL needs a different GPU for each rank: find out now, with every rank named.
        bus_id = cp.cuda.runtime.deviceGetPCIBusId(self.gpu)
        where = self._comm.allgather(f"{self._MPI.Get_processor_name()} GPU {bus_id}")
        shared = [r for r, w in enumerate(where) if where.count(w) > 1]
        if shared:
            raise RuntimeError(
                f"ranks {shared} share a GPU ({', '.join(sorted({where[r] for r in shared}))}); "
                "NCCL needs one GPU per rank: start at most one process per GPU"
            )
        unique_id = nccl.get_unique_id() if self.is_root else None
        unique_id = self._comm.bcast(unique_id, root=0)
        self._nccl = nccl.NcclCommunicator(self.world_size, unique_id, self.rank)

    def _dtype(self, a: Any) -> int:
        name = _NCCL_TYPES.get(str(a.dtype))
        if name is None:
            raise TypeError(f"NCCL cannot reduce dtype {a.dtype}; supported: {sorted(_NCCL_TYPES)}")
        return getattr(self._nccl_mod, name)

    def _wait_stream(self, stream: Any, what: str) -> None:
        """Poll the stream until the queued collectives finish; abort NCCL past the deadline."""
        deadline = time.monotonic() + self.timeout
        delay = 0.0
        while not stream.done:
            try:
                self._nccl.check_async_error()
            except self._nccl_mod.NcclError as exc:
                self._nccl.abort()
                raise self._failure(what, f"failed in NCCL ({exc})") from exc
            if time.monotonic() > deadline:
                self._nccl.abort()
                raise self._failure(what, f"did not complete within {self.timeout:g} s")
            time.sleep(delay)
            delay = min(2 * delay + 1e-5, 1e-3)
        self._drain_arrivals()

    def _allreduce_sum_(self, buffers: list[Any], what: str) -> None:
        self._arrive()
        stream = self._cp.cuda.get_current_stream()
        self._nccl_mod.groupStart()
        for b in buffers:
            ptr = b.data.ptr  # in place: send and receive buffers are the same
            self._nccl.allReduce(ptr, ptr, b.size, self._dtype(b), self._nccl_mod.NCCL_SUM, stream.ptr)
        self._nccl_mod.groupEnd()
        self._wait_stream(stream, what)

    def _broadcast_(self, buffers: list[Any], root: int, what: str) -> None:
        self._arrive()
        stream = self._cp.cuda.get_current_stream()
        self._nccl_mod.groupStart()
        for b in buffers:
            self._nccl.bcast(b.data.ptr, b.size, self._dtype(b), root, stream.ptr)
        self._nccl_mod.groupEnd()
        self._wait_stream(stream, what)

    def close(self) -> None:
        """Destroy the NCCL communicator, then free the MPI one (collective)."""
        self._nccl.destroy()
        super().close()


__all__ = ["NCCLCommunicator", "RankFailureError"]
