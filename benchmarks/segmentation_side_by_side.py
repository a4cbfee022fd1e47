"""Do objects segment themselves? CRATE vs ViT trained only to classify scenes, then scored as
segmenters: mean IoU of the attention masks and the normalized cut against the true masks.

For each seed, trains ``crate_<preset>`` and ``vit_<preset>`` (same patching, width, depth, heads,
data, optimizer and schedule) on the scene data (classification only; ``whitebox.data.scenes``),
then on ``--n-eval`` held-out scenes reports, per layer: the mean IoU of each head's cls-attention
mask (60% of the mass kept, upsampled), of the head average, of the best head (chosen by its
IoU on these same scenes, so an optimistic number), and of the normalized cut of the layer's
patch features. Floors and references: a centred box of the mean object size, and the true
masks quantized to the patch grid. Headline: the last layer, mean and spread over the seeds.
Figures of sample scenes and of each model's last-layer segmentation go to ``--figures``.

    python benchmarks/segmentation_side_by_side.py                             # 2 seeds, CPU
    python benchmarks/segmentation_side_by_side.py --epochs 1 --seeds 0 --n-eval 100   # smoke run
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from whitebox.data import DataLoader, ImageDataset, load_dataset
from whitebox.segment import (
    attention_masks,
    centered_box,
    cls_attention_maps,
    head_ious,
    iou,
    layer_tokens,
    normalized_cut,
    patch_quantized,
    upsample,
)
from whitebox.train import image
from whitebox.train.loop import CHECKPOINT
from whitebox.viz_scenes import plot_scenes, plot_segmentation


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="scenes-mnist", choices=("scenes-mnist", "scenes-fashion"))
    p.add_argument("--preset", default="mnist_tiny", help="size class, a preset both crate_ and vit_ have")
    p.add_argument("--patch-size", type=int, default=6, help="patch side (48 px scenes: 6 -> 8x8 patches)")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--n-eval", type=int, default=500, help="held-out scenes scored")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--runs", type=Path, default=Path("runs"))
    p.add_argument("--figures", type=Path, default=Path("figures"))
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p.parse_args()


def trained_model(model: str, seed: int, args: argparse.Namespace) -> tuple[Any, float]:
    """Train (or, if its run has a checkpoint, load) one classifier; returns (model, test accuracy).
    All calls into the training API are here."""
    run = args.runs / f"segment_{args.data}_{model}_s{seed}"
    if not (run / CHECKPOINT).exists():
        config = image.image_config(
            model,
            args.preset,
            args.data,
            overrides={"patch_size": args.patch_size},
            epochs=args.epochs,
            lr=args.lr,
            seed=seed,
            device=args.device,
        )
        print(f"== {model} seed {seed}: {config['model_args']} -> {run}", flush=True)
        image.train(config, run, progress=not args.quiet)
    net, _ = image.load_run(run)
    return net, image.evaluate(run)["accuracy"]


def held_out(data: str, n: int, device: str) -> tuple[ImageDataset, Any]:
    """``n`` test scenes drawn at random (fixed seed; the split is sorted by class), and their
    normalized images on ``device``."""
    test = load_dataset(data, "test")
    idx = np.random.default_rng(0).permutation(len(test))[:n]
    subset = dataclasses.replace(
        test, images=test.images[idx], labels=test.labels[idx], masks=test.masks[idx]
    )
    images, _ = next(iter(DataLoader(subset, len(idx), shuffle=False, device=device)))
    return subset, images


def score(model: Any, images: Any, truth: np.ndarray) -> list[dict[str, Any]]:
    """Per layer: mean IoU of every head, the head average, the best head and the normalized cut."""
    (H, W), patch = model.image_size, model.patch_size
    grid = (H // patch[0], W // patch[1])
    attention, tokens = layer_tokens(model, images)
    rows = []
    for layer, (attn, tok) in enumerate(zip(attention, tokens, strict=True)):
        heads, average = attention_masks(attn, grid, patch)
        per_head = head_ious(heads, truth).mean(axis=0)
        weights = cls_attention_maps(attn, grid).mean(axis=1).reshape(len(tok), -1)
        cut = upsample(normalized_cut(tok[:, 1:], weights).reshape(-1, *grid), patch)
        rows.append(
            {
                "layer": layer,
                "heads": per_head,
                "average": iou(average, truth).mean(),
                "best": per_head.max(),
                "maskcut": iou(cut, truth).mean(),
            }
        )
    return rows


def main() -> None:
    args = parse_args()
    scenes, images = held_out(args.data, args.n_eval, args.device)
    truth = scenes.masks
    patch = (args.patch_size, args.patch_size)
    floor = iou(centered_box(truth), truth).mean()
    ceiling = iou(patch_quantized(truth, patch), truth).mean()
    shown = slice(0, min(8, len(truth)))
    print(
        plot_scenes(
            scenes.images[shown],
            truth[shown],
            args.figures / f"{args.data}_samples.png",
            [scenes.class_names[y] for y in scenes.labels[shown]],
        )
    )
    last: dict[str, dict[str, list[float]]] = {"crate": {}, "vit": {}}
    for seed in args.seeds:
        for name in ("crate", "vit"):
            model, acc = trained_model(name, seed, args)
            rows = score(model, images, truth)
            print(f"\n{name} seed {seed}: test accuracy {acc:.4f}; mean IoU on {len(truth)} held-out scenes")
            print(f"{'layer':>5s} {'average':>8s} {'best':>6s} {'maskcut':>8s}  per head")
            for r in rows:
                heads = " ".join(f"{v:.3f}" for v in r["heads"])
                print(f"{r['layer']:5d} {r['average']:8.3f} {r['best']:6.3f} {r['maskcut']:8.3f}  {heads}")
            for key in ("average", "best", "maskcut"):
                last[name].setdefault(key, []).append(rows[-1][key])
            last[name].setdefault("accuracy", []).append(acc)
            if seed == args.seeds[0]:
                attn, _ = layer_tokens(model, images[shown])
                (H, W), p = model.image_size, model.patch_size
                maps = cls_attention_maps(attn[-1], (H // p[0], W // p[1]))
                _, average = attention_masks(attn[-1], maps.shape[-2:], p)
                path = args.figures / f"{args.data}_segmentation_{name}.png"
                print(
                    plot_segmentation(
                        scenes.images[shown],
                        truth[shown],
                        average,
                        upsample(maps, p),
                        path,
                        title=f"{name}, last layer, head average (60% of the mass)",
                    )
                )
    print(
        f"\n{args.data}, {args.preset} with {args.patch_size}px patches, {args.epochs} epochs, "
        f"seeds {args.seeds}: last layer, mean IoU (mean +- std over seeds)"
    )
    print(
        f"centred box of the mean object size (floor) {floor:.3f}; true masks on the patch grid {ceiling:.3f}"
    )
    for name, values in last.items():
        cells = ", ".join(f"{k} {np.mean(v):.3f} +- {np.std(v):.3f}" for k, v in values.items())
        print(f"{name:5s} {cells}")


if __name__ == "__main__":
    with threadpool_limits(limits=1, user_api="blas"):
        main()
