"""``python -m whitebox``: train, evaluate, measure and look inside CRATE (and ViT / GPT twins).

Subcommands (``python -m whitebox CMD --help`` for the options):

    train       train a model into a run directory (--task image | lm | mlm)
    eval        test accuracy of an image run; loss / perplexity / bits per char of a text run
    measure     per layer: R^c of the tokens entering attention and sparsity of the ISTA (MLP)
                outputs, on held-out inputs (table, JSON and plot in the run directory)
    attention   the cls token's attention over the patches, per head, in the last layers (PNG)
    figures     regenerate figures/ from the runs (see FIGURE_RUNS)
    demo        train CRATE on mnist5k on the CPU, then print and plot what it learned
    sample      generate text from a language-model run
    download    fetch a dataset into the cache

A run directory holds ``config.json``, ``metrics.jsonl`` and ``checkpoint.npz`` (see
``whitebox.train.loop``). A bad argument (unknown preset or dataset, batch size 0, an image
size the patch size does not divide, a missing run directory, ...) prints one line to stderr
and exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from threadpoolctl import threadpool_limits  # a dependency of scikit-learn

from whitebox import backend, measure, viz
from whitebox.crate.inspect import intermediates
from whitebox.data import available_datasets, load_dataset
from whitebox.data.text import CORPORA
from whitebox.train import image as image_task
from whitebox.train.loop import CHECKPOINT, CONFIG, load_config, read_metrics

TASKS = ("image", "lm", "mlm")
MODEL_CHOICES = ("crate", "vit", "gpt", "bert")
ARCH_NAMES = {"crate": "CRATE", "vit": "ViT", "gpt": "GPT", "bert": "BERT"}
#: What ``demo`` trains: CRATE-mnist-tiny (dim 96, depth 4, 4 heads, 7x7 patches, 120k
#: parameters) on the 4,000 mnist5k training images: 1.5-4 s an epoch on one CPU core; 96.8% held out.
DEMO = {
    "model": "crate",
    "preset": "mnist_tiny",
    "data": "mnist5k",
    "epochs": 25,
    "batch_size": 64,
    "lr": 2e-3,
}
DEMO_RUN = Path("runs/demo")
#: The runs ``figures`` reads: name -> (run directory, the command that makes it).
FIGURE_RUNS = {
    "demo": (DEMO_RUN, "python -m whitebox demo"),
    "fashion_crate": (Path("runs/fashion_crate"), "python benchmarks/fashion_side_by_side.py"),
    "fashion_vit": (Path("runs/fashion_vit"), "python benchmarks/fashion_side_by_side.py"),
}


class UsageError(Exception):
    """A bad argument: reported as one line on stderr, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is a single line (no usage dump)."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message} (see --help)")


def _number(text: str, kind: type, lowest: float, what: str) -> Any:
    """``kind(text)`` if it is >= ``lowest``, else an argparse error saying ``what`` was expected."""
    try:
        value = kind(text)
    except ValueError:
        value = None
    if value is None or not value >= lowest:
        raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
    return value


def _positive_int(text: str) -> int:
    return _number(text, int, 1, "a positive integer")


def _nonnegative_int(text: str) -> int:
    return _number(text, int, 0, "a non-negative integer")


def _nonnegative_float(text: str) -> float:
    return _number(text, float, 0, "a number >= 0")


def _positive_float(text: str) -> float:
    value = _number(text, float, 0, "a number > 0")
    if value == 0:
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text!r}")
    return value


def _run_dir(text: str) -> Path:
    path = Path(text)
    if not (path / CONFIG).is_file():
        what = "does not exist" if not path.exists() else f"has no {CONFIG} (not a run directory)"
        raise argparse.ArgumentTypeError(f"run directory {text} {what}")
    return path


def _add_threads_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--blas-threads",
        type=_positive_int,
        default=1,
        help="BLAS threads (default 1: the matrices are small, and BLAS threads competing with other "
        "processes for the cores slow training down several times over)",
    )


# ---- train ---------------------------------------------------------------------------------


def _add_train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--task", choices=TASKS, default="image", help="image classification or language (default image)"
    )
    p.add_argument(
        "--model",
        choices=MODEL_CHOICES,
        default="crate",
        help="crate|vit (image), crate|gpt (lm), crate|bert (mlm)",
    )
    p.add_argument(
        "--preset", help="size preset, e.g. mnist_tiny (image: whitebox.crate.PRESETS) or small (text)"
    )
    p.add_argument(
        "--data",
        help=f"dataset: {', '.join(available_datasets())} (image; default mnist5k) or a corpus (text)",
    )
    p.add_argument("--epochs", type=_positive_int)
    p.add_argument("--batch-size", type=_positive_int)
    p.add_argument("--lr", type=_nonnegative_float, help="peak learning rate of the warmup-cosine schedule")
    p.add_argument("--min-lr", type=_nonnegative_float)
    p.add_argument("--optimizer", choices=("adamw", "lion"))
    p.add_argument("--weight-decay", type=_nonnegative_float)
    p.add_argument("--warmup", type=_nonnegative_float, help="warmup length: epochs (image) or steps (text)")
    p.add_argument("--label-smoothing", type=_nonnegative_float, help="image only")
    p.add_argument("--seed", type=_nonnegative_int)
    p.add_argument("--device", choices=("cpu", "cuda"))
    p.add_argument(
        "--steps", type=_positive_int, help="text only: about this many steps in all (overrides --epochs)"
    )
    p.add_argument("--tokenizer", choices=("char", "bpe"), help="text only")
    sizes = p.add_argument_group("model size overrides")
    for name in ("dim", "depth", "heads", "dim-head", "patch-size"):
        sizes.add_argument(f"--{name}", type=_positive_int)
    sizes.add_argument("--block-size", type=_positive_int, help="text only: context length")
    sizes.add_argument("--dropout", type=_nonnegative_float)
    sizes.add_argument("--lam", type=_nonnegative_float, help="ISTA sparsity weight lambda")
    sizes.add_argument("--eta", type=_nonnegative_float, help="ISTA step size eta")
    p.add_argument("--no-augment", action="store_true", help="image only: no random crops / flips")
    _add_threads_arg(p)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--out", required=True, type=Path, help="run directory, e.g. runs/NAME")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")


def _image_config(args: argparse.Namespace) -> dict[str, Any]:
    if args.model not in image_task.MODELS:
        raise UsageError(f"--task image takes --model crate or vit, not {args.model}")
    if args.data is not None and args.data not in available_datasets():
        raise UsageError(f"unknown dataset {args.data!r}; choose one of {', '.join(available_datasets())}")
    overrides = {
        "dim": args.dim,
        "depth": args.depth,
        "heads": args.heads,
        "dim_head": args.dim_head,
        "patch_size": args.patch_size,
        "dropout": args.dropout,
    }
    if args.model == "crate":
        overrides.update(lam=args.lam, eta=args.eta)
    settings = {
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "min_lr": args.min_lr,
        "optimizer": args.optimizer,
        "weight_decay": args.weight_decay,
        "warmup": args.warmup,
        "label_smoothing": args.label_smoothing,
        "seed": args.seed,
        "device": args.device,
        "augment": False if args.no_augment else None,
    }
    try:
        return image_task.image_config(
            args.model, args.preset or "mnist_tiny", args.data or "mnist5k", overrides, **settings
        )
    except (ValueError, FileNotFoundError) as exc:
        raise UsageError(str(exc)) from exc


def _text_config(args: argparse.Namespace, text: Any) -> dict[str, Any]:
    keys = (
        "task",
        "model",
        "preset",
        "data",
        "tokenizer",
        "epochs",
        "steps",
        "batch_size",
        "lr",
        "min_lr",
        "optimizer",
        "weight_decay",
        "seed",
        "device",
        "dim",
        "depth",
        "heads",
        "dim_head",
        "block_size",
        "dropout",
        "lam",
        "eta",
    )
    config = {k: getattr(args, k) for k in keys if getattr(args, k) is not None}
    if args.warmup is not None:
        config["warmup"] = round(args.warmup)
    config["progress"] = not args.quiet
    if args.data is not None and args.data not in CORPORA:
        raise UsageError(
            f"unknown corpus {args.data!r} for --task {args.task}; choose one of {', '.join(CORPORA)}"
        )
    try:
        text.resolve_config(config)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    return config


def _text_module() -> Any:
    """whitebox.train.text, or a UsageError when this installation lacks it."""
    try:
        from whitebox.train import text
    except ImportError as exc:
        raise UsageError(
            f"language tasks are not available: whitebox.train.text cannot be imported ({exc})"
        ) from exc
    return text


def _check_out(out: Path, resume: bool) -> None:
    if resume and not (out / CHECKPOINT).exists():
        raise UsageError(f"--resume: {out} has no {CHECKPOINT} to continue from")
    if not resume and (out / CHECKPOINT).exists():
        raise UsageError(f"{out} already holds a run; pass --resume to continue it or choose another --out")


def _check_device(device: str | None) -> None:
    if device == "cuda":
        try:
            backend.cupy()
        except RuntimeError as exc:
            raise UsageError(str(exc)) from exc


def cmd_train(args: argparse.Namespace) -> None:
    _check_out(args.out, args.resume)
    _check_device(args.device)
    saved_task = load_config(args.out).get("task", "image") if args.resume else args.task
    if saved_task in ("lm", "mlm"):
        text = _text_module()
        config = load_config(args.out) if args.resume else _text_config(args, text)
        result = text.train(config, args.out, resume=args.resume)
        scores = {k: v for k, v in result.items() if k.startswith("eval_")}
        print(
            f"{args.out}: {result['params']:,} parameters; "
            + ", ".join(f"{k} {v:.4f}" for k, v in scores.items())
        )
        return
    config = load_config(args.out) if args.resume else _image_config(args)
    if args.resume:
        print(f"resuming {args.out} with its saved config ({config['epochs']} epochs)")
    tic = time.perf_counter()
    result = image_task.train(config, args.out, resume=args.resume, progress=not args.quiet)
    print(
        f"{args.out}: {config['model']} {config['preset']} on {config['data']}, "
        f"{result['params']:,} parameters, test accuracy {result['test_acc']:.4f} "
        f"after {config['epochs']} epochs ({time.perf_counter() - tic:.0f} s)"
    )


# ---- eval / measure / attention / sample -----------------------------------------------------


def _task(run: Path) -> str:
    return load_config(run).get("task", "image")


def _require_checkpoint(run: Path) -> None:
    if not (run / CHECKPOINT).exists():
        raise UsageError(f"{run} has no {CHECKPOINT} yet (no epoch of it has finished)")


def cmd_eval(args: argparse.Namespace) -> None:
    _require_checkpoint(args.run)
    if _task(args.run) != "image":
        scores = _text_module().evaluate(args.run)
        print(
            f"{args.run}: "
            + ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in scores.items())
        )
        return
    config = load_config(args.run)
    scores = image_task.evaluate(args.run)
    n = len(load_dataset(config["data"], "test"))
    print(
        f"{args.run}: test accuracy {scores['accuracy']:.4f} (cross-entropy {scores['loss']:.4f}) "
        f"on {n} {config['data']} test images"
    )


def measure_run(run: Path, n: int) -> tuple[list[dict[str, Any]], str]:
    """Per-layer compression and sparsity of a run on ``n`` held-out inputs, and a title for them."""
    _require_checkpoint(run)
    if _task(run) == "image":
        model, config = image_task.load_run(run)
        inputs = image_task.heldout_images(config, n)[0]
        what = f"{len(inputs)} held-out {config['data']} images"
    else:
        text_mod = _text_module()
        model, _, config = text_mod.load_run(run)
        inputs = text_mod.heldout_inputs(run, n)
        what = f"{len(inputs)} held-out windows of {config['data']}"
    title = f"{ARCH_NAMES.get(config['model'], config['model'])} ({config['preset']}) {run.name}, {what}"
    return measure.layerwise_compression_sparsity(model, inputs), title


def cmd_measure(args: argparse.Namespace) -> None:
    rows, title = measure_run(args.run, args.n)
    print(measure.format_table(rows, title))
    out = args.out or args.run
    (out / "measure.json").parent.mkdir(parents=True, exist_ok=True)
    (out / "measure.json").write_text(json.dumps(rows, indent=1) + "\n")
    path = viz.plot_layerwise({args.run.name: rows}, out / "measure.png", title)
    print(f"wrote {out / 'measure.json'} and {path}")


def attention_figures(run: Path, out: Path, n: int, layers: int, prefix: str = "attention") -> list[Path]:
    """PNG per layer (the last ``layers``): the cls token's attention per head on ``n`` test images."""
    _require_checkpoint(run)
    if _task(run) != "image":
        raise UsageError(f"attention maps are drawn for image runs; {run} is a {_task(run)} run")
    model, config = image_task.load_run(run)
    images, raw, labels = image_task.heldout_images(config, n)
    logits, rec = intermediates(model, images)
    names = load_dataset(config["data"], "test").class_names
    grid = tuple(s // p for s, p in zip(model.image_size, model.patch_size, strict=True))
    depth = len(rec["attention"])
    paths = []
    for layer in range(max(0, depth - layers), depth):
        maps = viz.cls_attention_maps(rec["attention"][layer], grid)
        tags = [f"{names[y]} -> {names[p]}" for y, p in zip(labels, logits.argmax(-1), strict=True)]
        title = f"{ARCH_NAMES[config['model']]} {run.name}: cls attention, layer {layer + 1}/{depth}"
        paths.append(viz.plot_attention(raw, maps, out / f"{prefix}_layer{layer + 1}.png", title, tags))
    return paths


def cmd_attention(args: argparse.Namespace) -> None:
    for path in attention_figures(args.run, args.out or args.run, args.n, args.layers):
        print(f"wrote {path}")


def cmd_sample(args: argparse.Namespace) -> None:
    _require_checkpoint(args.run)
    if _task(args.run) == "image":
        raise UsageError(f"sample needs a language-model run; {args.run} is an image run")
    print(
        _text_module().sample(
            args.run, args.prompt, args.max_new_tokens, args.temperature, args.top_k, args.seed
        )
    )


def cmd_download(args: argparse.Namespace) -> None:
    if args.name not in available_datasets():
        raise UsageError(f"unknown dataset {args.name!r}; choose one of {', '.join(available_datasets())}")
    for split in ("train", "test"):
        try:
            data = load_dataset(args.name, split, download=True)
        except (RuntimeError, OSError, ValueError) as exc:  # no network, a bad mirror, a checksum
            raise SystemExit(f"error: download of {args.name} failed: {exc}") from exc
        print(f"{args.name} {split}: {len(data)} images of shape {data.image_shape}")


# ---- figures and demo ----------------------------------------------------------------------


def demo_figures(run: Path, figures: Path, measured: tuple[list[dict[str, Any]], str]) -> list[Path]:
    """demo_training.png, demo_layerwise.png (from ``measured`` = measure_run(run, n)) and
    demo_attention_layer*.png (the last two layers)."""
    rows, title = measured
    return [
        viz.plot_training(read_metrics(run), figures / "demo_training.png", "CRATE on mnist5k"),
        viz.plot_layerwise({"CRATE": rows}, figures / "demo_layerwise.png", title),
        *attention_figures(run, figures, 4, 2, prefix="demo_attention"),
    ]


def run_figures(runs: dict[str, Path], figures: Path, n: int = 500) -> list[Path]:
    """The figures of the demo and Fashion-MNIST runs that exist in ``runs`` (name -> directory)."""
    made: list[Path] = []
    if "demo" in runs:
        made += demo_figures(runs["demo"], figures, measure_run(runs["demo"], n))
    pair = [runs.get("fashion_crate"), runs.get("fashion_vit")]
    if all(pair):
        curves = {name: measure_run(run, n)[0] for name, run in zip(("CRATE", "ViT"), pair, strict=True)}
        made.append(
            viz.plot_layerwise(curves, figures / "fashion_layerwise.png", "Fashion-MNIST, same budget")
        )
        for name, run in zip(("crate", "vit"), pair, strict=True):
            made += attention_figures(run, figures, 4, 1, prefix=f"fashion_{name}_attention")
    return made


def cmd_figures(args: argparse.Namespace) -> None:
    found = {}
    for name, (default, how) in FIGURE_RUNS.items():
        run = args.runs / default.name
        if (run / CHECKPOINT).exists():
            found[name] = run
        else:
            print(f"skipping {name}: {run} not found (make it with `{how}`)")
    for path in run_figures(found, args.figures):
        print(f"wrote {path}")


def cmd_demo(args: argparse.Namespace) -> None:
    _check_device(args.device)
    settings = {"epochs": args.epochs or DEMO["epochs"], "batch_size": DEMO["batch_size"], "lr": DEMO["lr"]}
    settings["device"] = args.device
    config = image_task.image_config(DEMO["model"], DEMO["preset"], DEMO["data"], **settings)
    print(
        f"demo: CRATE {DEMO['preset']} on {DEMO['data']} (4,000 train / 1,000 held-out images), "
        f"{config['epochs']} epochs on the {config['device']} -> {args.out}"
    )
    tic = time.perf_counter()
    result = image_task.train(config, args.out, resume=False, progress=not args.quiet)
    seconds = time.perf_counter() - tic
    print(
        f"held-out accuracy {result['test_acc']:.4f} ({round(result['test_acc'] * 1000)}/1000) "
        f"after {seconds:.0f} s of training ({result['params']:,} parameters)"
    )
    measured = measure_run(args.out, 500)
    print(measure.format_table(measured[0], "per layer, on 500 held-out images:"))
    for path in demo_figures(args.out, args.figures, measured):
        print(f"wrote {path}")


# ---- the parser ----------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="whitebox", description="CRATE, the white-box transformer, from scratch.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def command(name: str, func: Callable[[argparse.Namespace], None], about: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=about, description=about)
        p.set_defaults(func=func)
        return p

    _add_train_args(command("train", cmd_train, "train a model into a run directory"))
    p = command("eval", cmd_eval, "held-out accuracy (image) or loss/perplexity (text) of a run")
    p.add_argument("run", type=_run_dir)
    p = command("measure", cmd_measure, "per-layer compression R^c and sparsity of a run")
    p.add_argument("run", type=_run_dir)
    p.add_argument(
        "--n", type=_positive_int, default=500, help="held-out inputs to average over (default 500)"
    )
    p.add_argument(
        "--out", type=Path, help="where measure.json / measure.png go (default: the run directory)"
    )
    p = command("attention", cmd_attention, "cls-token attention maps of the last layers, per head")
    p.add_argument("run", type=_run_dir)
    p.add_argument("--n", type=_positive_int, default=6, help="test images (default 6)")
    p.add_argument("--layers", type=_positive_int, default=2, help="how many last layers (default 2)")
    p.add_argument("--out", type=Path, help="folder for attention_layer*.png (default: the run directory)")
    p = command(
        "figures", cmd_figures, "regenerate figures/ from runs/demo, runs/fashion_crate, runs/fashion_vit"
    )
    p.add_argument("--runs", type=Path, default=Path("runs"), help="folder holding the runs (default runs)")
    p.add_argument("--figures", type=Path, default=Path("figures"), help="output folder (default figures)")
    p = command("demo", cmd_demo, "train CRATE on mnist5k (CPU, a few minutes) and show what it learned")
    p.add_argument(
        "--out", type=Path, default=DEMO_RUN, help=f"run directory (default {DEMO_RUN}; overwritten)"
    )
    p.add_argument(
        "--figures", type=Path, default=Path("figures"), help="where demo_*.png go (default figures)"
    )
    p.add_argument("--epochs", type=_positive_int, help=f"default {DEMO['epochs']}")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    _add_threads_arg(p)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p = command("sample", cmd_sample, "generate text from a language-model run")
    p.add_argument("run", type=_run_dir)
    p.add_argument("--prompt", default="", help="text to continue (mlm: text with [MASK]s to fill)")
    p.add_argument("--max-new-tokens", type=_positive_int, default=200)
    p.add_argument("--temperature", type=_positive_float, default=0.8)
    p.add_argument("--top-k", type=_positive_int)
    p.add_argument("--seed", type=_nonnegative_int, default=0)
    p = command("download", cmd_download, "fetch a dataset into the cache")
    p.add_argument("name", help=", ".join(available_datasets()))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default sys.argv[1:]); returns the exit status."""
    try:
        args = build_parser().parse_args(argv)
        with threadpool_limits(limits=getattr(args, "blas_threads", None), user_api="blas"):
            args.func(args)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; continue a training run with `train --out RUN --resume`", file=sys.stderr)
        return 130
    return 0
