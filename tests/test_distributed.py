"""whitebox.distributed: sharding and buckets in one process; the collectives with 2 MPI ranks.

The 2-rank tests start ``mpiexec -n 2`` on tests/_distributed_worker.py (one
launch for every collective, one per failure mode) and skip, with the install
hint, where mpi4py or mpiexec is missing.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import _distributed_worker as worker
import numpy as np
import pytest

from whitebox import backend, distributed
from whitebox.data.loader import DataLoader
from whitebox.distributed.buckets import flatten, plan_buckets, unflatten
from whitebox.nn.module import Parameter

ROOT = Path(__file__).resolve().parents[1]
WORKER = Path(worker.__file__)


# ---- the sampler --------------------------------------------------------------------------
@pytest.mark.parametrize("n", [12, 13])
@pytest.mark.parametrize("world", [1, 2, 3, 5])
def test_shards_are_disjoint_equal_and_cover_the_epoch(n: int, world: int) -> None:
    shards = [distributed.shard_indices(n, r, world, seed=4, epoch=1) for r in range(world)]
    assert len({len(s) for s in shards}) == 1 and len(shards[0]) == -(-n // world)
    every = np.concatenate(shards)
    assert set(every.tolist()) == set(range(n))
    assert len(every) - len(set(every.tolist())) == (-n) % world  # only the padding repeats
    dropped = [distributed.shard_indices(n, r, world, 4, 1, drop_last=True) for r in range(world)]
    kept = np.concatenate(dropped)
    assert len(kept) == len(set(kept.tolist())) == n - n % world


def test_sampler_epoch_reshuffles_and_matches_the_dataloader_order() -> None:
    sampler = distributed.DistributedSampler(20, 0, 1, seed=9)
    first = sampler.indices()
    sampler.set_epoch(1)
    assert not np.array_equal(first, sampler.indices())
    np.testing.assert_array_equal(first, np.random.default_rng([9, 0]).permutation(20))
    assert list(sampler) == sampler.indices().tolist() and len(sampler) == 20

    class Data:  # the two fields the loader reads for its order
        images = np.arange(20, dtype=np.uint8).reshape(20, 1, 1, 1)
        labels = np.arange(20)
        image_shape = (1, 1, 1)
        mean, std = (0.0,), (1.0,)

        def __len__(self) -> int:
            return 20

    loader = DataLoader(Data(), batch_size=20, seed=9, normalize=False)  # type: ignore[arg-type]
    _, labels = next(iter(loader))
    np.testing.assert_array_equal(labels, first)


def test_rank_batches_of_b_over_w_make_the_global_batch() -> None:
    n, B, W = 24, 8, 4
    order = distributed.shard_indices(n, 0, 1, seed=2, epoch=3)
    shards = [distributed.shard_indices(n, r, W, seed=2, epoch=3) for r in range(W)]
    b = B // W
    for t in range(n // B):
        union = np.concatenate([s[t * b : (t + 1) * b] for s in shards])
        assert sorted(union.tolist()) == sorted(order[t * B : (t + 1) * B].tolist())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n": 0, "rank": 0, "world_size": 1}, "n must be"),
        ({"n": 5, "rank": 2, "world_size": 2}, "rank must be"),
        ({"n": 5, "rank": 0, "world_size": 0}, "world_size must be"),
        ({"n": 1, "rank": 0, "world_size": 2, "drop_last": True}, "leaves no sample"),
    ],
)
def test_shard_indices_rejects_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        distributed.shard_indices(**kwargs)


# ---- buckets and the one-process group ---------------------------------------------------
def test_buckets_group_by_dtype_under_the_cap_and_round_trip() -> None:
    rng = np.random.default_rng(0)
    arrays = [
        rng.standard_normal(s).astype(d)
        for s, d in [((3, 4), "f4"), ((5,), "f8"), ((2,), "f4"), ((9,), "f4")]
    ]
    plan = plan_buckets(arrays, bucket_bytes=56)  # 48 + 8 bytes fit; the 36-byte one opens a new bucket
    assert plan == [[0, 2], [1], [3]]
    for bucket in plan:
        assert len({arrays[i].dtype for i in bucket}) == 1
        parts = unflatten(flatten([arrays[i] for i in bucket]), [arrays[i].shape for i in bucket])
        for i, part in zip(bucket, parts, strict=True):
            np.testing.assert_array_equal(part, arrays[i])
    with pytest.raises(ValueError, match="hold 3 elements"):
        unflatten(np.zeros(4), [(3,)])


def test_local_communicator_is_the_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MPI_LOCALNRANKS", "SLURM_NTASKS"):
        monkeypatch.delenv(var, raising=False)
    comm = distributed.init("cpu")
    assert isinstance(comm, distributed.LocalCommunicator)
    assert (comm.rank, comm.world_size, comm.is_root) == (0, 1, True)
    p = Parameter(np.ones(3, dtype=np.float32))
    p.grad = np.arange(3, dtype=np.float32)
    with comm.guard():
        comm.broadcast_parameters([p])
        comm.allreduce_gradients([p])
        comm.barrier()
    np.testing.assert_array_equal(p.grad, [0, 1, 2])
    np.testing.assert_array_equal(comm.allreduce_sum([1.5, 2]), [1.5, 2])
    assert comm.local_batch_size(8) == 8
    with pytest.raises(RuntimeError, match="fails on its own"), comm.guard():
        raise RuntimeError("fails on its own")


def test_launched_without_mpi4py_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PMI_SIZE", "2")
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # makes `import mpi4py` fail
    with pytest.raises(ImportError, match=re.escape("pip install -e '.[distributed]'")):
        distributed.init("cpu")


# ---- two MPI ranks ----------------------------------------------------------------------------
def _mpiexec() -> str:
    pytest.importorskip("mpi4py", reason=f"mpi4py is not installed: {distributed.INSTALL_HINT}")
    exe = shutil.which(
        "mpiexec", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    )
    if exe is None:
        pytest.skip(f"mpiexec is not on the PATH: {distributed.INSTALL_HINT}")
    return exe


def _launch(
    scenario: str, outdir: Path, timeout: float = 20.0, device: str = "cpu"
) -> tuple[subprocess.CompletedProcess, float]:
    env = os.environ | {
        "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        "OPENBLAS_NUM_THREADS": "1",
        "WB_TEST_TIMEOUT": str(timeout),
        "WB_TEST_DEVICE": device,
    }
    cmd = [_mpiexec(), "-n", "2", sys.executable, str(WORKER), scenario, str(outdir)]
    start = time.monotonic()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, check=False)
    return done, time.monotonic() - start


def _run_checks(outdir: Path, device: str) -> list[dict[str, np.ndarray]]:
    done, _ = _launch("checks", outdir, device=device)
    assert done.returncode == 0, done.stdout + done.stderr
    return [dict(np.load(outdir / f"rank{r}.npz")) for r in range(2)]


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, np.ndarray]]:
    return _run_checks(tmp_path_factory.mktemp("mpi"), "cpu")


def check_allreduce(ranks: list[dict[str, np.ndarray]]) -> None:
    contributions = [worker.rank_grads(r) for r in range(2)]
    for i, (shape, dtype, have) in enumerate(worker.GRAD_SPECS):
        for result in ranks:
            if not have:
                assert result[f"grad{i}_none"], f"gradient {i} had no gradient anywhere and must stay None"
                continue
            expected = sum(c[i] if c[i] is not None else 0 for c in contributions) / 2
            assert result[f"grad{i}"].dtype == dtype and result[f"grad{i}"].shape == shape
            np.testing.assert_allclose(result[f"grad{i}"], expected, rtol=1e-6)


def check_broadcast(ranks: list[dict[str, np.ndarray]]) -> None:
    reference = worker.make_mlp(0).state_dict()
    for name, value in reference.items():
        for result in ranks:
            np.testing.assert_array_equal(result[f"bcast.{name}"], value)


def check_sgd(ranks: list[dict[str, np.ndarray]], rtol: float) -> None:
    one = worker.train_steps(distributed.LocalCommunicator(), steps=5, global_batch=8).state_dict()
    start = worker.make_mlp(100).state_dict()
    for name, value in one.items():
        assert not np.allclose(value, start[name])  # the steps moved the weights
        np.testing.assert_array_equal(ranks[0][f"sgd.{name}"], ranks[1][f"sgd.{name}"])
        np.testing.assert_allclose(ranks[0][f"sgd.{name}"], value, rtol=rtol, atol=rtol / 10)


def test_allreduce_averages_mixed_buckets(ranks: list[dict[str, np.ndarray]]) -> None:
    check_allreduce(ranks)


def test_broadcast_makes_replicas_equal_to_rank_0(ranks: list[dict[str, np.ndarray]]) -> None:
    check_broadcast(ranks)


def test_metric_sums_and_shards_across_ranks(ranks: list[dict[str, np.ndarray]]) -> None:
    for result in ranks:
        np.testing.assert_array_equal(result["metrics"], [3.0, 4.0])
    np.testing.assert_array_equal(ranks[0]["shard"], distributed.shard_indices(11, 0, 2, 5, 2))
    covered = np.concatenate([ranks[0]["shard"], ranks[1]["shard"]])
    assert set(covered.tolist()) == set(range(11))


def test_two_ranks_with_half_batches_follow_one_rank_with_the_full_batch(
    ranks: list[dict[str, np.ndarray]],
) -> None:
    check_sgd(ranks, rtol=1e-5)


def test_a_barrier_can_wait_longer_than_the_timeout(tmp_path: Path) -> None:
    done, _ = _launch("slow", tmp_path, timeout=0.4)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(
    ("scenario", "expected"),
    [
        ("hang", r"rank\(s\) 1 never reached it"),
        ("raise", r"rank 1 of 2 failed: ValueError: rank 1 broke on purpose"),
        ("kill", None),  # the launcher reports the pid; the root's description maps it to rank 1
    ],
)
def test_a_failing_rank_ends_every_rank_and_is_named(
    scenario: str, expected: str | None, tmp_path: Path
) -> None:
    done, seconds = _launch(scenario, tmp_path, timeout=2.0)
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert seconds < 30, f"{scenario}: took {seconds:.0f} s"
    if expected is None:
        pid = re.search(r"rank 1 pid (\d+)", output)
        assert pid is not None, output
        assert re.search(rf"PID {pid.group(1)}\b", output), output
    else:
        assert re.search(expected, output), output


@pytest.mark.cuda
def test_nccl_collectives_on_two_gpus(tmp_path: Path) -> None:
    if not backend.cuda_available():
        pytest.skip("cuda: CuPy or a GPU is not available")
    if backend.cupy().cuda.runtime.getDeviceCount() < 2:
        pytest.skip("NCCL with 2 ranks needs 2 GPUs (one per rank)")
    ranks = _run_checks(tmp_path, "cuda")
    check_allreduce(ranks)
    check_broadcast(ranks)
    check_sgd(ranks, rtol=1e-4)  # GPU and CPU kernels round differently


@pytest.mark.parametrize("backend_name", ["mpi", pytest.param("nccl", marks=pytest.mark.cuda)])
def test_a_backend_alone_in_a_group_of_one(backend_name: str, tmp_path: Path) -> None:
    """Every call of a backend, in a group of one process (for NCCL: one GPU is enough)."""
    _mpiexec()
    if backend_name == "nccl" and not backend.cuda_available():
        pytest.skip("cuda: CuPy or a GPU is not available")
    env = os.environ | {"PYTHONPATH": str(ROOT), "OPENBLAS_NUM_THREADS": "1"}
    for var in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MPI_LOCALNRANKS", "SLURM_NTASKS"):
        env.pop(var, None)
    cmd = [sys.executable, str(WORKER), f"{backend_name}-alone", str(tmp_path)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    result = dict(np.load(tmp_path / "rank0.npz"))
    for i, g in enumerate(worker.rank_grads(0)):  # the average over one rank is its own gradient
        if g is None:
            assert result[f"grad{i}_none"]
        else:
            np.testing.assert_allclose(result[f"grad{i}"], g, rtol=1e-6)
    check_broadcast([result])  # a group of one: rank 0's seed-0 weights stay
    one = worker.train_steps(distributed.LocalCommunicator(), steps=5, global_batch=8).state_dict()
    for name, value in one.items():
        np.testing.assert_allclose(result[f"sgd.{name}"], value, rtol=1e-4, atol=1e-5)
