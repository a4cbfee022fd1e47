"""Time and memory of one attention layer's forward + backward against the number of tokens N:
MSSA (CRATE, N x N scores per head) against TSSA (ToST, second moments per feature).

For each N, a batch of ``--batch`` random token sets (N, ``--dim``) in float32 goes
through the layer (``MSSA`` or ``TSSA``, ``--heads`` heads; with ``--causal``, MSSA with
the causal mask against ``CausalTSSA``), and the sum of the output is backpropagated to
the input and the weights. Time: the fastest of ``--repeats`` runs after one warm-up (the
least disturbed run on a shared machine). Memory: tracemalloc's peak of the run (NumPy's
own allocations), minus what was held before it. The exponent k of time ~ N^k and
memory ~ N^k is a least-squares fit of log-log over the ``--fit`` largest N (at small N
fixed per-op costs dominate, so the full range underestimates the asymptote).

Usage::

    python benchmarks/scaling_tokens.py                      # N = 16 ... 2048, seconds to a minute
    python benchmarks/scaling_tokens.py --causal --tokens 64 256 1024 2048
"""

from __future__ import annotations

import argparse
import json
import time
import tracemalloc
from pathlib import Path

import numpy as np

from whitebox import backend
from whitebox.crate import MSSA
from whitebox.crate.tssa import TSSA, CausalTSSA
from whitebox.nn import Module
from whitebox.tensor import Tensor


def _layer(kind: str, dim: int, heads: int, causal: bool, n_max: int) -> Module:
    if kind == "MSSA":
        return MSSA(dim, heads)
    return CausalTSSA(dim, heads, block_size=n_max) if causal else TSSA(dim, heads)


def _step(layer: Module, x: np.ndarray, mask: np.ndarray | None) -> None:
    for p in layer.parameters():
        p.grad = None
    xt = Tensor(x, requires_grad=True)
    out = layer(xt, mask=mask)
    out.backward(np.ones(out.shape, dtype=out.dtype))


def measure(layer: Module, x: np.ndarray, mask: np.ndarray | None, repeats: int) -> tuple[float, int]:
    """(fastest seconds of ``repeats`` forward+backward runs, peak bytes allocated in one run)."""
    _step(layer, x, mask)  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        _step(layer, x, mask)
        times.append(time.perf_counter() - t0)
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    _step(layer, x, mask)
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    return min(times), peak


def exponent(ns: list[int], values: list[float]) -> float:
    """Slope of the least-squares line through (log N, log value)."""
    return float(np.polyfit(np.log(ns), np.log(values), 1)[0])


def plot(
    results: dict[str, dict[str, list[float]]], ns: list[int], fits: dict[str, float], path: Path
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for kind, style in (("MSSA", "o-"), ("TSSA", "s-")):
        axes[0].loglog(ns, results[kind]["time"], style, label=f"{kind}: slope {fits[kind + ' time']:.2f}")
        mib = np.array(results[kind]["memory"]) / 2**20
        axes[1].loglog(ns, mib, style, label=f"{kind}: slope {fits[kind + ' memory']:.2f}")
    for ax, label in zip(axes, ("forward + backward time (s)", "peak memory (MiB)"), strict=True):
        ax.set_xlabel("number of tokens N")
        ax.set_ylabel(label)
        ax.legend()
        ax.grid(True, which="both", alpha=0.3)
    fig.suptitle("One attention layer against N (slopes fitted over the largest N)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", type=int, nargs="+", default=[16, 32, 64, 128, 256, 512, 1024, 2048])
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--fit", type=int, default=4, help="fit the exponent over this many largest N")
    parser.add_argument("--causal", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("figures/scaling_tokens.png"))
    args = parser.parse_args()
    if min(args.tokens) < 1 or args.repeats < 1 or not 2 <= args.fit <= len(args.tokens):
        parser.error("--tokens must be >= 1, --repeats >= 1, and 2 <= --fit <= the number of --tokens")
    ns = sorted(args.tokens)
    backend.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    layers = {kind: _layer(kind, args.dim, args.heads, args.causal, ns[-1]) for kind in ("MSSA", "TSSA")}
    results: dict[str, dict[str, list[float]]] = {k: {"time": [], "memory": []} for k in layers}
    for n in ns:
        x = rng.standard_normal((args.batch, n, args.dim)).astype(np.float32)
        mask = np.tril(np.ones((n, n), dtype=bool)) if args.causal else None
        row = {"N": n}
        for kind, layer in layers.items():
            # CausalTSSA is causal without a mask (checking one would cost N^2); MSSA needs it
            seconds, peak = measure(layer, x, mask if kind == "MSSA" else None, args.repeats)
            results[kind]["time"].append(seconds)
            results[kind]["memory"].append(peak)
            row[kind] = {"seconds": round(seconds, 6), "peak_MiB": round(peak / 2**20, 3)}
        print(json.dumps(row), flush=True)
    tail = ns[-args.fit :]
    fits = {
        f"{kind} {what}": exponent(tail, results[kind][what][-args.fit :])
        for kind in layers
        for what in ("time", "memory")
    }
    print(
        json.dumps({"fit_over_N": tail, "causal": args.causal, **{k: round(v, 3) for k, v in fits.items()}})
    )
    plot(results, ns, fits, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
