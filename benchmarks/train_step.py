"""Time one CRATE training step in whitebox against the same step in PyTorch.

The model: CRATE with dim 192, depth 6, 6 heads, patch 4 on 28x28x1 images, 10 classes
(``crate_mnist_small``), batch 128, float32. One step = forward, cross-entropy, backward,
AdamW update (lr 1e-3, weight decay 0.05), with the gradients cleared first. The PyTorch
model is the official CRATE code (Ma-Lab-Berkeley/CRATE, einops replaced by reshapes),
started from the same weights; its optimizer is ``torch.optim.AdamW`` with its defaults.

Timing: both steps run in this process, alternating (whitebox, torch, whitebox, ...) after
warm-up, ``--repeats`` times each, each after ``--pause`` idle seconds (so that neither
framework's spinning worker threads slow the other); we report medians and the ratio
whitebox / PyTorch. On
the CPU both use the same number of threads: OpenBLAS's pool (NumPy, read and set with
threadpoolctl) and whitebox's own threads (``whitebox.host_threads``, which split the work into
row blocks and hold BLAS to one thread while they do) beside torch.set_num_threads; the plain
GEMM it is compared with runs on that many BLAS threads. On the GPU (``--device cuda``, needs CuPy and
torch.cuda) each timed step ends with a device synchronize.

Peak memory: each framework runs the step in a fresh subprocess, after its model, data
and optimizer exist. CPU: the process's peak resident set (VmHWM) is reset through
/proc/self/clear_refs just before the steps and read after them, minus the resident set at
that moment: the extra memory the steps needed (activations, gradients, optimizer state,
temporaries, including allocator overhead), measured the same way for both and independent
of which allocator or library made the allocation. (Without clear_refs it falls back to
ru_maxrss, which then also counts earlier peaks.) For whitebox, tracemalloc's peak of NumPy's
own allocations is printed too. GPU: the caching allocators' reserved bytes (CuPy's memory
pool total, torch.cuda.max_memory_reserved), again minus what was held before the steps.

Throughput: the matrix products of the step (forward, and twice that backward) counted
analytically, divided by the step time, against a plain float32 GEMM on the same device,
of the model's own shape (B*N x dim) @ (dim x dim) and of a large square one.

Usage::

    python benchmarks/train_step.py                 # CPU, 20 timed steps each
    python benchmarks/train_step.py --repeats 50 --threads 2
    python benchmarks/train_step.py --device cuda --model crate_t32
    python benchmarks/train_step.py --profile 5      # per-op time of 5 whitebox steps
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

FRAMEWORKS = ("whitebox", "pytorch")
CFG = {
    "image_size": 28,
    "patch_size": 4,
    "num_classes": 10,
    "dim": 192,
    "depth": 6,
    "heads": 6,
    "channels": 1,
}
# --model: the benchmark model above, or CRATE-T (dim 384, depth 12, 6 heads) on 32x32x3 images
# with 4x4 patches (64 tokens), the GPU target of the gpu-check.
MODELS = {
    "mnist_small": dict(CFG),
    "crate_t32": {**CFG, "image_size": 32, "channels": 3, "dim": 384, "depth": 12, "heads": 6},
}
LR, WEIGHT_DECAY = 1e-3, 0.05


# ---- the two steps ---------------------------------------------------------------------------


def batch(size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    img = rng.standard_normal((size, CFG["channels"], CFG["image_size"], CFG["image_size"]))
    return img.astype(np.float32), rng.integers(0, CFG["num_classes"], size)


def whitebox_step(device: str, size: int) -> tuple[Callable[[], float], Any]:
    """(step, model): step() runs one training step and returns the loss."""
    import whitebox as wb
    import whitebox.functional as F
    from whitebox.crate import CRATE
    from whitebox.optim import AdamW

    wb.manual_seed(0)
    model = CRATE(**CFG).to(device)
    opt = AdamW(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    img, y = batch(size)
    x, t = wb.Tensor(img, device=device), wb.Tensor(y, device=device)

    def step() -> float:
        opt.zero_grad()
        loss = F.cross_entropy(model(x), t)
        loss.backward()
        opt.step()
        return loss.item()

    return step, model


def torch_crate() -> Any:
    """The official CRATE classifier in PyTorch, at the benchmark's size."""
    from whitebox.torch_reference import TorchCRATE

    return TorchCRATE(**CFG)


def torch_step(device: str, size: int, weights: Any = None) -> Callable[[], float]:
    import torch

    model = torch_crate()
    if weights is not None:
        model.load_state_dict(weights)
    model = model.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    img, y = batch(size)
    x, t = torch.from_numpy(img).to(device), torch.from_numpy(y).to(device)

    def step() -> float:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), t)
        loss.backward()
        opt.step()
        return loss.item()

    return step


# ---- threads, flops, timing ------------------------------------------------------------------


def set_threads(n: int | None) -> int:
    """Use ``n`` threads in NumPy's BLAS, whitebox's row blocks and torch (default: NumPy's current
    BLAS count); returns it. (whitebox's first split holds BLAS to one thread.)"""
    from threadpoolctl import threadpool_info, threadpool_limits

    from whitebox import host_threads

    blas = [p for p in threadpool_info() if p["user_api"] == "blas" and "numpy" in p["filepath"]]
    n = n or (blas[0]["num_threads"] if blas else os.cpu_count() or 1)
    threadpool_limits(n, user_api="blas")
    host_threads.set_num_threads(n)
    try:
        import torch

        torch.set_num_threads(n)
    except ImportError:
        pass
    return n


def step_gflop(size: int, framework: str) -> float:
    """GFLOP of the matrix products one training step executes (2 m k n per product).

    Per layer, with R = tokens in the batch and d = dim: whitebox's ISTA is one R x d x d
    product forward and two backward (plus d^3 work on D); the official PyTorch code spells
    it as three products forward and six backward. The rest is common: qkv and to_out (one
    product forward, two backward each), attention (two batched products forward; backward
    three in whitebox's fused op, four in PyTorch's autograd).
    """
    p, d, depth, C = CFG["patch_size"], CFG["dim"], CFG["depth"], CFG["channels"]
    n = (CFG["image_size"] // p) ** 2
    R = size * (n + 1)
    row = 2 * R * d * d  # one (R x d) @ (d x d) product
    att = 2 * size * (n + 1) ** 2 * d  # one batched product over all heads (N x N x p per head)
    if framework == "whitebox":
        layer = 6 * row + 3 * row + 4 * d**3 + 5 * att  # qkv + to_out, ISTA, attention
    else:
        layer = 6 * row + 9 * row + 6 * att
    embed = 3 * 2 * size * n * C * p * p * d + 3 * 2 * size * d * CFG["num_classes"]
    return (depth * layer + embed) / 1e9


def gemm_gflops(device: str, m: int, k: int, n: int, repeats: int = 10) -> float:
    """Median GFLOP/s of a float32 (m x k) @ (k x n) product with NumPy (or CuPy)."""
    if device == "cuda":
        import cupy as xp

        sync = xp.cuda.Device().synchronize
    else:
        xp, sync = np, lambda: None
    rng = np.random.default_rng(0)
    a = xp.asarray(rng.standard_normal((m, k), dtype=np.float32))
    b = xp.asarray(rng.standard_normal((k, n), dtype=np.float32))
    a @ b
    sync()
    times = []
    for _ in range(repeats):
        tic = time.perf_counter()
        a @ b
        sync()
        times.append(time.perf_counter() - tic)
    return 2 * m * k * n / float(np.median(times)) / 1e9


def alternate(
    steps: dict[str, Callable[[], float]], sync: Callable[[], None], warmup: int, repeats: int, pause: float
) -> dict[str, list[float]]:
    """Seconds per step for each entry, measured in turn, ``repeats`` rounds after ``warmup``.

    Each timed step starts ``pause`` seconds after the previous one ended, so that the thread
    pools of the framework that ran before (OpenBLAS workers spin for a while after each
    product, OpenMP's too) are idle again and do not take cores from the one being timed.
    """
    for _ in range(warmup):
        for fn in steps.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, fn in steps.items():
            sync()
            time.sleep(pause)
            tic = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - tic)
    return times


# ---- memory, in a subprocess ---------------------------------------------------------------------


def _rss_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def measure_memory(framework: str, device: str, size: int, steps: int, threads: int) -> dict[str, float]:
    """Run in a fresh process: build, then ``steps`` training steps; extra peak memory in MB."""
    set_threads(threads)
    step = whitebox_step(device, size)[0] if framework == "whitebox" else torch_step(device, size)
    out: dict[str, float] = {}
    if device == "cuda":
        if framework == "whitebox":
            import cupy

            pool = cupy.get_default_memory_pool()
            before = pool.total_bytes()
            for _ in range(steps):
                step()
            out["peak_mb"] = (pool.total_bytes() - before) / 2**20
        else:
            import torch

            before = torch.cuda.memory_reserved()
            torch.cuda.reset_peak_memory_stats()
            for _ in range(steps):
                step()
            out["peak_mb"] = (torch.cuda.max_memory_reserved() - before) / 2**20
        return out
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM (peak RSS) to the current RSS
        before, field = _rss_kb("VmRSS"), "VmHWM"
    except OSError:
        before, field = _rss_kb("VmRSS"), ""
    if framework == "whitebox":
        import tracemalloc

        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
    for _ in range(steps):
        step()
    peak = _rss_kb(field) if field else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out["peak_mb"] = (peak - before) / 1024
    if framework == "whitebox":
        out["tracemalloc_mb"] = (tracemalloc.get_traced_memory()[1] - base) / 2**20
        tracemalloc.stop()
    return out


def memory_in_subprocess(framework: str, args: argparse.Namespace, threads: int) -> dict[str, float]:
    cmd = [sys.executable, __file__, "--_memory", framework, "--device", args.device, "--model", args.model]
    cmd += ["--batch", str(args.batch), "--threads", str(threads)]
    res = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


# ---- main -----------------------------------------------------------------------------------------


def cuda_ready() -> str | None:
    """None when both CuPy and torch.cuda work, else why not."""
    from whitebox import backend

    if not backend.cuda_available():
        return "CuPy with a working GPU is not available"
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    if not torch.cuda.is_available():
        return "torch.cuda is not available"
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--pause", type=float, default=0.3, help="seconds idle before each timed step")
    parser.add_argument("--threads", type=int, default=None, help="BLAS/torch threads (default: NumPy's)")
    parser.add_argument("--memory-steps", type=int, default=3)
    parser.add_argument("--model", choices=sorted(MODELS), default="mnist_small")
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    parser.add_argument(
        "--profile", type=int, default=0, metavar="STEPS", help="per-op time profile of STEPS whitebox steps"
    )
    parser.add_argument("--_memory", choices=FRAMEWORKS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    CFG.update(MODELS[args.model])
    from whitebox import backend

    backend.tune_malloc()  # as the command line does, so the step is timed as users run it
    if args.profile:
        from op_profile import print_profile, profile_steps

        set_threads(args.threads)
        print_profile(profile_steps(whitebox_step(args.device, args.batch)[0], args.profile), args.batch)
        return

    threads = set_threads(args.threads)
    if args._memory:
        print(json.dumps(measure_memory(args._memory, args.device, args.batch, args.memory_steps, threads)))
        return
    if args.device == "cuda" and (why := cuda_ready()):
        print(f"skipping --device cuda: {why}")
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"model": args.model, "skipped": why}, f)
        return
    import torch

    from whitebox.interop import to_torch_state_dict

    wb_step, wb_model = whitebox_step(args.device, args.batch)
    th_step = torch_step(args.device, args.batch, to_torch_state_dict(wb_model))
    if args.device == "cuda":
        import cupy

        def sync() -> None:
            cupy.cuda.Device().synchronize()
            torch.cuda.synchronize()
    else:

        def sync() -> None:
            pass

    l_wb, l_th = wb_step(), th_step()  # the same weights and batch give the same first loss
    steps = {"whitebox": wb_step, "pytorch": th_step}
    times = alternate(steps, sync, args.warmup, args.repeats, args.pause)
    med = {k: float(np.median(v)) for k, v in times.items()}
    mem = {k: memory_in_subprocess(k, args, threads) for k in FRAMEWORKS}
    gflop = {k: step_gflop(args.batch, k) for k in FRAMEWORKS}
    rows = args.batch * ((CFG["image_size"] // CFG["patch_size"]) ** 2 + 1)
    big = 4096 if args.device == "cuda" else 2048
    with threadpool_limits(threads, user_api="blas"):  # whitebox held BLAS to one thread for its blocks
        gemm_model = gemm_gflops(args.device, rows, CFG["dim"], CFG["dim"])
        gemm_big = gemm_gflops(args.device, big, big, big)

    cpu = f"CPU, {threads} threads each (whitebox's blocks, one BLAS thread each; torch.set_num_threads)"
    dev = torch.cuda.get_device_name() if args.device == "cuda" else cpu
    print(f"CRATE train step: {CFG}, batch {args.batch}, float32, AdamW; {dev}")
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"numpy {np.__version__}, torch {torch.__version__}; {args.repeats} alternating repeats; load {load}"
    )
    print(f"first-step loss: whitebox {l_wb:.6f}, pytorch {l_th:.6f}")
    print(f"{'':10} {'median ms':>10} {'min ms':>8} {'GFLOP':>7} {'GFLOP/s':>8} {'peak MB':>8}")
    for k in FRAMEWORKS:
        cols = f"{1e3 * med[k]:>10.1f} {1e3 * min(times[k]):>8.1f} {gflop[k]:>7.2f} {gflop[k] / med[k]:>8.1f}"
        print(f"{k:10} {cols} {mem[k]['peak_mb']:>8.1f}")
    if "tracemalloc_mb" in mem["whitebox"]:
        print(f"whitebox NumPy allocations (tracemalloc peak): {mem['whitebox']['tracemalloc_mb']:.1f} MB")
    print("GFLOP: the matrix products each step executes (step_gflop); GFLOP/s: GFLOP / median")
    lib = "CuPy" if args.device == "cuda" else "NumPy"
    shape = f"({rows}x{CFG['dim']})@({CFG['dim']}x{CFG['dim']})"
    print(f"plain {lib} float32 GEMM: {shape} {gemm_model:.1f} GFLOP/s, {big}^3 {gemm_big:.1f} GFLOP/s")
    ratio_t = med["whitebox"] / med["pytorch"]
    ratio_m = mem["whitebox"]["peak_mb"] / mem["pytorch"]["peak_mb"]
    print(f"ratio whitebox/pytorch: time {ratio_t:.2f}x (target <= 1.0), ", end="")
    print(f"peak memory {ratio_m:.2f}x (target <= 1.5)")
    if args.json:
        result = {
            "model": args.model,
            "config": CFG,
            "device": dev,
            "batch": args.batch,
            "first_loss": {"whitebox": l_wb, "pytorch": l_th},
            "median_ms": {k: 1e3 * v for k, v in med.items()},
            "peak_mb": {k: mem[k]["peak_mb"] for k in FRAMEWORKS},
            "gflop_per_s": {k: gflop[k] / med[k] for k in FRAMEWORKS},
            "gemm_gflop_per_s": {"model_shape": gemm_model, "square": gemm_big},
            "ratio_time": ratio_t,
            "ratio_memory": ratio_m,
        }
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
