"""Data-parallel training: one model replica per process, gradients averaged by all-reduce.

A training loop uses it as::

    comm = distributed.init(device)            # rank, world_size, is_root
    with comm.guard():                         # a failure on one rank ends every rank
        comm.broadcast_parameters(model)       # replicas start equal (rank 0's weights)
        sampler = DistributedSampler(len(data), comm.rank, comm.world_size, seed)
        for epoch in ...:
            sampler.set_epoch(epoch)           # this rank's share of the epoch
            ... loss.backward()
            comm.allreduce_gradients(model.parameters())   # average over ranks
            optimizer.step()                   # the same update on every rank

Backends, chosen by the device: MPI (mpi4py) for CPU arrays, NCCL (CuPy) for
GPU arrays, and the group of one process (no MPI needed) when the program was
not started by ``mpiexec -n W`` with W > 1.
"""

from __future__ import annotations

import os

from whitebox import backend
from whitebox.distributed.comm import (
    DEFAULT_BUCKET_MB,
    DEFAULT_TIMEOUT,
    Communicator,
    LocalCommunicator,
    RankFailureError,
)
from whitebox.distributed.mpi import INSTALL_HINT, MPICommunicator
from whitebox.distributed.sampler import DistributedSampler, shard_indices

# Set in every process by the launchers of MPICH (Hydra, PMI), Open MPI and Slurm.
_LAUNCHER_SIZE_VARS = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MPI_LOCALNRANKS", "SLURM_NTASKS")


def launched_world_size() -> int:
    """The number of processes an MPI launcher says it started (1 when none did)."""
    for var in _LAUNCHER_SIZE_VARS:
        value = os.environ.get(var, "")
        if value.isdigit():
            return int(value)
    return 1


def init(
    device: str = "cpu",
    *,
    timeout: float = DEFAULT_TIMEOUT,
    bucket_mb: float = DEFAULT_BUCKET_MB,
) -> Communicator:
    """The communicator of this process: MPI on 'cpu', NCCL on 'cuda', local when alone.

    Started by ``mpiexec -n W`` with W > 1, it needs mpi4py (``INSTALL_HINT``);
    started alone, it returns a ``LocalCommunicator`` without importing MPI.
    """
    device = backend.check_device(device)
    if launched_world_size() == 1:
        return LocalCommunicator(device, timeout, bucket_mb)
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise ImportError(
            f"this process was started as one of {launched_world_size()} ranks, but mpi4py is not "
            f"installed: {INSTALL_HINT}"
        ) from exc
    if MPI.COMM_WORLD.Get_size() == 1:
        return LocalCommunicator(device, timeout, bucket_mb)
    if device == "cuda":
        from whitebox.distributed.nccl import NCCLCommunicator

        return NCCLCommunicator(timeout=timeout, bucket_mb=bucket_mb)
    return MPICommunicator(device="cpu", timeout=timeout, bucket_mb=bucket_mb)


__all__ = [
    "INSTALL_HINT",
    "Communicator",
    "DistributedSampler",
    "LocalCommunicator",
    "MPICommunicator",
    "RankFailureError",
    "init",
    "launched_world_size",
    "shard_indices",
]
