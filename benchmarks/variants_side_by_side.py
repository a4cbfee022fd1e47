"""CRATE, CRATE-alpha, ToST and the black-box twin side by side, on images and on language.

Every model of a panel is trained with ``whitebox.train.train`` on the same data, with the same
optimizer, schedule, batch size and number of steps, for each seed:

* images: ``crate``, ``crate-alpha``, ``tost``, ``vit`` at the ``mnist_tiny`` size class (same
  patching, width, depth and heads; CRATE-alpha's overcomplete dictionary and ToST's and ViT's
  MLPs make them about 3-4x CRATE's weights) on Fashion-MNIST if it is on this machine
  (Debian's ``dataset-fashion-mnist`` or the cache), else on mnist5k; test accuracy.
* language: causal ``crate``, ``crate-alpha``, ``tost`` and ``gpt`` at the ``small`` preset
  (about equal parameter counts: see ``whitebox.crate.presets``) on the pydoc corpus, character
  tokens; loss on the whole validation split.

It prints, per model, the parameters, the mean and half-range over the seeds of the score and
of the training time. Times are wall-clock on whatever machine runs it (one BLAS thread).

    python benchmarks/variants_side_by_side.py                          # the README's numbers
    python benchmarks/variants_side_by_side.py --image-epochs 1 --lm-steps 20 --seeds 0
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from whitebox.data import load_dataset
from whitebox.train import classify, train
from whitebox.train.language import evaluate, language_config

IMAGE_MODELS = ("crate", "crate-alpha", "tost", "vit")
LM_MODELS = ("crate", "crate-alpha", "tost", "gpt")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--image-epochs", type=int, default=3)
    p.add_argument("--image-preset", default="mnist_tiny")
    p.add_argument("--lm-steps", type=int, default=150)
    p.add_argument("--lm-preset", default="small", choices=("tiny", "small", "base"))
    p.add_argument("--runs", type=Path, help="where the runs go (default: a temporary folder)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p.parse_args()


def image_data() -> str:
    """Fashion-MNIST if it is here already (nothing is downloaded), else mnist5k."""
    try:
        load_dataset("fashion-mnist", "train")
        load_dataset("fashion-mnist", "test")
    except FileNotFoundError:
        return "mnist5k"
    return "fashion-mnist"


def image_run(model: str, seed: int, data: str, args: argparse.Namespace, root: Path) -> dict[str, Any]:
    config = classify.image_config(
        model, args.image_preset, data, epochs=args.image_epochs, batch_size=128, lr=2e-3, seed=seed
    )
    tic = time.perf_counter()
    result = train(config, root / f"image-{model}-{seed}", progress=not args.quiet)
    seconds = time.perf_counter() - tic
    print(f"image {model} seed {seed}: acc {result['eval_acc']:.4f}, {seconds:.0f} s", flush=True)
    return {"params": result["params"], "score": result["eval_acc"], "seconds": seconds}


def lm_run(model: str, seed: int, args: argparse.Namespace, root: Path) -> dict[str, Any]:
    steps = args.lm_steps
    config = language_config(
        "lm", model, args.lm_preset, epochs=1, steps_per_epoch=steps, batch_size=32, lr=2e-3,
        warmup_steps=steps // 10, min_lr=2e-4, seed=seed, eval_windows=8,
    )  # fmt: skip
    run = root / f"lm-{model}-{seed}"
    tic = time.perf_counter()
    result = train(config, run, progress=not args.quiet)
    seconds = time.perf_counter() - tic
    loss = evaluate(run)["loss"]
    print(f"lm {model} seed {seed}: val loss {loss:.4f}, {seconds:.0f} s", flush=True)
    return {"params": result["params"], "score": loss, "seconds": seconds}


def table(title: str, score: str, results: dict[str, list[dict[str, Any]]]) -> str:
    """One row per model: parameters, score and training time as mean +- half-range over seeds."""
    lines = [title, f"{'model':12s} {'params':>9s} {score:>18s} {'train s':>12s}   per seed"]
    for model, runs in results.items():
        s = np.array([r["score"] for r in runs])
        t = np.array([r["seconds"] for r in runs])
        half = (s.max() - s.min()) / 2
        lines.append(
            f"{model:12s} {runs[0]['params']:9,d} {s.mean():10.4f} +- {half:.4f} "
            f"{t.mean():7.0f} +- {(t.max() - t.min()) / 2:3.0f}   " + ", ".join(f"{v:.4f}" for v in s)
        )
    return "\n".join(lines)


def main() -> None:
    args = parse_args()
    root = args.runs or Path(tempfile.mkdtemp(prefix="variants-"))
    data = image_data()
    print(f"images: {data} ({'Fashion-MNIST found' if data != 'mnist5k' else 'Fashion-MNIST not found'})")
    images: dict[str, list[dict[str, Any]]] = {m: [] for m in IMAGE_MODELS}
    text: dict[str, list[dict[str, Any]]] = {m: [] for m in LM_MODELS}
    for seed in args.seeds:
        for model in IMAGE_MODELS:
            images[model].append(image_run(model, seed, data, args, root))
        for model in LM_MODELS:
            text[model].append(lm_run(model, seed, args, root))
    seeds = ", ".join(map(str, args.seeds))
    print()
    print(
        table(
            f"{data}, {args.image_preset} size class, {args.image_epochs} epochs, batch 128, AdamW 2e-3, "
            f"random crops, seeds {seeds}",
            "test accuracy",
            images,
        )
    )
    print()
    print(
        table(
            f"pydoc corpus, {args.lm_preset} preset, {args.lm_steps} steps of 32 windows, AdamW 2e-3, "
            f"char tokens, seeds {seeds}",
            "val loss (nats)",
            text,
        )
    )


if __name__ == "__main__":
    with threadpool_limits(limits=1, user_api="blas"):  # see `python -m whitebox train --help`
        main()
