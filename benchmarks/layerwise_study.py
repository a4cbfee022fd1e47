"""Does each CRATE layer compress and sparsify? One change at a time from a small baseline.

The CRATE paper's per-layer figures show, on ImageNet, the compression term R^c of the tokens
entering each MSSA falling with depth, the nonzero fraction of each ISTA output falling with
depth, and both curves lower after training than at initialization. This script trains small
CRATEs on mnist5k (4,000 train / 1,000 held-out images), keeps the weights at initialization and
after every epoch (``keep_epochs``), and measures as the paper does (``whitebox.measure``: tokens
unit-normalized per head, eps^2 = 0.01; ||Z||_0 / (dN)) on held-out and training images. For the
last epoch it also takes each layer apart (``whitebox.measure.halfsteps``): R^c against the
layer's own bases before and after LN1, after MSSA (+ residual), after LN2 and after ISTA, and
which ISTA entries the sign zeroes and which only the threshold eta lambda does.

Baseline: crate_mnist_tiny (dim 96, depth 4, 4 heads, 7x7 patches, lambda 0.1, learned MSSA
output projection), batch 64, peak lr 2e-3, 5 epochs. Each setting changes one thing (``SETTINGS``);
the headline ones run with two seeds. Printed per setting (held-out images, mean over seeds):

    acc              held-out accuracy after the last epoch
    Rc first->last   R^c of layer 1 and of the last layer, at the last epoch
    Rc down          layer-to-layer steps in which R^c falls, of depth - 1: at init -> last epoch
    Rc init->end     mean over layers of R^c, at initialization and at the last epoch
    nz ...           the same three for the nonzero fraction ||Z^{l+1}||_0 / (dN)
    LN1 dRc          mean over layers of R^c(LN1(Z^l)) - R^c(Z^l), all R^c against the layer's U^l
    MSSA dRc         mean over layers of R^c(Z^{l+1/2}) - R^c(Z^l) (the compression half-step,
                     Z^{l+1/2} = Z^l + MSSA(LN1(Z^l)))
    LN2 dRc          mean over layers of R^c(LN2(Z^{l+1/2})) - R^c(Z^{l+1/2})
    ISTA dRc         mean over layers of R^c(Z^{l+1}) - R^c(LN2(Z^{l+1/2}))
    thr0             share of ISTA entries zeroed by the threshold eta lambda alone (not the sign)
    scale            RMS of ISTA's pre-activation x P, to compare with eta lambda

    python benchmarks/layerwise_study.py                    # the whole study (~22 min, see below)
    python benchmarks/layerwise_study.py --only baseline tied_out --epochs 2
    python -m whitebox measure runs/layerwise_study/baseline_s0 --over-epochs   # one run's figure

Measured on the shared 2-core development machine (load average 5-11, nice 10, one BLAS thread):
about 17 minutes of training and 4 of measuring; the table and what it shows are in the README
("Does each layer compress and sparsify?") and tutorial 14.

Only mnist5k was run here: Fashion-MNIST (Debian's ``dataset-fashion-mnist``) was not installed
and CIFAR-10 not cached on that machine. ``--data fashion-mnist`` runs the same study on it (any
28x28 dataset; the presets' 7x7 and 4x4 patches need 28 px images).

Runs go to RUNS/layerwise_study/<setting>_s<seed> (a finished run is reused, not retrained);
results to RUNS/layerwise_study/results.json and the figures to figures/layerwise_*.png.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from whitebox import measure, viz
from whitebox.report import train_inputs
from whitebox.train import classify, train
from whitebox.train.run_files import epoch_checkpoints, load_epoch, read_metrics
from whitebox.train.task import open_run

#: name -> (model overrides, training settings, seeds). Each changes one thing from the baseline.
SETTINGS: dict[str, tuple[dict[str, Any], dict[str, Any], tuple[int, ...]]] = {
    "baseline": ({}, {}, (0, 1)),
    "tied_out": ({"tied_out": True}, {}, (0, 1)),
    "lam_0.5": ({"lam": 0.5}, {}, (0, 1)),
    "lam_5": ({"lam": 5.0}, {}, (0, 1)),
    "tied_lam_5": ({"tied_out": True, "lam": 5.0}, {}, (0, 1)),  # two changes: the two offers together
    "depth_8": ({"depth": 8}, {}, (0,)),
    "depth_12": ({"depth": 12}, {}, (0,)),
    "patch_4": ({"patch_size": 4}, {}, (0,)),
    "dim_192": ({"dim": 192}, {}, (0,)),
    "heads_8": ({"heads": 8}, {}, (0,)),
    "epochs_15": ({}, {"epochs": 15}, (0,)),
}
BASE = {"batch_size": 64, "lr": 2e-3}


def run_one(name: str, seed: int, runs: Path, epochs: int, data: str = "mnist5k") -> Path:
    """Train setting ``name`` with ``seed`` (keeping every epoch's weights) unless already done."""
    overrides, settings, _ = SETTINGS[name]
    settings = {**BASE, "epochs": epochs, **settings, "seed": seed, "keep_epochs": True}
    run = runs / f"{name}_s{seed}"
    if len(read_metrics(run)) >= settings["epochs"]:
        return run
    config = classify.image_config("crate", "mnist_tiny", data, overrides, **settings)
    tic = time.perf_counter()
    result = train(config, run, resume=True, progress=False)
    print(f"  {run.name}: held-out acc {result['eval_acc']:.4f}, {time.perf_counter() - tic:.0f} s")
    return run


def measure_one(run: Path, n: int) -> dict[str, Any]:
    """Per-layer curves at every kept epoch (held-out and train) and the last epoch's half-steps."""
    task, model = open_run(run)
    inputs = {"held-out": task.heldout_inputs(n), "train": train_inputs(task, n)}
    curves = {}
    for epoch, path in epoch_checkpoints(run).items():
        model.load_state_dict(load_epoch(path))
        curves[epoch] = {s: measure.layerwise_compression_sparsity(model, x) for s, x in inputs.items()}
    return {
        "curves": curves,
        "halfsteps": measure.halfsteps(model, inputs["held-out"]),
        "acc": read_metrics(run)[-1]["eval_acc"],
    }


def summarize(results: list[dict[str, Any]]) -> dict[str, float]:
    """The printed numbers of one setting (module docstring), averaged over its seeds."""
    rows = []
    for r in results:
        first, last = min(r["curves"]), max(r["curves"])
        init, end = r["curves"][first]["held-out"], r["curves"][last]["held-out"]
        rc, nz = np.array([x["compression"] for x in end]), np.array([x["sparsity"] for x in end])
        h = r["halfsteps"]
        rows.append(
            {
                "acc": r["acc"],
                "rc_first": rc[0],
                "rc_last": rc[-1],
                "rc_down": float(np.sum(np.diff(rc) < 0)),
                "rc_down_init": float(np.sum(np.diff([x["compression"] for x in init]) < 0)),
                "rc_init": np.mean([x["compression"] for x in init]),
                "rc_end": rc.mean(),
                "nz_first": nz[0],
                "nz_last": nz[-1],
                "nz_down": float(np.sum(np.diff(nz) < 0)),
                "nz_down_init": float(np.sum(np.diff([x["sparsity"] for x in init]) < 0)),
                "nz_init": np.mean([x["sparsity"] for x in init]),
                "nz_end": nz.mean(),
                "ln1_drc": np.mean([x["rc_in"] - x["rc_pre"] for x in h]),
                "mssa_drc": np.mean([x["rc_half"] - x["rc_pre"] for x in h]),
                "ln2_drc": np.mean([x["rc_ista_in"] - x["rc_half"] for x in h]),
                "ista_drc": np.mean([x["rc_out"] - x["rc_ista_in"] for x in h]),
                "thr0": np.mean([x["threshold_zero"] for x in h]),
                "scale": np.mean([x["scale"] for x in h]),
            }
        )
    out = {k: float(np.mean([row[k] for row in rows])) for k in rows[0]}
    out["acc_spread"] = float(np.ptp([row["acc"] for row in rows])) if len(rows) > 1 else 0.0
    out["seeds"] = len(rows)
    return out


def table(summaries: dict[str, dict[str, float]], depths: dict[str, int]) -> str:
    head = (
        f"{'setting':<10} {'seeds':>5} {'acc':>13} {'Rc first->last':>15} {'Rc down':>11}"
        f" {'Rc init->end':>14}"
        f" {'nz first->last':>14} {'nz down':>11} {'nz init->end':>12} {'LN1 dRc':>7} {'MSSA dRc':>8}"
        f" {'LN2 dRc':>7} {'ISTA dRc':>8} {'thr0':>6} {'scale':>5}"
    )
    lines = [head]
    for name, s in summaries.items():
        acc = f"{s['acc']:.4f}" + (f"±{s['acc_spread'] / 2:.3f}" if s["seeds"] > 1 else "")
        lines.append(
            f"{name:<10} {s['seeds']:>5} {acc:>13} {s['rc_first']:>7.1f}->{s['rc_last']:<6.1f}"
            f" {s['rc_down_init']:>4.1f}->{s['rc_down']:>3.1f}/{depths[name] - 1:<2}"
            f" {s['rc_init']:>6.1f}->{s['rc_end']:<6.1f} {s['nz_first']:>6.3f}->{s['nz_last']:<6.3f}"
            f" {s['nz_down_init']:>4.1f}->{s['nz_down']:>3.1f}/{depths[name] - 1:<2}"
            f" {s['nz_init']:>5.3f}->{s['nz_end']:<5.3f} {s['ln1_drc']:>7.2f} {s['mssa_drc']:>8.2f}"
            f" {s['ln2_drc']:>7.2f} {s['ista_drc']:>8.2f} {s['thr0']:>6.3f} {s['scale']:>5.2f}"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", nargs="+", choices=list(SETTINGS), help="run only these settings")
    p.add_argument("--epochs", type=int, default=5, help="epochs of every setting but epochs_15")
    p.add_argument("--n", type=int, default=200, help="held-out (and train) images measured")
    p.add_argument(
        "--data", default="mnist5k", help="a 28x28 dataset (mnist5k, fashion-mnist, mnist); default mnist5k"
    )
    p.add_argument("--runs", type=Path, default=Path("runs"))
    p.add_argument("--figures", type=Path, default=Path("figures"))
    args = p.parse_args()
    runs = args.runs / ("layerwise_study" if args.data == "mnist5k" else f"layerwise_study_{args.data}")
    names = args.only or list(SETTINGS)
    summaries, depths, everything = {}, {}, {}
    tic = time.perf_counter()
    with threadpool_limits(limits=1, user_api="blas"):
        for name in names:
            print(f"{name}:", flush=True)
            seeds = SETTINGS[name][2]
            measured = [measure_one(run_one(name, s, runs, args.epochs, args.data), args.n) for s in seeds]
            summaries[name] = summarize(measured)
            depths[name] = len(measured[0]["halfsteps"])
            everything[name] = measured
            title = f"CRATE on {args.data}, {name} (seed {seeds[0]}), {args.n} images"
            figure = (
                f"layerwise_{name}.png" if args.data == "mnist5k" else f"layerwise_{args.data}_{name}.png"
            )
            viz.plot_layerwise_epochs(measured[0]["curves"], args.figures / figure, title)
    print(f"\nheld-out images, last epoch unless said ({time.perf_counter() - tic:.0f} s in all):")
    print(table(summaries, depths))
    (runs / "results.json").write_text(
        json.dumps({"summaries": summaries, "runs": everything}, indent=1, default=str) + "\n"
    )


if __name__ == "__main__":
    main()
