"""Tokens per second of generation against the context length, with and without the key/value cache.

The models: CausalCRATE (width 256, depth 6, 8 heads) and its GPT twin (width 128, depth 6,
4 heads, about the same parameters), vocabulary 256, block_size 1024, untrained weights
(speed does not depend on them). For each context length L a prompt of L tokens is extended
by ``--new`` tokens with greedy decoding, ``stream(..., cache=False)`` (the whole context
recomputed for every token) and ``cache=True`` (the prompt fed once, then one token per
step). Printed: the seconds to the first token (the prompt's forward, the same work both
ways) and the tokens per second after it (1 / the median time between tokens), each the
median of ``--repeats`` alternating runs, without / with the cache. The tokens of the two
runs are checked equal. The context stays within
block_size (past it the cache is rebuilt at every step, and both cost the same).

Usage::

    python benchmarks/generate_cache.py                      # CPU, L = 16 .. 1008
    python benchmarks/generate_cache.py --lengths 64 256 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

import numpy as np

from whitebox import backend, manual_seed
from whitebox.crate import GPT, CausalCRATE, TokenModel

VOCAB, BLOCK, DEPTH = 256, 1024, 6
MODELS = {
    "crate": lambda: CausalCRATE(VOCAB, BLOCK, 256, DEPTH, 8),
    "gpt": lambda: GPT(VOCAB, BLOCK, 128, DEPTH, 4),
}


def _run(model: TokenModel, prompt: np.ndarray, new: int, cache: bool) -> tuple[float, float, list[int]]:
    """(seconds to the first token, median seconds per later token, the tokens), greedy."""
    tokens, stamps = [], [time.perf_counter()]
    for token in model.stream(prompt, new, top_k=1, cache=cache):
        tokens.append(token)
        stamps.append(time.perf_counter())
    gaps = np.diff(stamps)
    return float(gaps[0]), float(np.median(gaps[1:])), tokens


def measure(name: str, lengths: list[int], new: int, repeats: int, device: str) -> list[dict[str, Any]]:
    """One row per context length: first-token seconds and later tokens per second, without
    and with the cache (medians over ``repeats`` alternating runs)."""
    manual_seed(0)
    model = MODELS[name]().to(device).eval()
    rng = np.random.default_rng(0)
    model.generate(rng.integers(0, VOCAB, 8), 2)  # warm-up
    rows = []
    for length in lengths:
        if length + new > BLOCK:
            raise SystemExit(f"--lengths: {length} + --new {new} exceeds block_size {BLOCK}")
        prompt = rng.integers(0, VOCAB, length)
        runs: dict[bool, list[tuple[float, float, list[int]]]] = {False: [], True: []}
        for _ in range(repeats):
            for cache in (False, True):
                runs[cache].append(_run(model, prompt, new, cache))
        if runs[False][0][2] != runs[True][0][2]:
            raise SystemExit(f"{name} L={length}: cached and uncached tokens differ")
        row: dict[str, Any] = {"model": name, "context": length}
        for cache, key in ((False, "uncached"), (True, "cached")):
            row[f"{key}_first_s"] = float(np.median([r[0] for r in runs[cache]]))
            row[f"{key}_tok_s"] = 1 / float(np.median([r[1] for r in runs[cache]]))
        rows.append(row)
        print(
            f"{name:6s} L={length:5d}  first token {row['uncached_first_s']:6.3f} s / "
            f"{row['cached_first_s']:6.3f} s   later tokens {row['uncached_tok_s']:8.1f} / "
            f"{row['cached_tok_s']:8.1f} tok/s   x{row['cached_tok_s'] / row['uncached_tok_s']:5.1f}"
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[16, 64, 256, 1008])
    parser.add_argument("--new", type=int, default=8, help="tokens generated per run (default 8)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS), default=sorted(MODELS))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", help="write the rows to this file")
    args = parser.parse_args()
    backend.check_device(args.device)
    print(f"greedy, {args.new} new tokens, {args.repeats} repeats; without / with the cache; {args.device}")
    rows = [
        row
        for name in args.models
        for row in measure(name, args.lengths, args.new, args.repeats, args.device)
    ]
    load = os.getloadavg()
    print(f"load average {load[0]:.1f}, {load[1]:.1f}, {load[2]:.1f} on {os.cpu_count()} cores")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(
                {"device": args.device, "new_tokens": args.new, "load": load, "rows": rows}, f, indent=1
            )


if __name__ == "__main__":
    main()
