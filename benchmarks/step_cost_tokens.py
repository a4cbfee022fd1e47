"""How a CRATE training step's time and memory grow with the number of tokens and the width.

The work: a stack of ``--depth`` CRATE layers (MSSA then ISTA, as in every CRATE model) on
random tokens (B, N, d), loss mean(out^2), backward, AdamW; whitebox's ``CRATETransformer``
beside the official PyTorch ``Transformer`` (``whitebox.torch_reference``) started from the
same weights. Two sweeps, batch B fixed:

    tokens  N = 16 .. 1024 at width d = ``--dim``      time ~ a N + b N^2
    width   d = 64 .. 512 at N = ``--tokens``           time ~ a' d^2 + b' d

Per layer the products that map tokens (qkv, to_out, ISTA) cost O(B N d^2) and the attention
scores and their product with the values O(B N^2 d): the N^2 term. A layer's forward takes
3 B N d^2 + 2 B N^2 d multiply-adds in whitebox (qkv, to_out, ISTA's one product; scores,
values), 5 B N d^2 + 2 B N^2 d in the official code (ISTA as three products), so the attention
takes over from N = 1.5 d (whitebox) and N = 2.5 d (PyTorch) on. We fit
t = c + a N + b N^2 (c: the per-step overhead of launching the ops) by least squares and
print the N^2 term's share of the largest step (c and a are poorly separated on a busy
machine, so the fitted a is not a reliable per-token cost), the exponent k of t ~ N^k over
N >= 4 d, and the log-log slope between consecutive points (about
1 where the token-wise work dominates, rising towards 2 where the attention does).

Time: median of ``--repeats`` steps after one warm-up, both frameworks alternating, with the
same BLAS/torch thread count (``--threads``). Memory: before the timing, one step per point
and framework with malloc's mmap threshold fixed at 128 KiB (every large array its own
mapping, returned to the OS when freed): the peak resident set during the step minus the
resident set before it, in MB (Linux only; elsewhere it is left out).

Usage::

    python benchmarks/step_cost_tokens.py                       # ~2-3 minutes on 2 busy cores
    python benchmarks/step_cost_tokens.py --json cost.json --plot figures/step_cost_tokens.png
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from train_step import LR, WEIGHT_DECAY, set_threads  # the sibling benchmark

Step = Callable[[], float]


def steps(batch: int, tokens: int, dim: int, depth: int, heads: int) -> dict[str, Step]:
    """One training step of each framework on the same weights and tokens."""
    import torch

    import whitebox as wb
    from whitebox.crate import CRATETransformer
    from whitebox.interop import to_torch_state_dict
    from whitebox.optim import AdamW
    from whitebox.torch_reference import Transformer

    wb.manual_seed(0)
    model = CRATETransformer(dim, depth, heads)
    twin = Transformer(dim, depth, heads, dim // heads)
    twin.load_state_dict(to_torch_state_dict(model))
    x = np.random.default_rng(0).standard_normal((batch, tokens, dim)).astype(np.float32)
    xw, xt = wb.Tensor(x), torch.from_numpy(x)
    opt = AdamW(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    opt_t = torch.optim.AdamW(twin.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)

    def whitebox_step() -> float:
        opt.zero_grad()
        out = model(xw)
        loss = (out * out).mean()
        loss.backward()
        opt.step()
        return loss.item()

    def torch_step() -> float:
        opt_t.zero_grad()
        loss = twin(xt).pow(2).mean()
        loss.backward()
        opt_t.step()
        return loss.item()

    return {"whitebox": whitebox_step, "pytorch": torch_step}


# ---- memory --------------------------------------------------------------------------------------


def _kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def set_mmap_threshold(nbytes: int) -> bool:
    """Fix glibc's mmap (and trim) threshold; False where that is not possible."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(-3, nbytes)) and bool(libc.mallopt(-1, nbytes))
    except (OSError, AttributeError):
        return False


def peak_mb(step: Step) -> float | None:
    """Peak resident set during ``step()`` above the resident set before it, MB (None: unknown)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # VmHWM := VmRSS
    except OSError:
        return None
    before = _kb("VmRSS")
    step()
    return (_kb("VmHWM") - before) / 1024


# ---- sweeps and fits ----------------------------------------------------------------------------


def sweep(points: list[dict[str, int]], repeats: int, memory: bool) -> list[dict[str, Any]]:
    """Median step time (ms) and peak memory (MB) of both frameworks at each point: first a
    warm-up (and memory) step everywhere, then malloc tuned as users run it and the timing."""
    from whitebox import backend

    built = [(p, steps(**p)) for p in points]
    rows = []
    for p, fns in built:
        losses = {k: fn() for k, fn in fns.items()}  # warm-up; the same weights give the same loss
        rows.append(
            {**p, "loss": losses, "peak_mb": {k: peak_mb(fn) if memory else None for k, fn in fns.items()}}
        )
    backend.tune_malloc()
    for row, (_, fns) in zip(rows, built, strict=True):
        times: dict[str, list[float]] = {k: [] for k in fns}
        for _ in range(repeats):
            for k, fn in fns.items():
                tic = time.perf_counter()
                fn()
                times[k].append(time.perf_counter() - tic)
        row["ms"] = {k: 1e3 * float(np.median(v)) for k, v in times.items()}
    return rows


def fit_cost(n: np.ndarray, t: np.ndarray) -> tuple[float, float, float]:
    """Least-squares c, a, b of t = c + a n + b n^2 (c: the per-step overhead of the ops),
    relative errors weighted equally."""
    design = np.stack([np.ones_like(n), n, n**2], axis=1) / t[:, None]
    (c, a, b), *_ = np.linalg.lstsq(design, np.ones_like(t), rcond=None)
    return float(c), float(a), float(b)


def power_exponent(x: list[int], y: list[float]) -> float:
    """k of the least-squares fit y ~ x^k on log-log axes."""
    return float(np.polyfit(np.log(x), np.log(y), 1)[0])


def slopes(x: list[int], y: list[float]) -> list[float]:
    """log-log slope between consecutive points."""
    lx, ly = np.log(x), np.log(y)
    return [float(s) for s in np.diff(ly) / np.diff(lx)]


def plot(token_rows: list[dict[str, Any]], width_rows: list[dict[str, Any]], path: str) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 7.5))
    axes = fig.subplots(2, 2, gridspec_kw={"wspace": 0.3})
    for col, (rows, key, label) in enumerate(
        ((token_rows, "tokens", "tokens N"), (width_rows, "dim", "width d"))
    ):
        x = np.array([r[key] for r in rows], dtype=float)
        for fw, style in (("whitebox", "o-"), ("pytorch", "s--")):
            axes[0, col].loglog(x, [r["ms"][fw] for r in rows], style, label=fw)
            mem = np.array([np.nan if r["peak_mb"][fw] is None else r["peak_mb"][fw] for r in rows])
            seen = mem >= 0.5  # smaller steps are served from malloc's heap: not resolved
            axes[1, col].loglog(x[seen], mem[seen], style, label=fw)
        t_end = rows[-1]["ms"]["whitebox"]
        for k, ls in ((1, ":"), (2, "-.")):
            axes[0, col].loglog(x, t_end * (x / x[-1]) ** k, "k" + ls, lw=0.8, label=f"slope {k}")
        axes[0, col].set_ylabel("step time (ms)")
        axes[1, col].set_ylabel("peak memory of a step (MB, points >= 0.5)")
        for ax in axes[:, col]:
            ax.set_xlabel(label)
            ax.set_xticks(x, [f"{v:.0f}" for v in x])
            ax.set_xticks([], minor=True)
            ax.legend(fontsize=8)
            ax.grid(True, which="both", alpha=0.3)
    p = token_rows[0]
    axes[0, 0].set_title(f"B={p['batch']}, d={p['dim']}, depth {p['depth']}, {p['heads']} heads")
    w = width_rows[0]
    axes[0, 1].set_title(f"B={w['batch']}, N={w['tokens']}, depth {w['depth']}, {w['heads']} heads")
    fig.suptitle("CRATE training step (MSSA + ISTA layers): whitebox beside PyTorch")
    fig.savefig(path, dpi=110, bbox_inches="tight")


def report(name: str, key: str, rows: list[dict[str, Any]]) -> None:
    xs = [r[key] for r in rows]
    print(f"\n{name}: {'':2}" + "".join(f"{x:>9d}" for x in xs))
    for fw in ("whitebox", "pytorch"):
        print(f"{fw:>9} ms " + "".join(f"{r['ms'][fw]:>9.1f}" for r in rows))
        mem = [r["peak_mb"][fw] for r in rows]
        if all(m is not None for m in mem):
            print(f"{fw:>9} MB " + "".join(f"{m:>9.1f}" for m in mem))
        print(f"{fw:>9} slope  " + "".join(f"{s:>9.2f}" for s in slopes(xs, [r["ms"][fw] for r in rows])))
    ratio = [r["ms"]["whitebox"] / r["ms"]["pytorch"] for r in rows]
    print("wb/torch time " + "".join(f"{q:>9.2f}" for q in ratio))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokens-sweep", type=int, nargs="+", default=[16, 32, 64, 128, 256, 512, 1024])
    parser.add_argument("--width-sweep", type=int, nargs="+", default=[64, 128, 256, 512])
    parser.add_argument("--dim", type=int, default=128, help="width of the tokens sweep")
    parser.add_argument("--tokens", type=int, default=128, help="tokens of the width sweep")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--depth", type=int, default=2)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="BLAS/torch threads (default 1)")
    parser.add_argument("--json", help="write the results to this file")
    parser.add_argument("--plot", help="draw the figure to this file (e.g. figures/step_cost_tokens.png)")
    args = parser.parse_args()
    threads = set_threads(args.threads)
    memory = sys.platform.startswith("linux") and set_mmap_threshold(128 * 1024)
    common = {"batch": args.batch, "depth": args.depth, "heads": args.heads}
    token_points = [{**common, "tokens": n, "dim": args.dim} for n in args.tokens_sweep]
    width_points = [{**common, "tokens": args.tokens, "dim": d} for d in args.width_sweep]
    start = time.perf_counter()
    rows = sweep(token_points + width_points, args.repeats, memory)
    token_rows, width_rows = rows[: len(token_points)], rows[len(token_points) :]
    gap = max(abs(r["loss"]["whitebox"] / r["loss"]["pytorch"] - 1) for r in rows)

    import torch

    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    took = time.perf_counter() - start
    print(f"CRATE layers, float32, AdamW; CPU, {threads} BLAS/torch threads; torch {torch.__version__}, ")
    print(f"numpy {np.__version__}; load average {load} ({os.cpu_count()} cores); {took:.0f} s")
    print(f"first-step losses: whitebox and pytorch agree within {gap:.1e} (relative) at every point")
    report("tokens N", "tokens", token_rows)
    report("width d", "dim", width_rows)
    n = np.array(args.tokens_sweep, dtype=float)
    upper = [i for i, x in enumerate(args.tokens_sweep) if x >= 4 * args.dim] or [-2, -1]
    fits = {}
    print()
    for fw in ("whitebox", "pytorch"):
        t = [r["ms"][fw] for r in token_rows]
        c, a, b = fit_cost(n, np.array(t))
        k_n = power_exponent([args.tokens_sweep[i] for i in upper], [t[i] for i in upper])
        k_d = power_exponent(args.width_sweep, [r["ms"][fw] for r in width_rows])
        fits[fw] = {"c_ms": c, "a_ms": a, "b_ms": b, "exponent_tokens_upper": k_n, "exponent_width": k_d}
        share = b * n[-1] ** 2 / (c + a * n[-1] + b * n[-1] ** 2)
        print(f"{fw:>9}: t = {c:.3g} + {a:.3g} N + {b:.3g} N^2 ms (", end="")
        print(f"N^2 share of the step at N={n[-1]:.0f}: {share:.0%}); ", end="")
        print(f"t ~ N^{k_n:.2f} for N >= {args.tokens_sweep[upper[0]]}, t ~ d^{k_d:.2f} over the widths")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(
                {
                    "threads": threads,
                    "load": os.getloadavg(),
                    "tokens": token_rows,
                    "width": width_rows,
                    "fits": fits,
                },
                f,
                indent=1,
            )
    if args.plot:
        plot(token_rows, width_rows, args.plot)
        print(f"wrote {args.plot}")


if __name__ == "__main__":
    main()
