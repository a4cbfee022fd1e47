"""Does DINO's attention segment the scenes? CRATE vs ViT trained without labels, scored as segmenters.

For each seed, trains ``crate_<preset>`` and ``vit_<preset>`` with the "dino" task
(``whitebox.train.dino``; same recipe and budget for both, the labels never read) on the scene data,
with the architecture of ``benchmarks/segmentation_side_by_side.py`` (8 px patches, width 64), then
scores the EMA teacher's backbone as ``python -m whitebox segment RUN`` does
(``whitebox.report.segment_run``) on ``--n-eval`` held-out scenes, per layer: the mean IoU of the
head-average cls-attention mask (60% of the mass), of the best head (chosen with the truth: an
oracle) and of the normalized cut of the layer's patch features; beside it the same scores of the
student and of the network before training (the run's own initialization), and the teacher's k-NN
test accuracy. Floor and ceiling as the segment command prints them. Headline: the last layer, mean
and spread over the seeds. A run with a checkpoint is reused.

The teacher is what DINO's papers visualize (the network whose output is the target, and the one
whose features the k-NN and the probe read here); with ``pool="mean"`` (the dino task's default)
the loss reads the mean of the patch tokens, not the cls token, so the last layer's cls attention
is never read by the loss: the earlier layers' is (their cls token feeds the patches after them).

Measured with the defaults (two processes, one per seed, 14.5 minutes wall on the loaded 2-core development
machine), last layer of the teacher, mean over seeds 0 and 1: CRATE head average 0.055, best head 0.058,
normalized cut 0.055 (untrained 0.057, 0.061, 0.056); ViT 0.061, 0.069, 0.057 (untrained 0.061, 0.068, 0.057);
floor 0.176, ceiling 0.382; teacher k-NN accuracy 11.0% and 11.1% (chance 10%). The README has every layer.

    python benchmarks/dino_segmentation.py                     # 2 seeds, 2 epochs, CPU
    python benchmarks/dino_segmentation.py --epochs 1 --seeds 0 --n-eval 100   # a quick look
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from whitebox import report, segment
from whitebox.data import DataLoader
from whitebox.train import read_metrics
from whitebox.train.classify import evenly_spaced
from whitebox.train.dino import SelfDistillation, dino_config
from whitebox.train.run_files import CHECKPOINT
from whitebox.train.task import open_run, train

KEYS = ("average", "best", "maskcut")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="scenes-mnist", choices=("scenes-mnist", "scenes-fashion"))
    p.add_argument("--preset", default="mnist_tiny", help="size class, a preset both crate_ and vit_ have")
    p.add_argument("--patch-size", type=int, default=8, help="patch side (48 px scenes: 8 -> 6x6 patches)")
    p.add_argument("--dim", type=int, default=64, help="width (the segmentation benchmark's)")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--local-crops", type=int, default=2)
    p.add_argument("--pool", choices=("cls", "mean"), default="mean")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--models", nargs="+", default=["crate", "vit"])
    p.add_argument("--n-eval", type=int, default=500, help="held-out scenes scored")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--runs", type=Path, default=Path("runs"))
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p.parse_args()


def trained_run(model: str, seed: int, args: argparse.Namespace) -> Path:
    """Train one DINO run into its directory (kept: a run with a checkpoint is reused)."""
    run = args.runs / f"dino_segment_{args.data}_{model}_s{seed}"
    if not (run / CHECKPOINT).exists():
        overrides = {"patch_size": args.patch_size, "dim": args.dim}
        settings = {"epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr}
        settings.update(n_local=args.local_crops, pool=args.pool, seed=seed, device=args.device)
        config = dino_config(model, args.preset, args.data, overrides, **settings)
        print(f"== DINO {model} seed {seed}: {config.model_args} -> {run}", flush=True)
        train(config, run, progress=not args.quiet)
    return run


def untrained_rows(run: Path, n: int) -> list[dict]:
    """``segment.layer_scores`` of the run's teacher backbone as it was before training."""
    task, _ = open_run(run)
    assert isinstance(task, SelfDistillation)
    scenes = evenly_spaced(task.dataset("test"), n)
    images, _ = next(iter(DataLoader(scenes, len(scenes), shuffle=False, device=task.config.device)))
    return segment.layer_scores(task.initial_model().teacher.backbone.model, images, scenes.masks)


def main() -> None:
    args = parse_args()
    last: dict[str, dict[str, list[float]]] = {}
    per_layer: dict[str, list[list[dict]]] = {}
    refs: dict[str, float] = {}
    for seed in args.seeds:
        for name in args.models:
            run = trained_run(name, seed, args)
            knn = read_metrics(run)[-1]["eval_knn_acc"]
            scored = {
                "teacher": report.segment_run(run, args.n_eval),
                "student": report.segment_run(run, args.n_eval, backbone="student"),
            }
            refs = scored["teacher"]["refs"]
            untrained = untrained_rows(run, args.n_eval)
            print(f"\n{name} seed {seed}: teacher k-NN test accuracy {knn:.4f}")
            print(scored["teacher"]["table"])
            per_layer.setdefault(name, []).append(scored["teacher"]["rows"])
            values = last.setdefault(name, {})
            values.setdefault("k-NN", []).append(knn)
            for who, rows in (("teacher", scored["teacher"]["rows"]), ("student", scored["student"]["rows"])):
                for key in KEYS:
                    values.setdefault(f"{who} {key}", []).append(rows[-1][key])
            for key in KEYS:
                values.setdefault(f"untrained {key}", []).append(untrained[-1][key])
    print(
        f"\nDINO on {args.data} ({args.preset}, {args.patch_size}px patches, width {args.dim}, {args.epochs} "
        f"epochs, batch {args.batch_size}, lr {args.lr}, 2 global + {args.local_crops} local crops, "
        f"{args.pool} features), seeds {args.seeds}, {args.n_eval} held-out scenes; mean +- std over seeds"
    )
    print(
        f"floor (centred box) {refs['floor']:.3f}; ceiling (best mask of whole patches) {refs['ceiling']:.3f}"
    )
    print("teacher, per layer (average / best head / normalized cut):")
    for name, runs in per_layer.items():
        for layer in range(len(runs[0])):
            cells = []
            for key in KEYS:
                v = np.array([rows[layer][key] for rows in runs])
                cells.append(f"{v.mean():.3f} +- {v.std():.3f}")
            print(f"  {name:5s} layer {layer + 1}: " + " / ".join(cells))
    print("last layer:")
    for name, values in last.items():
        print(f"  {name}")
        for key, v in values.items():
            print(f"    {key:18s} {np.mean(v):.3f} +- {np.std(v):.3f}   ({', '.join(f'{x:.3f}' for x in v)})")
    out = args.runs / f"dino_segmentation_{args.data}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    saved = {
        "args": {k: str(v) for k, v in vars(args).items()},
        "refs": refs,
        "last": last,
        "per_layer": per_layer,
    }
    out.write_text(json.dumps(saved, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    with threadpool_limits(limits=1, user_api="blas"):
        main()
