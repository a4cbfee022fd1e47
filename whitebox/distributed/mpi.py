"""The MPI backend (mpi4py): all-reduce and broadcast of NumPy arrays between processes.

Each collective is started non-blocking (``Iallreduce``, ``Ibcast``) and
polled until it completes or ``timeout`` seconds pass. To name the culprit
when one does not complete, each rank first tells every other rank that it
has reached collective number k (a tiny point-to-point "arrival" message);
past the deadline, a waiting rank reads the arrivals it has received and
reports the ranks whose last one is older than k: they died or hang.

Launch with ``mpiexec -n W python ...``; the arrays must live on the CPU.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any, NoReturn

import numpy as np

from whitebox.distributed.comm import DEFAULT_BUCKET_MB, DEFAULT_TIMEOUT, Communicator, RankFailureError

INSTALL_HINT = "pip install -e '.[distributed]'  (mpi4py and the MPICH wheel)"
_ARRIVAL_TAG = 7301


def import_mpi() -> Any:
    """``mpi4py.MPI``, or an ImportError that says how to install it."""
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise ImportError(f"distributed training needs mpi4py: {INSTALL_HINT}") from exc
    return MPI


class MPICommunicator(Communicator):
    """Collectives over an MPI communicator (by default ``MPI.COMM_WORLD``) on CPU arrays."""

    backend_name = "mpi"

    def __init__(
        self,
        comm: Any = None,
        device: str = "cpu",
        timeout: float = DEFAULT_TIMEOUT,
        bucket_mb: float = DEFAULT_BUCKET_MB,
    ) -> None:
        MPI = import_mpi()
        self._MPI = MPI
        # A private copy, so that our messages never match the caller's own.
        self._comm = (MPI.COMM_WORLD if comm is None else comm).Dup()
        super().__init__(self._comm.Get_rank(), self._comm.Get_size(), device, timeout, bucket_mb)
        self._comm.Set_errhandler(MPI.ERRORS_RETURN)  # errors raise MPI.Exception instead of aborting
        self._seq = 0  # number of the collective in progress, the same on every rank
        self._seen = np.zeros(self.world_size, dtype=np.int64)  # last arrival received from each rank
        self._seen[self.rank] = np.iinfo(np.int64).max
        self._sends: list[tuple[Any, np.ndarray]] = []  # arrival messages not yet known delivered
        self._recv = np.zeros(1, dtype=np.int64)
        # Where each rank runs: a launcher that reports a dead process by its pid can then be read.
        self.processes: list[tuple[int, str]] = self._comm.allgather((os.getpid(), MPI.Get_processor_name()))

    def describe(self) -> str:
        """One line naming the backend and each rank's process id and host, for the root's log."""
        ranks = ", ".join(f"rank {r} pid {pid} on {host}" for r, (pid, host) in enumerate(self.processes))
        return f"{self.backend_name}, {self.world_size} ranks: {ranks}"

    # ---- arrivals and deadlines ------------------------------------------------------
    def _arrive(self) -> None:
        """Start collective number k+1: tell every other rank we reached it."""
        self._seq += 1
        self._sends = [(req, buf) for req, buf in self._sends if not req.Test()]
        buf = np.array([self._seq], dtype=np.int64)
        for r in range(self.world_size):
            if r != self.rank:
                self._sends.append((self._comm.Isend(buf, dest=r, tag=_ARRIVAL_TAG), buf))

    def _drain_arrivals(self) -> None:
        status = self._MPI.Status()
        while self._comm.Iprobe(source=self._MPI.ANY_SOURCE, tag=_ARRIVAL_TAG, status=status):
            src = status.Get_source()
            self._comm.Recv(self._recv, source=src, tag=_ARRIVAL_TAG)
            self._seen[src] = max(self._seen[src], self._recv[0])

    def _failure(self, what: str, reason: str) -> RankFailureError:
        try:
            self._drain_arrivals()
        except self._MPI.Exception:  # the transport itself is broken: report what we know
            pass
        missing = [r for r in range(self.world_size) if self._seen[r] < self._seq]
        if missing:
            who = ", ".join(map(str, missing))
            blame = f"rank(s) {who} never reached it (dead, hung, or slower than the timeout)"
        else:
            blame = "every rank reached it, so the transport failed"
        message = f"rank {self.rank}: {what} (collective #{self._seq}) {reason}; {blame}"
        return RankFailureError(message, missing)

    def _wait(self, requests: list[Any], what: str) -> None:
        """Poll ``requests`` until all complete; past the deadline raise RankFailureError."""
        deadline = time.monotonic() + self.timeout
        delay = 0.0
        while True:
            try:
                if self._MPI.Request.Testall(requests):
                    break
            except self._MPI.Exception as exc:
                raise self._failure(what, f"failed in MPI ({exc})") from exc
            if time.monotonic() > deadline:
                raise self._failure(what, f"did not complete within {self.timeout:g} s")
            time.sleep(delay)
            delay = min(2 * delay + 1e-5, 1e-3)
        self._drain_arrivals()

    # ---- data movement -------------------------------------------------------------
    def _mpi_allreduce_sum(self, buffers: list[np.ndarray], what: str) -> None:
        self._arrive()
        requests = [self._comm.Iallreduce(self._MPI.IN_PLACE, b, op=self._MPI.SUM) for b in buffers]
        self._wait(requests, what)

    def _allreduce_sum_(self, buffers: list[Any], what: str) -> None:
        self._mpi_allreduce_sum(buffers, what)

    def _broadcast_(self, buffers: list[Any], root: int, what: str) -> None:
        self._arrive()
        requests = [self._comm.Ibcast(b, root=root) for b in buffers]
        self._wait(requests, what)

    def _host_allreduce_sum(self, values: np.ndarray, what: str) -> np.ndarray:
        out = np.ascontiguousarray(values).copy()
        self._mpi_allreduce_sum([out], what)  # host data goes over MPI whatever moves the gradients
        return out

    # ---- failure and shutdown --------------------------------------------------------
    def abort(self, message: str, code: int = 1) -> NoReturn:
        """Print ``message`` and end every rank of the job (``MPI_Abort``)."""
        print(message, file=sys.stderr, flush=True)
        sys.stdout.flush()
        self._comm.Abort(code)
        raise SystemExit(code)  # not reached: MPI_Abort does not return

    def close(self) -> None:
        """Free the private communicator (collective: every rank calls it)."""
        if self._comm != self._MPI.COMM_NULL:
            self.barrier()
            self._comm.Free()
