"""Do objects segment themselves? CRATE vs ViT trained only to classify scenes, then scored as
segmenters: mean IoU of the attention masks and the normalized cut against the true masks.

For each seed, trains ``crate_<preset>`` and ``vit_<preset>`` (same patching, width, depth, heads,
data, optimizer and schedule) on the scene data (classification only; ``whitebox.data.scenes``),
then scores each run as ``python -m whitebox segment RUN`` does (``whitebox.report.segment_run``)
on ``--n-eval`` held-out scenes, per layer: the mean IoU of each head's cls-attention mask (60%
of the mass kept, upsampled), of the head average, of the best head (chosen by its IoU on these
same scenes, so an optimistic number), and of the normalized cut of the layer's patch features.
Floor and ceiling: a centred box of the mean object size, and the best mask made of whole
patches (``segment.best_patch_masks``). Headline: the last layer, mean and spread over the
seeds. Each run's last-layer figure (attention) goes to ``--figures``, with sample scenes.

    python benchmarks/segmentation_side_by_side.py                             # 2 seeds, CPU
    python benchmarks/segmentation_side_by_side.py --epochs 1 --seeds 0 --n-eval 100   # smoke run
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from whitebox import report
from whitebox.train import classify, read_metrics, task
from whitebox.train.run_files import CHECKPOINT
from whitebox.viz_scenes import plot_scenes


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="scenes-mnist", choices=("scenes-mnist", "scenes-fashion"))
    p.add_argument("--preset", default="mnist_tiny", help="size class, a preset both crate_ and vit_ have")
    p.add_argument("--patch-size", type=int, default=8, help="patch side (48 px scenes: 8 -> 6x6 patches)")
    p.add_argument("--dim", type=int, default=64, help="width (the preset's 96 narrowed to fit a CPU budget)")
    p.add_argument("--depth", type=int, help="depth override (default: the preset's)")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--n-eval", type=int, default=500, help="held-out scenes scored")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--runs", type=Path, default=Path("runs"))
    p.add_argument("--figures", type=Path, default=Path("figures"))
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p.parse_args()


def trained_run(model: str, seed: int, args: argparse.Namespace) -> Path:
    """Train one classifier into its run directory (kept: a run with a checkpoint is reused)."""
    run = args.runs / f"segment_{args.data}_{model}_s{seed}"
    if not (run / CHECKPOINT).exists():
        overrides = {"patch_size": args.patch_size, "dim": args.dim, "depth": args.depth}
        config = classify.image_config(
            model,
            args.preset,
            args.data,
            overrides,
            epochs=args.epochs,
            batch_size=args.batch_size,
            lr=args.lr,
            seed=seed,
            device=args.device,
        )
        print(f"== {model} seed {seed}: {config.model_args} -> {run}", flush=True)
        task.train(config, run, progress=not args.quiet)
    return run


def main() -> None:
    args = parse_args()
    last: dict[str, dict[str, list[float]]] = {"crate": {}, "vit": {}}
    refs: dict[str, float] = {}
    for seed in args.seeds:
        for name in ("crate", "vit"):
            run = trained_run(name, seed, args)
            acc = read_metrics(run)[-1]["eval_acc"]
            out = args.figures if seed == args.seeds[0] else None
            result = report.segment_run(run, args.n_eval, out=out, prefix=f"{args.data}_{name}")
            refs = result["refs"]
            print(f"\n{name} seed {seed}: test accuracy {acc:.4f}")
            print(result["table"])
            if "figure" in result:
                print(f"wrote {result['figure']}")
            row = result["rows"][-1]
            for key in ("average", "best", "maskcut"):
                last[name].setdefault(key, []).append(row[key])
            last[name].setdefault("accuracy", []).append(acc)
    scenes_figure(args)
    print(
        f"\n{args.data}, {args.preset} with {args.patch_size}px patches, {args.epochs} epochs, "
        f"seeds {args.seeds}: last layer, mean IoU (mean +- std over seeds)"
    )
    print(
        f"centred box of the mean object size (floor) {refs['floor']:.3f}; "
        f"best mask of whole patches (ceiling) {refs['ceiling']:.3f}"
    )
    for name, values in last.items():
        cells = ", ".join(f"{k} {np.mean(v):.3f} +- {np.std(v):.3f}" for k, v in values.items())
        print(f"{name:5s} {cells}")


def scenes_figure(args: argparse.Namespace) -> Path:
    """A figure of eight held-out scenes with their true masks."""
    run, _ = task.open_run(args.runs / f"segment_{args.data}_crate_s{args.seeds[0]}")
    scenes = run.heldout_subset(8)
    names = [scenes.class_names[y] for y in scenes.labels]
    path = plot_scenes(scenes.images, scenes.masks, args.figures / f"{args.data}_samples.png", names)
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    with threadpool_limits(limits=1, user_api="blas"):
        main()
