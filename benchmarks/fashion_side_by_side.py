"""CRATE vs ViT on Fashion-MNIST: same size class, data, optimizer, schedule and budget.

Trains ``crate_<preset>`` and ``vit_<preset>`` (same patching, width, depth and heads; the ViT
block has a 4d-wide MLP, so about 4x CRATE's weights per layer) on the full Fashion-MNIST
(60,000 train / 10,000 test images) with identical settings, then prints test accuracy,
parameters and training time of both, the per-layer compression R^c and sparsity of both,
and writes the curves and attention maps to figures/ (``python -m whitebox figures`` redraws
them from the runs). Runs go to RUNS/fashion_crate and RUNS/fashion_vit; ``--resume``
continues interrupted ones.

Measured with the defaults on a 2-core CPU (one BLAS thread each): CRATE-mnist-tiny 90.02%
(120,492 parameters, ~20 s an epoch), ViT-mnist-tiny 91.63% (454,188 parameters, ~70 s an epoch).
With 20 epochs and no crops both stop at 89.7% (CRATE 89.66, ViT 89.61): they overfit.

Fashion-MNIST comes from Debian's ``dataset-fashion-mnist`` package when installed
(``apt-get install dataset-fashion-mnist``), else it is downloaded into the cache.

    python benchmarks/fashion_side_by_side.py                 # mnist_tiny, 40 epochs, CPU
    python benchmarks/fashion_side_by_side.py --epochs 2      # a quick look
    python benchmarks/fashion_side_by_side.py --device cuda --preset mnist_small
"""

from __future__ import annotations

import argparse
from pathlib import Path

from threadpoolctl import threadpool_limits

from whitebox.data import load_dataset
from whitebox.measure import format_table
from whitebox.report import measure_run, run_figures
from whitebox.train import classify, train
from whitebox.train.run_files import CHECKPOINT

TARGET_ACC, MAX_GAP = 0.90, 0.02


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="mnist_tiny", help="size class, a preset both crate_ and vit_ have")
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--optimizer", choices=("adamw", "lion"), default="adamw")
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-augment", action="store_true", help="no random crops")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--runs", type=Path, default=Path("runs"))
    p.add_argument("--figures", type=Path, default=Path("figures"))
    p.add_argument("--resume", action="store_true", help="continue runs that have a checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    for split in ("train", "test"):
        load_dataset("fashion-mnist", split, download=True)
    settings = {
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "optimizer": args.optimizer,
        "weight_decay": args.weight_decay,
        "seed": args.seed,
        "device": args.device,
        "augment": not args.no_augment,
    }
    results, runs = {}, {}
    for model in ("crate", "vit"):
        config = classify.image_config(model, args.preset, "fashion-mnist", **settings)
        run = runs[f"fashion_{model}"] = args.runs / f"fashion_{model}"
        print(f"== {model}_{args.preset}: {config.model_args} -> {run}", flush=True)
        resume = args.resume and (run / CHECKPOINT).exists()
        results[model] = train(config, run, resume=resume, progress=not args.quiet)

    print(
        f"\nFashion-MNIST, {args.preset} size class, {args.epochs} epochs, {args.optimizer} lr {args.lr}, "
        f"batch {args.batch_size}, {'no augmentation' if args.no_augment else 'random crops'}, {args.device}"
    )
    print(f"{'model':6s} {'params':>9s} {'test acc':>9s} {'train s':>8s} {'s/epoch':>8s}")
    for model, r in results.items():
        seconds = r["seconds"]
        print(
            f"{model:6s} {r['params']:9,d} {r['eval_acc']:9.4f} {seconds:8.0f} {seconds / args.epochs:8.1f}"
        )
    for run in runs.values():
        rows, title = measure_run(run, 1000)
        print("\n" + format_table(rows, title))
    for path in run_figures(runs, args.figures, n=1000):
        print(f"wrote {path}")
    crate, vit = results["crate"]["eval_acc"], results["vit"]["eval_acc"]
    ok = crate >= TARGET_ACC and vit - crate <= MAX_GAP
    verdict = "met" if ok else "NOT met"
    print(
        f"\nCRATE {crate:.4f} vs ViT {vit:.4f} (gap {100 * (vit - crate):+.2f} points): target CRATE >= "
        f"{TARGET_ACC:.0%} and within {100 * MAX_GAP:.0f} points of ViT {verdict}"
    )


if __name__ == "__main__":
    with threadpool_limits(limits=1, user_api="blas"):  # see `python -m whitebox train --help`
        main()
