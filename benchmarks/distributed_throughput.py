"""Throughput of data-parallel training: 1 rank against 2 ranks, and the share of a step spent communicating.

Each configuration runs ``mpiexec -n W python benchmarks/distributed_throughput.py --worker``: every
rank builds the image task of a run (CRATE ``mnist_tiny`` on mnist5k, random crops on) for its
share of each epoch, with the global batch ``--batch`` split into B / W per rank, broadcasts rank
0's weights, then times ``--steps`` training steps after ``--warmup`` untimed ones. A step is
split into

    data     drawing and augmenting this rank's batch (``task.batches``),
    compute  forward, loss and backward,
    wait     a barrier before the all-reduce: the time a rank waits for the slower one (uneven
             load, on a shared machine above all); it costs one tiny collective a step,
    comm     ``comm.allreduce_gradients`` once every rank has arrived (bucketed all-reduce, / W),
    update   gradient clipping and the AdamW step,

each averaged over the ranks (the shares are of their sum); samples/s = B x steps / (rank 0's wall
time of the timed steps).
One BLAS thread per rank (OPENBLAS_NUM_THREADS=1), so 2 ranks use the 2 cores one rank leaves
idle. Every configuration is repeated ``--repeats`` times, alternating 1 and 2 ranks; the table
shows the mean and the range.

Usage::

    python benchmarks/distributed_throughput.py                    # 1 vs 2 ranks, batch 64
    python benchmarks/distributed_throughput.py --ranks 1 2 4 --batch 128 --repeats 3
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def worker(args: argparse.Namespace) -> None:
    """One rank: time the steps of the real task and print rank 0's JSON summary."""
    from whitebox import backend, distributed
    from whitebox.optim import clip_grad_norm_
    from whitebox.train import classify, task
    from whitebox.train.config import build_optimizer

    comm = distributed.init("cpu", timeout=120)
    config = classify.image_config("crate", args.preset, args.data, batch_size=args.batch)
    with comm.guard(), tempfile.TemporaryDirectory() as tmp:
        run = task.make_task(config, Path(tmp), comm)
        backend.manual_seed(config.seed)
        model = run.build_model()
        comm.broadcast_parameters(model)
        optimizer = build_optimizer(config, model)
        params = model.parameters()
        times = dict.fromkeys(("data", "compute", "wait", "comm", "update"), 0.0)
        batches = (batch for epoch in itertools.count() for batch in run.batches(epoch))
        comm.barrier()
        for i in range(args.warmup + args.steps):
            if i == args.warmup:
                times = dict.fromkeys(times, 0.0)
                comm.barrier()
                start = time.perf_counter()
            t0 = time.perf_counter()
            batch = next(batches)
            t1 = time.perf_counter()
            loss, _ = run.loss(model, batch)
            optimizer.zero_grad()
            loss.backward()
            t2 = time.perf_counter()
            comm.barrier()
            t2b = time.perf_counter()
            comm.allreduce_gradients(params)
            t3 = time.perf_counter()
            clip_grad_norm_(params, config.clip_norm)
            optimizer.step()
            t4 = time.perf_counter()
            for key, dt in zip(times, (t1 - t0, t2 - t1, t2b - t2, t3 - t2b, t4 - t3), strict=True):
                times[key] += dt
        wall = time.perf_counter() - start
        mean = comm.allreduce_sum(list(times.values())) / comm.world_size / args.steps
    if comm.is_root:
        summary = {
            "ranks": comm.world_size,
            "batch": args.batch,
            "samples_per_s": args.batch * args.steps / wall,
        }
        summary.update({f"{k}_ms": 1000 * v for k, v in zip(times, mean, strict=True)})
        print(json.dumps(summary), flush=True)
    comm.close()


def launch(ranks: int, args: argparse.Namespace) -> dict:
    mpiexec = shutil.which("mpiexec", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    if mpiexec is None:
        raise SystemExit("mpiexec not found: pip install -e '.[distributed]'")
    cmd = [mpiexec, "-n", str(ranks), sys.executable, __file__, "--worker", "--batch", str(args.batch)]
    cmd += [
        "--steps",
        str(args.steps),
        "--warmup",
        str(args.warmup),
        "--preset",
        args.preset,
        "--data",
        args.data,
    ]
    env = os.environ | {"PYTHONPATH": str(ROOT), "OPENBLAS_NUM_THREADS": "1"}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    p.add_argument("--batch", type=int, default=64, help="global batch (default 64)")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--preset", default="mnist_tiny")
    p.add_argument("--data", default="mnist5k")
    args = p.parse_args()
    if args.worker:
        worker(args)
        return
    print(f"CRATE {args.preset} on {args.data}, global batch {args.batch}, {args.steps} timed steps, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the start")  # fmt: skip
    results: dict[int, list[dict]] = {r: [] for r in args.ranks}
    for _ in range(args.repeats):
        for ranks in args.ranks:
            results[ranks].append(launch(ranks, args))
    keys = ("samples_per_s", "data_ms", "compute_ms", "wait_ms", "comm_ms", "update_ms")
    print(f"{'ranks':>5}  " + "  ".join(f"{k:>20}" for k in keys) + "  wait share  comm share")
    for ranks, rows in results.items():
        cells = []
        for k in keys:
            v = np.array([r[k] for r in rows])
            cells.append(f"{v.mean():7.1f} [{v.min():.1f}, {v.max():.1f}]".rjust(20))
        step = sum(np.mean([r[k] for r in rows]) for k in keys[1:])
        wait, comm = (np.mean([r[k] for r in rows]) / step for k in ("wait_ms", "comm_ms"))
        print(f"{ranks:>5}  " + "  ".join(cells) + f"  {wait:10.1%}  {comm:10.1%}")
    print(f"load average {os.getloadavg()[0]:.1f} at the end (the machine is shared: timings are noisy)")


if __name__ == "__main__":
    main()
