"""``python -m whitebox``: train, evaluate, measure and look inside CRATE (and ViT / GPT twins).

Subcommands (``python -m whitebox CMD --help`` for the options):

    train       train a model into a run directory (--task image | lm | mlm | mae | dino)
    eval        test accuracy of an image run; loss / perplexity / bits per char of a text run;
                masked MSE of a mae run; with --knn / --linear-probe, probes of the frozen features
                of a mae or dino run (whitebox.features)
    measure     per layer: R^c of the tokens entering attention and sparsity of the ISTA (MLP)
                outputs, on held-out inputs (table, JSON and plot in the run directory)
    attention   the cls token's attention over the patches, per head, in the last layers (PNG)
    reconstruct mae runs: original, masked input and each run's reconstruction (PNG)
    segment     score an image or dino run on scenes with true masks as a segmenter: mean IoU per layer
                and head against a floor and a ceiling, and a figure (whitebox.segment)
    figures     regenerate figures/ from the runs (see FIGURE_RUNS)
    demo        train CRATE on mnist5k on the CPU, then print and plot what it learned
    sample      generate text from a language-model run
    download    fetch a dataset into the cache
    launch      run a command on N processes with MPI: ``launch -n 2 train ...`` is
                ``mpiexec -n 2 python -m whitebox train ... --distributed``

This module turns arguments into calls: the parser is ``whitebox.cli_args``, training
``whitebox.train``, reports and figures ``whitebox.report``. A run directory holds
``config.json``, ``metrics.jsonl`` and ``checkpoint.npz`` (see ``whitebox.train.loop``). A bad
argument (unknown preset or dataset, batch size 0, an image size the patch size does not divide,
a missing run directory, ...) prints one line to stderr and exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from threadpoolctl import threadpool_limits  # a dependency of scikit-learn

from whitebox import backend, distributed, host_threads, invertibility, measure, report, viz
from whitebox.cli_args import DEMO, TRAIN_SETTINGS, UsageError, build_parser, check_out, data_names
from whitebox.data import load_dataset
from whitebox.data.download import ChecksumError
from whitebox.data.text import CORPORA, load_corpus
from whitebox.train import autoencode, classify, dino, language, task
from whitebox.train.config import ConfigError, TrainConfig, check_applicable, read_config, resume_config
from whitebox.train.run_files import CHECKPOINT, CONFIG, RunError, load_checkpoint, write_text_atomic

#: The runs ``figures`` reads: name -> (run directory, the command that makes it).
FIGURE_RUNS = {
    "demo": (Path("runs/demo"), "python -m whitebox demo"),
    "fashion_crate": (Path("runs/fashion_crate"), "python benchmarks/fashion_side_by_side.py"),
    "fashion_vit": (Path("runs/fashion_vit"), "python benchmarks/fashion_side_by_side.py"),
}
_OPTIM = (
    "epochs",
    "batch_size",
    "lr",
    "min_lr",
    "optimizer",
    "weight_decay",
    "warmup_steps",
    "clip_norm",
    "seed",
    "device",
    "keep_epochs",
)
_TEXT = ("data", "tokenizer", "dim", "depth", "heads", "dim_head", "block_size", "dropout", "lam", "eta")


def _config(args: argparse.Namespace) -> TrainConfig:
    """The config of a new run from the train arguments (None: the task's default)."""
    settings = {k: getattr(args, k) for k in (*_OPTIM, "val_fraction")}
    task_name, model = args.task or "image", args.model or "crate"
    if task_name in ("lm", "mlm"):
        if args.image_size is not None:
            raise UsageError("--image-size is for image data, not --task " + task_name)
        settings.update({k: getattr(args, k) for k in _TEXT})
        return language.language_config(task_name, model, args.preset or "small", args.steps, **settings)
    if task_name == "mae":
        if model not in autoencode.MODELS:
            raise UsageError(f"--task mae takes --model {' | '.join(autoencode.MODELS)}, not {model}")
        if args.image_size is not None:
            raise UsageError("--image-size is for --task image, not --task mae")
        sizes = ("dim", "depth", "heads", "dim_head", "patch_size") + (
            ("lam", "eta") if model == "crate" else ()
        )
        overrides = {k: getattr(args, k) for k in sizes}
        settings.update(mask_ratio=args.mask_ratio, norm_pix_loss=args.norm_pix_loss)
        return autoencode.mae_config(
            model, args.preset or "mnist_tiny", args.data or "mnist5k", overrides, **settings
        )
    if model not in classify.MODELS:
        raise UsageError(f"--task {task_name} takes --model {' | '.join(classify.MODELS)}, not {model}")
    sizes = ("dim", "depth", "heads", "dim_head", "patch_size", "dropout")
    ista = ("lam", "eta") if model in ("crate", "crate-alpha") else ()
    overrides = {k: getattr(args, k) for k in sizes + ista}
    data = args.data or "mnist5k"
    if task_name == "dino":
        settings.update(n_local=args.local_crops, out_dim=args.out_dim, momentum=args.momentum)
        settings.update(teacher_temp=args.teacher_temp, pool=args.pool)
        return dino.dino_config(model, args.preset or "mnist_tiny", data, overrides, **settings)
    settings.update(label_smoothing=args.label_smoothing, augment=False if args.no_augment else None)
    settings.update(image_size=args.image_size)
    return classify.image_config(model, args.preset or "mnist_tiny", data, overrides, **settings)


def _check_device(device: str | None) -> None:
    if device == "cuda":
        try:
            backend.cupy()
        except RuntimeError as exc:
            raise UsageError(str(exc)) from exc


def cmd_train(args: argparse.Namespace) -> None:
    if args.resume and not (args.out / CHECKPOINT).exists():
        raise UsageError(f"--resume: {args.out} has no {CHECKPOINT} to continue from")
    if not args.resume and (args.out / CHECKPOINT).exists():
        raise UsageError(f"{args.out} already holds a run; pass --resume to continue it or another --out")
    given = {k: v for k in TRAIN_SETTINGS if (v := getattr(args, k)) is not None and v is not False}
    _check_device(args.device)
    check_out(args.out)
    if args.resume:
        saved = read_config(args.out)
        check_applicable(saved.task, saved.model, given)
        config, note = resume_config(saved, given, load_checkpoint(args.out)["epoch"] + 1)
    else:
        check_applicable(args.task or "image", args.model or "crate", given)
        try:
            config = _config(args)
        except (ValueError, FileNotFoundError) as exc:  # a bad setting, a dataset not downloaded
            raise UsageError(str(exc)) from exc
    comm = distributed.init(config.device, timeout=args.rank_timeout) if args.distributed else None
    say = print if comm is None or comm.is_root else lambda *_: None  # rank 0 alone prints
    if comm is not None:
        if config.batch_size % comm.world_size:
            raise UsageError(f"--batch-size {config.batch_size} (the global batch) must be a multiple of "
                             f"the {comm.world_size} ranks")  # fmt: skip
        say(f"data parallel over {comm.describe()}; {config.batch_size // comm.world_size} samples per rank")
    if args.resume:
        say(f"resuming {args.out}: {note}")
    result = task.train(config, args.out, resume=args.resume, progress=not args.quiet, comm=comm)
    say(task.make_task(config, args.out).summary(result))
    if comm is not None:
        comm.close()


def cmd_launch(args: argparse.Namespace) -> None:
    if not args.command_line or args.command_line[0] != "train":
        raise UsageError("launch runs `train ...` on several processes: launch -n 2 train --out RUN ...")
    here = Path(sys.executable).parent
    mpiexec = shutil.which("mpiexec", path=f"{here}{os.pathsep}{os.environ.get('PATH', '')}")
    if mpiexec is None:
        raise UsageError(f"launch needs mpiexec, which is not on the PATH: {distributed.INSTALL_HINT}")
    command = [mpiexec, "-n", str(args.n), sys.executable, "-m", "whitebox", *args.command_line]
    if "--distributed" not in command:
        command.append("--distributed")
    print(" ".join(command), flush=True)
    env = dict(os.environ)  # the ranks share the cores: each splits its elementwise work over its share
    env.setdefault("WHITEBOX_NUM_THREADS", str(max(1, host_threads.num_threads() // args.n)))
    status = subprocess.run(command, check=False, env=env).returncode
    if status:
        raise SystemExit(status)


def cmd_eval(args: argparse.Namespace) -> None:
    report.require_checkpoint(args.run)
    run, model = task.open_run(args.run)
    probes = args.knn or args.linear_probe
    if isinstance(run, dino.SelfDistillation) and args.pool is not None:
        raise UsageError(f"--pool is for mae runs; {args.run} reads the {run.config.pool} pool of its config")
    if probes and isinstance(run, dino.SelfDistillation):
        for row in run.frozen_evaluation(model, knn=args.knn, probe=args.linear_probe):
            shown = (f"{k} {v:.4f}" for k, v in row.items() if k != "backbone")
            print(f"{args.run} {row['backbone']:>11} backbone: " + ", ".join(shown))
        return
    if (probes or args.pool is not None) and not isinstance(run, autoencode.MaskedAutoencoding):
        raise UsageError(
            f"--knn, --linear-probe and --pool read a mae or dino run's encoder; {args.run} is a "
            f"{run.config.task} run"
        )
    scores = run.evaluate(model)
    if isinstance(run, classify.ImageClassification):
        n = len(run.dataset("test"))
        print(
            f"{args.run}: test accuracy {scores['acc']:.4f} (cross-entropy {scores['loss']:.4f}) "
            f"on {n} {run.config.data} test images"
        )
        return
    if probes:
        pools = ("cls", "mean") if args.pool in (None, "both") else (args.pool,)
        scores.update(run.probes(model, pools, knn=args.knn, linear=args.linear_probe))
    scores = {"params": model.num_parameters(), **scores}
    shown = (f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in scores.items())
    print(f"{args.run}: " + ", ".join(shown))


def cmd_measure(args: argparse.Namespace) -> None:
    if args.over_epochs:
        _measure_epochs(args)
        return
    if read_config(args.run).task == "mae":
        rows, title, path = report.mirrored_run(args.run, args.n, args.out or args.run)
        print(invertibility.format_mirrored(rows, title))
        print(f"wrote {path.with_suffix('.json')} and {path}")
        return
    rows, title = report.measure_run(args.run, args.n)
    print(measure.format_table(rows, title))
    out = args.out or args.run
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "measure.json", json.dumps(rows, indent=1) + "\n")
    path = viz.plot_layerwise({args.run.name: rows}, out / "measure.png", title)
    print(f"wrote {out / 'measure.json'} and {path}")


def _measure_epochs(args: argparse.Namespace) -> None:
    curves, title = report.measure_epochs(args.run, args.n)
    for epoch, splits in curves.items():
        for split, rows in splits.items():
            print(measure.format_table(rows, f"{'init' if epoch == 0 else f'epoch {epoch}'}, {split}:"))
    out = args.out or args.run
    out.mkdir(parents=True, exist_ok=True)
    table = json.dumps({str(epoch): c for epoch, c in curves.items()}, indent=1)
    (out / "measure_epochs.json").write_text(table + "\n")
    path = viz.plot_layerwise_epochs(curves, out / "measure_epochs.png", title)
    print(f"wrote {out / 'measure_epochs.json'} and {path}")


def cmd_attention(args: argparse.Namespace) -> None:
    for path in report.attention_figures(args.run, args.out or args.run, args.n, args.layers):
        print(f"wrote {path}")


def cmd_reconstruct(args: argparse.Namespace) -> None:
    out = args.out or args.runs[0] / "reconstructions.png"
    print(f"wrote {report.reconstruction_figure(args.runs, out, args.n)}")


def cmd_segment(args: argparse.Namespace) -> None:
    out = args.out or args.run
    result = report.segment_run(args.run, args.n, args.method, args.layer, out, backbone=args.backbone)
    print(result["table"])
    what = "head average, 60% of the attention mass" if args.method == "attention" else "normalized cut"
    depth = len(result["rows"])
    print(f"{args.method} ({what}), layer {result['layer'] + 1}/{depth}: mean IoU {result['iou']:.3f}")
    saved = {k: result[k] for k in ("title", "method", "layer", "iou", "refs", "rows")}
    (out / "segment.json").write_text(json.dumps(saved, indent=1) + "\n")
    print(f"wrote {result['figure']} and {out / 'segment.json'}")


def cmd_sample(args: argparse.Namespace) -> None:
    report.require_checkpoint(args.run)
    if read_config(args.run).task == "image":
        raise UsageError(f"sample needs a language-model run; {args.run} is an image run")
    pieces = language.sample_stream(
        args.run, args.prompt, args.max_new_tokens, args.temperature, args.top_k, args.seed
    )
    printed = False
    try:  # each token as it comes; an interrupt keeps what was printed
        for piece in pieces:
            print(piece, end="", flush=True)
            printed = True
    finally:
        if printed:
            print()


def cmd_download(args: argparse.Namespace) -> None:
    if args.name not in data_names():
        raise UsageError(f"unknown dataset {args.name!r}; choose one of {', '.join(data_names())}")
    if args.name in CORPORA:
        try:
            text = load_corpus(args.name, download=True)
        except (RuntimeError, OSError, ValueError) as exc:
            raise UsageError(f"download of {args.name} failed: {exc}") from exc
        print(f"{args.name}: {len(text):,} characters")
        return
    for split in ("train", "test"):
        try:
            data = load_dataset(args.name, split, download=True)
        except (RuntimeError, OSError, ValueError) as exc:  # no network, a bad mirror, a checksum
            raise SystemExit(f"error: download of {args.name} failed: {exc}") from exc
        print(f"{args.name} {split}: {len(data)} images of shape {data.image_shape}")


def cmd_figures(args: argparse.Namespace) -> None:
    found = {}
    for name, (default, how) in FIGURE_RUNS.items():
        run = args.runs / default.name
        if (run / CHECKPOINT).exists():
            found[name] = run
        else:
            print(f"skipping {name}: {run} not found (make it with `{how}`)")
    for path in report.run_figures(found, args.figures):
        print(f"wrote {path}")


DEMO_MARK = "made-by-demo"  # a demo folder may be replaced by the next demo, any other run never


def cmd_demo(args: argparse.Namespace) -> None:
    if (args.out / CHECKPOINT).exists() or (args.out / CONFIG).exists():
        if not (args.out / DEMO_MARK).exists():
            raise UsageError(f"{args.out} already holds a run; pass another --out (or delete it)")
        print(f"replacing the previous demo run in {args.out}")
        shutil.rmtree(args.out)
    _check_device(args.device)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / DEMO_MARK).write_text("python -m whitebox demo may replace this folder\n")
    settings = {"epochs": args.epochs or DEMO["epochs"], "batch_size": DEMO["batch_size"], "lr": DEMO["lr"]}
    config = classify.image_config(
        DEMO["model"], DEMO["preset"], DEMO["data"], device=args.device, **settings
    )
    print(
        f"demo: CRATE {DEMO['preset']} on {DEMO['data']} (4,000 train / 1,000 held-out images), "
        f"{config.epochs} epochs on the {config.device} -> {args.out}"
    )
    tic = time.perf_counter()
    result = task.train(config, args.out, resume=False, progress=not args.quiet)
    seconds = time.perf_counter() - tic
    print(
        f"held-out accuracy {result['eval_acc']:.4f} ({round(result['eval_acc'] * 1000)}/1000) "
        f"after {seconds:.0f} s of training ({result['params']:,} parameters)"
    )
    measured = report.measure_run(args.out, 500)
    print(measure.format_table(measured[0], "per layer, on 500 held-out images:"))
    for path in report.demo_figures(args.out, args.figures, measured):
        print(f"wrote {path}")


COMMANDS = {
    "train": cmd_train,
    "eval": cmd_eval,
    "measure": cmd_measure,
    "attention": cmd_attention,
    "reconstruct": cmd_reconstruct,
    "segment": cmd_segment,
    "figures": cmd_figures,
    "demo": cmd_demo,
    "sample": cmd_sample,
    "download": cmd_download,
    "launch": cmd_launch,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default sys.argv[1:]); returns the exit status."""
    backend.tune_malloc()  # the one process-wide setting whitebox makes (its docstring says why)
    args = None
    try:
        args = build_parser(COMMANDS).parse_args(argv)
        with threadpool_limits(limits=getattr(args, "blas_threads", None), user_api="blas"):
            args.func(args)
    except (UsageError, ConfigError, RunError, ChecksumError, OSError) as exc:  # OSError: a full disk
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        resumable = getattr(args, "command", None) == "train"
        hint = "; continue the run with `train --out RUN --resume`" if resumable else ""
        print(f"interrupted{hint}", file=sys.stderr)
        return 130
    return 0
