"""A task-agnostic training loop with exact, resumable checkpoints.

The loop knows nothing about images or text. A task hands it

* ``model``: a ``whitebox.nn.Module``;
* ``optimizer``: a ``whitebox.optim`` optimizer (``step()``, ``zero_grad()``, an ``lr``
  attribute, ``state_dict()`` / ``load_state_dict()``);
* ``batches(epoch) -> Iterable[batch]``: the batches of one epoch, a deterministic function of
  ``(seed, epoch)`` (e.g. a ``DataLoader`` after ``set_epoch(epoch)``); ``len()`` of the result,
  or ``steps_per_epoch``, gives the number of steps;
* ``loss_fn(model, batch) -> (loss, metrics)``: a scalar loss Tensor and a dict of floats. The
  key ``"n"`` (optional) is the batch's sample count, used to weight epoch averages and for the
  throughput; without it the leading length of ``batch[0]`` (or of ``batch``) is used. Any other
  key (``"acc"`` for instance) is averaged over the epoch, weighted by ``n``, and shown;
* ``evaluate(model) -> dict`` (optional): called after every epoch, in eval mode; its results are
  logged with an ``eval_`` prefix.

``fit`` then runs, for every step t = 0, 1, ..., T - 1 (T = epochs x steps_per_epoch):

    lr_t = warmup_cosine(t + 1, T, W, base_lr, min_lr)        (W = warmup_steps)
         = base_lr (t + 1) / W                                          for t + 1 < W,
           min_lr + (base_lr - min_lr) (1 + cos(pi (t + 1 - W) / (T - W))) / 2   otherwise,

    (t + 1, so that no step is taken with lr 0 and the last one uses min_lr);
    g = grad loss;  g <- g min(1, clip_norm / ||g||_2)  (global norm over all parameters);
    optimizer step with lr_t.

After each epoch it writes, into ``run_dir``:

* ``checkpoint.npz`` (``whitebox.save``; written to a temporary file, then renamed): model state,
  optimizer state, the epoch and step just completed, the config and the seed;
* one JSON line appended to ``metrics.jsonl``: epoch, step, lr, the epoch averages of the loss
  metrics (``train_`` prefix), the evaluation (``eval_`` prefix), seconds and samples/s;
* ``config.json`` once, at the start.

With ``progress=True`` each epoch shows a tqdm bar (when stderr is a terminal) with the running
loss, accuracy (when the metrics have ``"acc"``) and throughput in samples/s, then prints a
one-line summary of the epoch.

Determinism. At the start of epoch e the device RNG (dropout, masking) is re-seeded with
``epoch_seed(seed, e)`` through ``backend.manual_seed``, and ``batches(e)`` is a function of
(seed, e) only, so epoch e computes the same thing whether or not the process was restarted
before it. ``fit(..., resume=True)`` loads the last checkpoint (model, optimizer, step) and
continues with the next epoch: a run interrupted anywhere and resumed ends with weights
bit-identical to an uninterrupted run.

Example::

    history = fit(model, AdamW(model.parameters(), lr=1e-3), lambda e: loader_for(e), loss_fn,
                  epochs=10, base_lr=1e-3, warmup_steps=100, run_dir=Path("runs/x"),
                  config={"task": "image", ...}, seed=0)
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from whitebox import backend
from whitebox.nn import Module
from whitebox.optim import clip_grad_norm_, warmup_cosine
from whitebox.serialization import load, save
from whitebox.tensor import Tensor, no_grad

CHECKPOINT = "checkpoint.npz"
METRICS = "metrics.jsonl"
CONFIG = "config.json"

LossFn = Callable[[Module, Any], tuple[Tensor, dict[str, float]]]


def epoch_seed(seed: int, epoch: int) -> int:
    """A 31-bit seed for epoch ``epoch`` of a run seeded ``seed`` (independent streams per epoch)."""
    return int(np.random.SeedSequence([int(seed), int(epoch)]).generate_state(1)[0] & 0x7FFFFFFF)


def save_config(run_dir: Path, config: dict[str, Any]) -> None:
    """Write ``run_dir/config.json`` (sorted keys, indented)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """The records of ``run_dir/metrics.jsonl``, one per completed epoch."""
    path = Path(run_dir) / METRICS
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def save_checkpoint(
    run_dir: Path, model: Module, optimizer: Any, *, epoch: int, step: int, seed: int, config: dict[str, Any]
) -> Path:
    """Write ``run_dir/checkpoint.npz`` (``whitebox.save`` writes a temporary file, then renames it)."""
    path = Path(run_dir) / CHECKPOINT
    state = {
        "model": {k: backend.to_numpy(v) for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "epoch": epoch,
        "step": step,
        "seed": seed,
        "config": config,
    }
    save(path, state)
    return path


def load_checkpoint(run_dir: Path) -> dict[str, Any]:
    """Read ``run_dir/checkpoint.npz``: keys model, optimizer, epoch, step, seed, config (a dict)."""
    return load(Path(run_dir) / CHECKPOINT)


def _num_samples(batch: Any, metrics: dict[str, float]) -> int:
    if "n" in metrics:
        return int(metrics["n"])
    first = batch[0] if isinstance(batch, tuple | list) else batch
    return len(first)


def _train_epoch(
    model: Module,
    optimizer: Any,
    batches: Iterable[Any],
    loss_fn: LossFn,
    *,
    lr_at: Callable[[int], float],
    step: int,
    clip_norm: float | None,
    bar: Any,
) -> tuple[int, dict[str, float]]:
    """One pass over ``batches``; returns the new step count and the n-weighted metric averages."""
    params = model.parameters()
    sums: dict[str, float] = {}
    seen = 0
    start = time.perf_counter()
    for batch in batches:
        optimizer.lr = lr_at(step)
        loss, metrics = loss_fn(model, batch)
        optimizer.zero_grad()
        loss.backward()
        if clip_norm:
            clip_grad_norm_(params, clip_norm)
        optimizer.step()
        step += 1
        n = _num_samples(batch, metrics)
        seen += n
        for key, value in {"loss": loss.item(), **metrics}.items():
            if key != "n":
                sums[key] = sums.get(key, 0.0) + float(value) * n
        shown = {k: f"{sums[k] / seen:.4f}" for k in ("loss", "acc") if k in sums}
        shown["samples/s"] = f"{seen / (time.perf_counter() - start):.0f}"
        bar.set_postfix(shown, refresh=False)
        bar.update(1)
    if not seen:
        raise ValueError("fit: batches(epoch) yielded no batch")
    averages = {k: v / seen for k, v in sums.items()}
    averages["samples"] = seen
    return step, averages


def fit(
    model: Module,
    optimizer: Any,
    batches: Callable[[int], Iterable[Any]],
    loss_fn: LossFn,
    *,
    epochs: int,
    run_dir: Path,
    config: dict[str, Any],
    base_lr: float,
    min_lr: float = 0.0,
    warmup_steps: int = 0,
    clip_norm: float | None = 1.0,
    seed: int = 0,
    steps_per_epoch: int | None = None,
    evaluate: Callable[[Module], dict[str, float]] | None = None,
    resume: bool = False,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Train ``model`` for ``epochs`` epochs; returns the per-epoch records of ``metrics.jsonl``.

    See the module docstring for the contract of ``batches``, ``loss_fn`` and ``evaluate``, the
    learning-rate schedule and what is written to ``run_dir``. With ``resume=True`` and a
    checkpoint in ``run_dir`` the run continues after its last completed epoch (a finished run
    returns at once); without one it starts from scratch.
    """
    if epochs < 1:
        raise ValueError(f"fit: epochs must be >= 1, got {epochs}")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if steps_per_epoch is None:
        steps_per_epoch = len(batches(0))  # type: ignore[arg-type]
    total_steps = epochs * steps_per_epoch
    warmup_steps = min(warmup_steps, total_steps)

    def lr_at(step: int) -> float:
        return warmup_cosine(step + 1, total_steps, warmup_steps, base_lr, min_lr)

    start_epoch, step = 0, 0
    if resume and (run_dir / CHECKPOINT).exists():
        state = load_checkpoint(run_dir)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start_epoch, step = state["epoch"] + 1, state["step"]
        history = [r for r in read_metrics(run_dir) if r["epoch"] < start_epoch]
    else:
        history = []
    save_config(run_dir, config)
    (run_dir / METRICS).write_text("".join(json.dumps(r) + "\n" for r in history))

    for epoch in range(start_epoch, epochs):
        backend.manual_seed(epoch_seed(seed, epoch))
        model.train()
        tic = time.perf_counter()
        with tqdm(
            total=steps_per_epoch,
            desc=f"epoch {epoch + 1}/{epochs}",
            disable=None if progress else True,  # None: no bar when stderr is not a terminal
            leave=False,
            dynamic_ncols=True,
        ) as bar:
            step, train = _train_epoch(
                model,
                optimizer,
                batches(epoch),
                loss_fn,
                lr_at=lr_at,
                step=step,
                clip_norm=clip_norm,
                bar=bar,
            )
        seconds = time.perf_counter() - tic
        record: dict[str, Any] = {"epoch": epoch, "step": step, "lr": lr_at(step - 1)}
        record.update({f"train_{k}": v for k, v in train.items() if k != "samples"})
        record["seconds"] = seconds
        record["samples_per_s"] = train["samples"] / seconds
        if evaluate is not None:
            with no_grad(), model.evaluating():
                record.update({f"eval_{k}": v for k, v in evaluate(model).items()})
        save_checkpoint(run_dir, model, optimizer, epoch=epoch, step=step, seed=seed, config=config)
        with (run_dir / METRICS).open("a") as f:
            f.write(json.dumps(record) + "\n")
        history.append(record)
        if progress:
            tqdm.write(_summary(record, epochs))
    model.eval()
    return history


def _summary(record: dict[str, Any], epochs: int) -> str:
    """One line per epoch: the losses and accuracies, lr, time and throughput."""
    parts = [f"epoch {record['epoch'] + 1}/{epochs}"]
    for key, value in record.items():
        if key.startswith(("train_", "eval_")) and isinstance(value, float) and math.isfinite(value):
            parts.append(f"{key} {value:.4f}")
    parts.append(f"lr {record['lr']:.2e}")
    parts.append(f"{record['seconds']:.1f}s ({record['samples_per_s']:.0f} samples/s)")
    return "  ".join(parts)
