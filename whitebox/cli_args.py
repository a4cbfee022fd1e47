"""The arguments of ``python -m whitebox``: one parser per subcommand, and the checks of numbers
and run directories that make a bad argument a one-line error (``UsageError``)."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from whitebox.data import available_datasets
from whitebox.data.text import CORPORA
from whitebox.report import BACKBONES
from whitebox.segment import METHODS
from whitebox.train.run_files import CONFIG

TASKS = ("image", "lm", "mlm", "mae", "dino")
MODEL_CHOICES = ("crate", "vit", "gpt", "bert", "crate-alpha", "tost")
#: What ``demo`` trains: CRATE-mnist-tiny (dim 96, depth 4, 4 heads, 7x7 patches, 120k
#: parameters) on the 4,000 mnist5k training images: 1.5-4 s an epoch on one CPU core; 96.8% held out.
#: Warmup: one epoch, ceil(4000 / 64) = 63 steps.
DEMO = {
    "model": "crate",
    "preset": "mnist_tiny",
    "data": "mnist5k",
    "epochs": 25,
    "batch_size": 64,
    "lr": 2e-3,
}
DEMO_RUN = Path("runs/demo")
#: The most tokens ``sample`` generates in one call.
MAX_NEW_TOKENS = 10_000
#: The train arguments that make a run's config (all default to None, or False: not given).
TRAIN_SETTINGS = (
    "task", "model", "preset", "data", "epochs", "batch_size", "lr", "min_lr", "optimizer", "weight_decay",
    "warmup_steps", "clip_norm", "label_smoothing", "seed", "device", "steps", "tokenizer", "dim", "depth",
    "heads", "dim_head", "patch_size", "block_size", "dropout", "lam", "eta", "no_augment", "mask_ratio",
    "norm_pix_loss", "local_crops", "out_dim", "momentum", "teacher_temp", "pool",
)  # fmt: skip


def data_names() -> list[str]:
    """Every name ``--data`` and ``download`` know: image datasets and text corpora."""
    return sorted({*available_datasets(), *CORPORA})


class UsageError(Exception):
    """A bad argument: reported as one line on stderr, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is a single line (no usage dump) and options are never
    abbreviated (so the old ``--warmup``, in epochs, is an error, not ``--warmup-steps``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, allow_abbrev=False, **kwargs)

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


def _max_new_tokens(text: str) -> int:
    value = _number(text, int, 1, f"an integer in [1, {MAX_NEW_TOKENS}]")
    if value > MAX_NEW_TOKENS:
        raise argparse.ArgumentTypeError(f"must be an integer in [1, {MAX_NEW_TOKENS}], got {text!r}")
    return value


def _positive_float(text: str) -> float:
    value = _number(text, float, 0, "a number > 0")
    if value == 0:
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text!r}")
    return value


def _fraction(text: str) -> float:
    value = _number(text, float, 0, "a number between 0 and 1")
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be a number between 0 and 1 (exclusive), got {text!r}")
    return value


def _run_dir(text: str) -> Path:
    path = Path(text)
    if not (path / CONFIG).is_file():
        what = "does not exist" if not path.exists() else f"has no {CONFIG} (not a run directory)"
        raise argparse.ArgumentTypeError(f"run directory {text} {what}")
    return path


def check_out(out: Path) -> None:
    """A one-line error, before any work, where ``out`` cannot be created or written (nothing is made)."""
    parent = out
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        what = "is not a folder" if not parent.is_dir() else "is not writable"
        raise UsageError(f"--out {out} cannot be created: {parent} {what}")


def _add_threads_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--blas-threads",
        type=_positive_int,
        default=1,
        help="BLAS threads (default 1) when WHITEBOX_NUM_THREADS=1; otherwise whitebox splits each large op "
        "over the cores itself (WHITEBOX_NUM_THREADS, default: the cores it may use) and runs BLAS on one "
        "thread per block",
    )


def _add_train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--task",
        choices=TASKS,
        help="image classification, language (lm, mlm), masked autoencoding of images (mae) or dino "
        "(images without labels); default image",
    )
    p.add_argument(
        "--model",
        choices=MODEL_CHOICES,
        help="crate|vit|crate-alpha|tost (image), crate|gpt|crate-alpha|tost (lm), crate|bert (mlm), "
        "crate|vit (mae, dino); default crate",
    )
    p.add_argument(
        "--preset", help="size preset, e.g. mnist_tiny (image: whitebox.crate.PRESETS) or small (text)"
    )
    p.add_argument(
        "--data",
        help=f"dataset: {', '.join(available_datasets())} (image; default mnist5k) or a corpus (text); "
        "or your own: an .npz file or a folder ROOT/<class>/<images> (image), a UTF-8 text file or a "
        "folder of .txt files (text)",
    )
    p.add_argument(
        "--image-size", type=_positive_int, help="your own images: resize them all to this size (square)"
    )
    p.add_argument(
        "--val-fraction",
        type=_fraction,
        help="held-out fraction: of your own images when they have no test split, of the text (default 0.1)",
    )
    p.add_argument("--epochs", type=_positive_int)
    p.add_argument("--batch-size", type=_positive_int)
    p.add_argument("--lr", type=_nonnegative_float, help="peak learning rate of the warmup-cosine schedule")
    p.add_argument("--min-lr", type=_nonnegative_float)
    p.add_argument("--optimizer", choices=("adamw", "lion"))
    p.add_argument("--weight-decay", type=_nonnegative_float)
    p.add_argument(
        "--clip-norm", type=_nonnegative_float, help="clip the gradient's global L2 norm (default 1; 0: off)"
    )
    p.add_argument(
        "--warmup-steps",
        type=_nonnegative_int,
        help="optimizer steps of linear warmup (default: one epoch for images, 50 for text)",
    )
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
    p.add_argument(
        "--mask-ratio", type=_positive_float, help="mae only: fraction of patches hidden (default 0.75)"
    )
    p.add_argument(
        "--norm-pix-loss", action="store_true", default=None, help="mae only: standardize each target patch"
    )
    p.add_argument(
        "--keep-epochs",
        action="store_true",
        help="also keep the weights at init and after every epoch (epoch_NNN.npz; measure --over-epochs)",
    )
    dino = p.add_argument_group("dino only (whitebox.train.dino.DINOConfig has the rest)")
    dino.add_argument("--local-crops", type=int, help="local views per image (default 2)")
    dino.add_argument("--out-dim", type=int, help="outputs of the projection head (default 256)")
    dino.add_argument("--momentum", type=float, help="the teacher's starting EMA momentum (default 0.98)")
    dino.add_argument("--teacher-temp", type=float, help="the teacher's temperature (default 0.02)")
    dino.add_argument(
        "--pool",
        choices=("cls", "mean"),
        help="backbone feature: cls token or mean of the tokens (default mean)",
    )
    _add_threads_arg(p)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--out", required=True, type=Path, help="run directory, e.g. runs/NAME")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out from its last checkpoint (--epochs / --steps extend it, --lr, "
        "--min-lr, --warmup-steps, --clip-norm may change; the model, its data and tokenizer cannot)",
    )
    p.add_argument(
        "--distributed",
        action="store_true",
        help="one rank of a data-parallel run started by `mpiexec -n N` (or `whitebox launch -n N "
        "train ...`); --batch-size is the global batch, split over the ranks",
    )
    p.add_argument(
        "--rank-timeout",
        type=_positive_float,
        default=300.0,
        help="--distributed: seconds a rank waits for the others before ending the run (default 300)",
    )


def build_parser(commands: dict[str, Callable[[argparse.Namespace], None]]) -> argparse.ArgumentParser:
    """The parser of every subcommand; ``commands`` maps each name to the function it runs."""
    parser = _Parser(prog="whitebox", description="CRATE, the white-box transformer, from scratch.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def command(name: str, about: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=about, description=about)
        p.set_defaults(func=commands[name])
        return p

    _add_train_args(command("train", "train a model into a run directory"))
    p = command("eval", "held-out accuracy (image), loss/perplexity (text) or masked MSE (mae) of a run")
    p.add_argument("run", type=_run_dir)
    p.add_argument("--knn", action="store_true", help="mae, dino: k-NN accuracy of the frozen features")
    p.add_argument(
        "--linear-probe", action="store_true", help="mae, dino: linear-probe accuracy of the frozen features"
    )
    p.add_argument(
        "--pool",
        choices=("cls", "mean", "both"),
        help="mae probes: which feature (default both; a dino run reads its config's pool)",
    )
    p = command("measure", "per-layer compression R^c and sparsity of a run")
    p.add_argument("run", type=_run_dir)
    p.add_argument(
        "--n", type=_positive_int, default=500, help="held-out inputs to average over (default 500)"
    )
    p.add_argument(
        "--out", type=Path, help="where measure.json / measure.png go (default: the run directory)"
    )
    p.add_argument(
        "--over-epochs",
        action="store_true",
        help="measure the weights kept at init and after every epoch (a --keep-epochs run), on held-out "
        "and training inputs: measure_epochs.json / measure_epochs.png, one curve per epoch",
    )
    p = command("attention", "cls-token attention maps of the last layers, per head")
    p.add_argument("run", type=_run_dir)
    p.add_argument("--n", type=_positive_int, default=6, help="test images (default 6)")
    p.add_argument("--layers", type=_positive_int, default=2, help="how many last layers (default 2)")
    p.add_argument("--out", type=Path, help="folder for attention_layer*.png (default: the run directory)")
    p = command("reconstruct", "masked-autoencoder runs: original, masked input, reconstructions (PNG)")
    p.add_argument("runs", type=_run_dir, nargs="+", help="one run, or several side by side (same data)")
    p.add_argument("--n", type=_positive_int, default=8, help="test images (default 8)")
    p.add_argument("--out", type=Path, help="PNG path (default: RUN/reconstructions.png of the first run)")
    p = command("segment", "mean IoU of attention masks and normalized cuts against true masks")
    p.add_argument("run", type=_run_dir, help="an image run on scenes-mnist or scenes-fashion")
    p.add_argument(
        "--method",
        choices=METHODS,
        default="attention",
        help="masks of the headline and the figure: the head-average cls attention (60%% of its mass; "
        "default) or the normalized cut; the table has both",
    )
    p.add_argument(
        "--layer", type=_positive_int, help="layer of the headline and the figure, from 1 (default: last)"
    )
    p.add_argument("--n", type=_positive_int, default=500, help="held-out scenes scored (default 500)")
    p.add_argument(
        "--backbone",
        choices=BACKBONES,
        help="a dino run only: whose attention, the EMA teacher's (default; what k-NN and the probe read) "
        "or the student's",
    )
    p.add_argument(
        "--out", type=Path, help="folder for the figure and segment.json (default: the run directory)"
    )
    _add_threads_arg(p)
    p = command("figures", "regenerate figures/ from runs/demo, runs/fashion_crate, runs/fashion_vit")
    p.add_argument("--runs", type=Path, default=Path("runs"), help="folder holding the runs (default runs)")
    p.add_argument("--figures", type=Path, default=Path("figures"), help="output folder (default figures)")
    p = command("demo", "train CRATE on mnist5k (CPU, a few minutes) and show what it learned")
    p.add_argument(
        "--out", type=Path, default=DEMO_RUN, help=f"run directory (default {DEMO_RUN}; must not hold a run)"
    )
    p.add_argument(
        "--figures", type=Path, default=Path("figures"), help="where demo_*.png go (default figures)"
    )
    p.add_argument("--epochs", type=_positive_int, help=f"default {DEMO['epochs']}")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    _add_threads_arg(p)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p = command("sample", "generate text from a language-model run")
    p.add_argument("run", type=_run_dir)
    p.add_argument("--prompt", default="", help="text to continue (mlm: text with [MASK]s to fill)")
    p.add_argument("--max-new-tokens", type=_max_new_tokens, default=200, help=f"1 to {MAX_NEW_TOKENS}")
    p.add_argument("--temperature", type=_positive_float, default=0.8)
    p.add_argument("--top-k", type=_positive_int)
    p.add_argument("--seed", type=_nonnegative_int, default=0)
    p = command("download", "fetch a dataset or a corpus into the cache")
    p.add_argument("name", help=", ".join(data_names()))
    p = command("launch", "run `train ...` on N processes through mpiexec (pip install -e '.[distributed]')")
    p.add_argument("-n", type=_positive_int, required=True, help="number of processes (ranks)")
    p.add_argument("command_line", nargs=argparse.REMAINDER, help="train and its arguments")
    return parser
