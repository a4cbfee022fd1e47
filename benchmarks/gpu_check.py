"""One unattended command that proves the GPU path (``make gpu-check``).

On a machine with one NVIDIA GPU, CuPy and torch.cuda, in under 8 minutes, it runs:

1. the CUDA-marked tests (``pytest -m cuda``);
2. ``benchmarks/train_step.py --device cuda`` for CRATE-T on 32x32x3 images (batch 128) and
   for the benchmark model (whitebox on CuPy beside PyTorch CUDA eager);
3. a short training (a small CRATE on synthetic images, AdamW, no dropout) on CuPy beside
   the same run on NumPy from the same seed: the losses of the first steps must agree
   within float32 tolerance;
4. the peak of CuPy's memory pool over that training.

It writes ``OUT/gpu_check.json`` (every result) and ``OUT/gpu_check.txt`` (a short summary).
Without a GPU it says so, writes the same two files with the reason, and exits 0.
The exit status is 1 when a step failed (tests failing, losses disagreeing), else 0.

Usage::

    python benchmarks/gpu_check.py --out gpu_check
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
BUDGET_S = {"tests": 150, "bench": 120, "train": 60}  # per step; the total stays under 8 minutes
TRAIN_STEPS, COMPARE_STEPS, RTOL = 30, 5, 1e-3
TRAIN_CFG = {"image_size": 32, "patch_size": 4, "num_classes": 10, "dim": 192, "depth": 6, "heads": 6}


def gpu_missing() -> str | None:
    """None when CuPy sees a GPU and torch.cuda works, else why not."""
    sys.path.insert(0, str(ROOT))
    from whitebox import backend

    if not backend.cuda_available():
        return "no usable GPU: CuPy is not installed or sees no CUDA device"
    try:
        import torch
    except ImportError:
        return "torch is not installed (the PyTorch CUDA comparison needs it)"
    if not torch.cuda.is_available():
        return "torch.cuda is not available"
    return None


def device_name() -> str:
    import torch

    return torch.cuda.get_device_name()


def run(cmd: list[str], timeout: int) -> dict[str, Any]:
    """Run a command from the repository root; its status, seconds and output tail."""
    tic = time.perf_counter()
    try:
        res = subprocess.run(cmd, check=False, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
        rc, out = res.returncode, res.stdout + res.stderr
    except subprocess.TimeoutExpired as exc:
        rc, out = 124, f"timed out after {timeout} s\n{exc.stdout or ''}"
    took = round(time.perf_counter() - tic, 1)
    return {"cmd": " ".join(cmd), "rc": rc, "seconds": took, "tail": out[-3000:]}


def cuda_tests() -> dict[str, Any]:
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:xdist", "-m", "cuda", "tests"]
    return run(cmd, BUDGET_S["tests"])


def train_step_bench(model: str, out: Path) -> dict[str, Any]:
    path = out / f"train_step_{model}.json"
    cmd = [sys.executable, "benchmarks/train_step.py", "--device", "cuda", "--model", model]
    cmd += ["--batch", "128", "--repeats", "10", "--pause", "0.05", "--json", str(path)]
    res = run(cmd, BUDGET_S["bench"])
    if path.exists():
        res["result"] = json.loads(path.read_text())
    return res


def short_training(device: str, steps: int, cfg: dict[str, int]) -> tuple[list[float], float]:
    """Losses of ``steps`` AdamW steps of a CRATE (no dropout) on one fixed batch of 64
    synthetic 3-channel images, and the peak of CuPy's memory pool in MB (0 on the CPU)."""
    import whitebox
    import whitebox.functional as F
    from whitebox import backend
    from whitebox.crate import CRATE
    from whitebox.optim import AdamW

    whitebox.manual_seed(0)
    model = CRATE(**cfg, channels=3).to(device)
    opt = AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    rng = np.random.default_rng(0)
    size = cfg["image_size"]
    x = whitebox.Tensor(rng.standard_normal((64, 3, size, size)).astype(np.float32), device=device)
    y = rng.integers(0, cfg["num_classes"], 64)
    pool = backend.cupy().get_default_memory_pool() if device == "cuda" else None
    peak, losses = 0.0, []
    for _ in range(steps):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if pool is not None:
            peak = max(peak, pool.total_bytes() / 2**20)
    return losses, peak


def compare_training(steps: int = TRAIN_STEPS, cfg: dict[str, int] = TRAIN_CFG) -> dict[str, Any]:
    """The same training on CuPy and on NumPy; do the first COMPARE_STEPS losses agree?"""
    tic = time.perf_counter()
    gpu, peak = short_training("cuda", steps, cfg)
    t_gpu = time.perf_counter() - tic
    tic = time.perf_counter()
    cpu, _ = short_training("cpu", steps, cfg)
    t_cpu = time.perf_counter() - tic
    first = np.abs(np.subtract(gpu[:COMPARE_STEPS], cpu[:COMPARE_STEPS])) / np.abs(cpu[:COMPARE_STEPS])
    return {
        "losses_cuda": gpu,
        "losses_cpu": cpu,
        "max_rel_diff_first_steps": float(first.max()),
        "agree": bool(first.max() <= RTOL),
        "seconds": {"cuda": round(t_gpu, 1), "cpu": round(t_cpu, 1)},
        "peak_pool_mb": round(peak, 1),
    }


def summary(report: dict[str, Any]) -> str:
    if "skipped" in report:
        return f"gpu-check skipped: {report['skipped']}. Nothing was run; run it on a machine with a GPU.\n"
    lines = [f"gpu-check on {report['device']} ({report['seconds']:.0f} s)"]
    t = report["tests"]
    lines.append(f"cuda tests: {'ok' if t['rc'] == 0 else 'FAILED'} ({t['tail'].strip().splitlines()[-1]})")
    for name, b in report["train_step"].items():
        r = b.get("result", {})
        if "median_ms" in r:
            ms = r["median_ms"]
            lines.append(
                f"train step {name}, batch 128: whitebox/CuPy {ms['whitebox']:.1f} ms, PyTorch CUDA "
                f"{ms['pytorch']:.1f} ms, ratio {r['ratio_time']:.2f}x; peak MB {r['peak_mb']}"
            )
        else:
            lines.append(f"train step {name}: FAILED (rc {b['rc']})")
    c = report["training"]
    lines.append(
        f"CuPy vs NumPy training, first {COMPARE_STEPS} losses: max rel diff "
        f"{c['max_rel_diff_first_steps']:.2e} ({'agree' if c['agree'] else 'DISAGREE'}, tol {RTOL}); "
        f"{len(c['losses_cuda'])} steps {c['seconds']['cuda']} s on CuPy, {c['seconds']['cpu']} s on NumPy"
    )
    lines.append(f"peak CuPy pool during that training: {c['peak_pool_mb']} MB")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="gpu_check", help="folder for gpu_check.json and gpu_check.txt")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tic = time.perf_counter()
    if why := gpu_missing():
        report: dict[str, Any] = {"skipped": why}
    else:
        report = {"device": device_name(), "tests": cuda_tests()}
        report["train_step"] = {m: train_step_bench(m, out) for m in ("crate_t32", "mnist_small")}
        report["training"] = compare_training()
        report["seconds"] = time.perf_counter() - tic
    (out / "gpu_check.json").write_text(json.dumps(report, indent=1))
    text = summary(report)
    (out / "gpu_check.txt").write_text(text)
    print(text, end="")
    print(f"written: {out / 'gpu_check.json'}, {out / 'gpu_check.txt'}")
    if "skipped" in report:
        return 0
    ok = report["tests"]["rc"] == 0 and report["training"]["agree"]
    ok = ok and all(b["rc"] == 0 for b in report["train_step"].values())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
