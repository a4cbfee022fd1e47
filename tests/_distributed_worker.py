"""What each rank runs in tests/test_distributed.py: ``mpiexec -n 2 python this.py SCENARIO OUTDIR``.

``checks`` runs every collective once (on the device WB_TEST_DEVICE, default
cpu) and saves this rank's results to OUTDIR/rank<r>.npz; ``mpi-alone`` and
``nccl-alone`` do the same through MPI or NCCL in one process (no mpiexec);
``slow`` makes rank 1 late for a barrier with a longer timeout; ``hang``,
``raise`` and ``kill`` make rank 1 fail in one way each, to see every rank
end. The helpers are also imported by the tests, which compute the expected
results in one process.
"""

from __future__ import annotations

import os
import signal
import sys
import time

import numpy as np

import whitebox as wb
from whitebox import backend, distributed, nn
from whitebox.functional import mse_loss
from whitebox.nn.module import Parameter
from whitebox.optim import SGD

# (shape, dtype, which ranks have a gradient): mixed shapes and dtypes; one gradient missing on
# rank 1 only (a zero there), one missing everywhere (stays None)
GRAD_SPECS = [
    ((3, 4), np.float32, (0, 1)),
    ((5,), np.float64, (0, 1)),
    ((2, 2, 2), np.float32, (0, 1)),
    ((7,), np.float32, (0,)),
    ((4,), np.float32, ()),
    ((1,), np.float64, (0, 1)),
]
TINY_BUCKET_MB = 40 / 2**20  # 40 bytes: several buckets per dtype


def rank_grads(rank: int) -> list[np.ndarray | None]:
    """The gradients rank ``rank`` contributes to the all-reduce check."""
    rng = np.random.default_rng([42, rank])
    grads = [rng.standard_normal(shape).astype(dtype) for shape, dtype, _ in GRAD_SPECS]
    return [g if rank in spec[2] else None for g, spec in zip(grads, GRAD_SPECS, strict=True)]


def make_mlp(seed: int) -> nn.Module:
    wb.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 2))


def regression_data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    x = rng.standard_normal((32, 6)).astype(np.float32)
    y = np.sin(x[:, :2] + x[:, 2:4]).astype(np.float32)
    return x, y


def train_steps(comm: distributed.Communicator, steps: int, global_batch: int) -> nn.Module:
    """``steps`` SGD steps of an MLP on sharded data, gradients averaged over the ranks by ``comm``."""
    model = make_mlp(100 + comm.rank).to(comm.device)  # different on each rank until the broadcast
    comm.broadcast_parameters(model)
    opt = SGD(model.parameters(), lr=0.1, momentum=0.9)
    x, y = regression_data()
    b = comm.local_batch_size(global_batch)
    sampler = distributed.DistributedSampler(len(x), comm.rank, comm.world_size, seed=3)
    step, epoch = 0, 0
    while step < steps:
        sampler.set_epoch(epoch)
        idx = sampler.indices()
        for i in range(len(idx) // b):
            if step == steps:
                break
            batch = idx[i * b : (i + 1) * b]
            opt.zero_grad()
            target = backend.to_device(y[batch], comm.device)
            mse_loss(model(wb.Tensor(x[batch], device=comm.device)), target).backward()
            comm.allreduce_gradients(model.parameters())
            opt.step()
            step += 1
        epoch += 1
    return model


def checks(comm: distributed.Communicator, outdir: str) -> None:
    out: dict[str, np.ndarray] = {}
    # all-reduce of gradients in small mixed-dtype buckets
    dev = comm.device
    params = [Parameter(np.zeros(shape), dtype=dtype, device=dev) for shape, dtype, _ in GRAD_SPECS]
    for p, g in zip(params, rank_grads(comm.rank), strict=True):
        p.grad = None if g is None else backend.to_device(g, dev)
    tiny = type(comm)(timeout=comm.timeout, bucket_mb=TINY_BUCKET_MB)
    tiny.allreduce_gradients(params)
    for i, p in enumerate(params):
        out[f"grad{i}"] = np.array([]) if p.grad is None else backend.to_numpy(p.grad)
        out[f"grad{i}_none"] = np.array(p.grad is None)
    tiny.close()
    # broadcast: replicas built from different seeds end equal to rank 0's
    model = make_mlp(comm.rank).to(dev)
    comm.broadcast_parameters(model)
    for name, a in model.state_dict().items():
        out[f"bcast.{name}"] = backend.to_numpy(a)
    # host sums and the sampler as each rank sees it
    out["metrics"] = comm.allreduce_sum([comm.rank + 1.0, 2.0])
    out["shard"] = distributed.DistributedSampler(11, comm.rank, comm.world_size, seed=5, epoch=2).indices()
    # K SGD steps with batch 8 split over the ranks
    for name, a in train_steps(comm, steps=5, global_batch=8).state_dict().items():
        out[f"sgd.{name}"] = backend.to_numpy(a)
    np.savez(os.path.join(outdir, f"rank{comm.rank}.npz"), **out)


def main() -> None:
    scenario, outdir = sys.argv[1], sys.argv[2]
    device, timeout = os.environ.get("WB_TEST_DEVICE", "cpu"), float(os.environ.get("WB_TEST_TIMEOUT", "20"))
    if scenario == "mpi-alone":  # the MPI backend in a group of one process (no mpiexec)
        comm: distributed.Communicator = distributed.MPICommunicator(timeout=timeout)
        scenario = "checks"
    elif scenario == "nccl-alone":  # every NCCL call once, in a group of one GPU (no mpiexec)
        from whitebox.distributed.nccl import NCCLCommunicator

        comm = NCCLCommunicator(timeout=timeout)
        scenario = "checks"
    else:
        comm = distributed.init(device, timeout=timeout)
    if comm.is_root:
        print(comm.describe(), flush=True)
    with comm.guard():
        if scenario == "checks":
            checks(comm, outdir)
        elif scenario == "slow":  # rank 1 is late by more than the timeout, but the barrier allows it
            if comm.rank == 1:
                time.sleep(4 * comm.timeout)
            comm.barrier(timeout=20 * comm.timeout)
            comm.timeout = 20.0  # a generous deadline again for close() on a loaded machine
        else:  # hang, raise, kill: rank 1 fails before a step's all-reduce
            if comm.rank == 1 and scenario == "hang":
                time.sleep(120)
            elif comm.rank == 1 and scenario == "raise":
                raise ValueError("rank 1 broke on purpose")
            elif comm.rank == 1 and scenario == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            model = make_mlp(0)
            model(wb.Tensor(np.ones((1, 6), dtype=np.float32))).sum().backward()
            comm.allreduce_gradients(model.parameters())
    comm.close()


if __name__ == "__main__":
    main()
