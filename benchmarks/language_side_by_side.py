"""CRATE vs its black-box twin on language, side by side: same data, tokenizer, optimizer, budget.

Two pairs, each trained with ``whitebox.train.train`` for the same number of steps on the
same batches (same seed), then scored on the whole validation split (``evaluate``):

* causal: ``CausalCRATE`` vs ``GPT`` (next-token loss);
* masked: ``MaskedCRATE`` vs ``BERT`` (loss on masked tokens, masked-token accuracy).

The twins have about CRATE's parameter count (half its width; see ``PRESETS``). Targets: causal
CRATE's validation loss within 10% of GPT's; masked CRATE's masked-token accuracy within 3 points
of BERT's. Usage::

    python benchmarks/language_side_by_side.py                  # preset small, 600 steps each
    python benchmarks/language_side_by_side.py --steps 100 --preset tiny
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from whitebox.train import train
from whitebox.train.language import evaluate, language_config

PAIRS = {"causal": ("lm", ("crate", "gpt")), "masked": ("mlm", ("crate", "bert"))}


def run(task: str, model: str, args: argparse.Namespace, root: Path) -> dict:
    """Train one model and score it on the whole validation split."""
    config = language_config(
        task,
        model,
        args.preset,
        data=args.data,
        tokenizer=args.tokenizer,
        epochs=1,
        steps_per_epoch=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        warmup_steps=args.steps // 10,
        min_lr=args.lr / 10,
        seed=args.seed,
        eval_windows=8,
    )
    tic = time.perf_counter()
    result = train(config, root / f"{task}-{model}", progress=not args.quiet)
    seconds = time.perf_counter() - tic
    scores = evaluate(root / f"{task}-{model}")
    print(
        f"{task} {model}: {result['params']:,} parameters, {seconds:.0f} s, val loss {scores['loss']:.4f}",
        flush=True,
    )
    return {"task": task, "model": model, "params": result["params"], "seconds": seconds, **scores}


def table(rows: list[dict]) -> str:
    """The results as a fixed-width table, one row per model, and the verdict per pair."""
    lines = [
        f"{'pair':<7} {'model':<12} {'params':>8} {'val loss':>9} {'ppl':>7} {'bpc/acc':>8} {'time s':>7}"
    ]
    for r in rows:
        extra = f"{r['bpc']:.3f}" if "bpc" in r else f"{100 * r['acc']:.1f}%"
        pair = "causal" if r["task"] == "lm" else "masked"
        name = {"crate": "CRATE", "gpt": "GPT", "bert": "BERT"}[r["model"]]
        lines.append(
            f"{pair:<7} {name:<12} {r['params']:>8,} {r['loss']:>9.4f} {r['ppl']:>7.2f} {extra:>8} "
            f"{r['seconds']:>7.1f}"
        )
    by = {(r["task"], r["model"]): r for r in rows}
    if ("lm", "crate") in by and ("lm", "gpt") in by:
        ratio = by["lm", "crate"]["loss"] / by["lm", "gpt"]["loss"] - 1
        ok = "met" if ratio <= 0.10 else "NOT met"
        lines.append(f"causal: CRATE val loss {100 * ratio:+.1f}% vs GPT (target <= +10%: {ok})")
    if ("mlm", "crate") in by and ("mlm", "bert") in by:
        gap = 100 * (by["mlm", "bert"]["acc"] - by["mlm", "crate"]["acc"])
        ok = "met" if gap <= 3 else "NOT met"
        lines.append(f"masked: CRATE accuracy {-gap:+.1f} points vs BERT (target >= -3: {ok})")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", nargs="+", choices=sorted(PAIRS), default=["causal", "masked"])
    parser.add_argument("--data", default="pydoc")
    parser.add_argument("--tokenizer", default="char", choices=["char", "bpe"])
    parser.add_argument("--preset", default="small")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for pair in args.pairs:
            task, models = PAIRS[pair]
            rows += [run(task, model, args, Path(tmp)) for model in models]
    print(
        f"\n{args.data}, {args.tokenizer} tokenizer, preset {args.preset}, {args.steps} steps x batch "
        f"{args.batch_size}, AdamW lr {args.lr}, seed {args.seed}"
    )
    print(table(rows))


if __name__ == "__main__":
    main()
