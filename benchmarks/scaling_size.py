"""Validation loss against model size for causal CRATE and CRATE-alpha, at equal budgets.

CRATE-alpha's claim is that its overcomplete sparse coding lets the white-box model scale. This
script trains both as causal language models on the pydoc corpus (char tokens) at three widths
each, depth 4 and context 64 as the ``small`` preset, for the same number of steps and batches,
and scores them on the whole validation split. The widths are paired so that each pair has about
the same number of weights (a CRATE block has about 3 dim^2 weights, a CRATE-alpha block with
ratio 4 about 10 dim^2): CRATE at 64, 128, 192 and CRATE-alpha at 32, 64, 96, 32 features a head
(16 for the narrowest). Mean and half-range over the seeds; the figure (loss against parameters,
log scale) goes to ``--out``.

    python benchmarks/scaling_size.py                     # the README's numbers and figure
    python benchmarks/scaling_size.py --steps 20 --seeds 0
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from threadpoolctl import threadpool_limits

from whitebox.train import train
from whitebox.train.language import evaluate, language_config

# (dim, heads) of each size, smallest first.
SIZES = {"crate": [(64, 2), (128, 4), (192, 6)], "crate-alpha": [(32, 2), (64, 2), (96, 3)]}
LABELS = {"crate": "CRATE", "crate-alpha": "CRATE-alpha"}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--out", type=Path, default=Path("figures/scaling_size.png"))
    p.add_argument("--runs", type=Path, help="where the runs go (default: a temporary folder)")
    return p.parse_args()


def run(model: str, dim: int, heads: int, seed: int, *, steps: int, root: Path) -> dict[str, float]:
    config = language_config(
        "lm", model, "small", dim=dim, heads=heads, epochs=1, steps_per_epoch=steps, batch_size=32,
        lr=2e-3, warmup_steps=steps // 10, min_lr=2e-4, seed=seed, eval_windows=8,
    )  # fmt: skip
    directory = root / f"{model}-{dim}-{seed}"
    result = train(config, directory, progress=False)
    loss = evaluate(directory)["loss"]
    print(json.dumps({"model": model, "dim": dim, "seed": seed, "params": result["params"], "loss": loss}))
    return {"params": result["params"], "loss": loss}


def main() -> None:
    args = parse_args()
    root = args.runs or Path(tempfile.mkdtemp(prefix="scaling-size-"))
    rows: dict[str, list[tuple[int, np.ndarray]]] = {m: [] for m in SIZES}
    for model, sizes in SIZES.items():
        for dim, heads in sizes:
            results = [run(model, dim, heads, seed, steps=args.steps, root=root) for seed in args.seeds]
            rows[model].append((results[0]["params"], np.array([r["loss"] for r in results])))
    print(f"\npydoc, char tokens, depth 4, context 64, {args.steps} steps x 32, seeds {args.seeds}")
    print(f"{'model':12s} {'params':>9s} {'val loss':>18s}")
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for model, points in rows.items():
        for params, losses in points:
            half = (losses.max() - losses.min()) / 2
            print(f"{LABELS[model]:12s} {params:9,d} {losses.mean():10.4f} +- {half:.4f}")
        x = [p for p, _ in points]
        y = [ls.mean() for _, ls in points]
        err = [(ls.max() - ls.min()) / 2 for _, ls in points]
        ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=LABELS[model])
    ax.set_xscale("log")
    ax.set(xlabel="parameters", ylabel="validation loss (nats per char)")
    ax.set_title(f"Causal LM on pydoc, {args.steps} steps, {len(args.seeds)} seeds", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=100)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    with threadpool_limits(limits=1, user_api="blas"):  # see `python -m whitebox train --help`
        main()
