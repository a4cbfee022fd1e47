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
  logged with an ``eval_`` prefix;
* ``after_step(model, step)`` (optional): called after each optimizer step t (from 0), e.g. to
  move an EMA teacher; whatever it changes must live in the model's state to be checkpointed.

``fit`` then runs, for every step t = 0, 1, ..., T - 1 (T = epochs x steps_per_epoch):

    lr_t = warmup_cosine(t + 1, T, W, base_lr, min_lr)        (W = warmup_steps)
         = base_lr (t + 1) / W                                          for t + 1 < W,
           min_lr + (base_lr - min_lr) (1 + cos(pi (t + 1 - W) / (T - W))) / 2   otherwise,

    (t + 1, so that no step is taken with lr 0 and the last one uses min_lr);
    g = grad loss;  g <- g min(1, clip_norm / ||g||_2)  (global norm over all parameters);
    optimizer step with lr_t.

After each epoch it writes, into ``run_dir``:

* ``checkpoint.npz`` (``whitebox.save``): model state, optimizer state, the epoch and step just
  completed, the config, the seed, the history (every epoch's record, as JSON), the first step's
  loss and whatever ``extra`` the task carries (a language run's tokenizer);
* ``metrics.jsonl``: one strict-JSON line per epoch (a non-finite number is written as null):
  epoch, step, lr, the epoch averages of the loss metrics (``train_`` prefix), the evaluation
  (``eval_`` prefix), seconds and samples/s;
* ``config.json`` once, at the start;
* with ``keep_epochs=True``, the model's weights after every epoch e as ``epoch_{e:03d}.npz``
  (e = 1, 2, ...; ``epoch_000.npz`` holds the weights at initialization), so that measurements
  can be followed over training (``run_files.epoch_checkpoints``, ``run_files.load_epoch``).

Every file is written whole to a temporary file and renamed (``atomic_write``), so a kill leaves
the old file or the new one. The checkpoint is written first: ``metrics.jsonl`` is rewritten from
the checkpoint's history on resume (a kill between the two writes loses nothing), and a torn last
line of it (a file written by another tool) is skipped by ``read_metrics``.

Nothing silent. A non-finite loss stops the run with ``DivergedError`` naming the step, the last
finite loss and what to try; weights that are not finite are never saved. When an epoch's mean
loss grows past ``GROWTH`` times the first step's, a warning is printed (once).

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

Data parallelism. Given a ``comm`` (``whitebox.distributed.init``) of W > 1 ranks, every rank runs
``fit`` on its own share of each epoch (``batches(epoch)`` gives this rank's batches of B / W
samples, the same number of steps on every rank), and the loop adds three things:

* at the start, rank 0's parameters are broadcast, so every replica starts equal;
* after ``backward()``, every gradient is replaced by its average over the ranks (an all-reduce),
  before clipping: the mean over ranks of per-rank mean losses is the mean over the global batch,
  so every replica takes the step one process would take with batch B;
* at the end of an epoch the metric sums and sample counts are summed over the ranks, so the
  record holds global averages; ``evaluate`` runs on every rank (the task shards and reduces it).

Rank 0 alone writes ``run_dir`` and prints; every rank reads the checkpoint when resuming (the
run directory must be visible to every rank), so a run resumes with any number of ranks. The
device RNG of rank r > 0 is seeded with ``epoch_seed(seed, epoch, r)``, so dropout masks differ
between ranks. The whole loop runs inside ``comm.guard()``: an exception on one rank ends them all.
"""

from __future__ import annotations

import functools
import math
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from whitebox import backend
from whitebox.distributed import Communicator, LocalCommunicator
from whitebox.nn import Module
from whitebox.optim import clip_grad_norm_, warmup_cosine
from whitebox.tensor import Tensor, no_grad
from whitebox.train.run_files import (
    CHECKPOINT,
    DivergedError,
    RunError,
    load_checkpoint,
    load_weights,
    save_checkpoint,
    save_config,
    save_epoch,
    strict_record,
    write_metrics,
)

#: An epoch whose mean loss exceeds GROWTH x the first step's loss is warned about.
GROWTH = 4.0

LossFn = Callable[[Module, Any], tuple[Tensor, dict[str, float]]]


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """A 31-bit seed for epoch ``epoch`` of a run seeded ``seed`` (independent streams per epoch and
    rank; rank 0 draws what a one-process run draws)."""
    entropy = [int(seed), int(epoch)] + ([int(rank)] if rank else [])
    return int(np.random.SeedSequence(entropy).generate_state(1)[0] & 0x7FFFFFFF)


def _num_samples(batch: Any, metrics: dict[str, float]) -> int:
    if "n" in metrics:
        return int(metrics["n"])
    first = batch[0] if isinstance(batch, tuple | list) else batch
    return len(first)


class _LossWatch:
    """The last finite loss and the first step's, for the divergence error and the growth warning."""

    def __init__(self, start: float | None) -> None:
        self.start, self.last, self.warned = start, None, False

    def see(self, value: float, step: int, lr: float) -> None:
        if not math.isfinite(value):
            last = "none yet" if self.last is None else f"{self.last[1]:.4g} at step {self.last[0]}"
            raise DivergedError(
                f"training diverged at step {step + 1}: the loss is {value} (last finite loss: {last}; "
                f"lr {lr:.3g}); try a lower learning rate (--lr) or a tighter gradient clip (--clip-norm)"
            )
        self.last = (step + 1, value)
        if self.start is None:
            self.start = value

    def check_growth(self, epoch: int, mean: float) -> None:
        if self.warned or self.start is None or not self.start > 0 or mean <= GROWTH * self.start:
            return
        self.warned = True
        print(
            f"warning: the mean loss of epoch {epoch + 1} ({mean:.4g}) is {mean / self.start:.0f}x the "
            f"first step's ({self.start:.4g}): the run may be diverging; try a lower --lr",
            file=sys.stderr,
        )


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
    watch: _LossWatch,
    comm: Communicator,
    after_step: Callable[[Module, int], None] | None = None,
) -> tuple[int, dict[str, float]]:
    """One pass over ``batches``; returns the new step count and the n-weighted metric averages
    over every rank's samples."""
    params = model.parameters()
    sums: dict[str, float] = {}
    seen = 0
    start = time.perf_counter()
    for batch in batches:
        optimizer.lr = lr_at(step)
        loss, metrics = loss_fn(model, batch)
        value = loss.item()
        watch.see(value, step, optimizer.lr)
        optimizer.zero_grad()
        loss.backward()
        comm.allreduce_gradients(params)  # the mean gradient over the global batch
        if clip_norm:
            clip_grad_norm_(params, clip_norm)
        optimizer.step()
        if after_step is not None:
            after_step(model, step)
        step += 1
        n = _num_samples(batch, metrics)
        seen += n
        for key, v in {"loss": value, **metrics}.items():
            if key != "n":
                sums[key] = sums.get(key, 0.0) + float(v) * n
        shown = {k: f"{sums[k] / seen:.4f}" for k in ("loss", "acc") if k in sums}
        shown["samples/s"] = f"{seen * comm.world_size / (time.perf_counter() - start):.0f}"
        bar.set_postfix(shown, refresh=False)
        bar.update(1)
    if not seen:
        raise ValueError("fit: batches(epoch) yielded no batch")
    keys = sorted(sums)  # the same keys on every rank
    seen, *totals = comm.allreduce_sum([seen, *(sums[k] for k in keys)])
    averages = {k: v / seen for k, v in zip(keys, totals, strict=True)}
    averages["samples"] = seen
    return step, averages


def _guarded(fit: Callable[..., list[dict[str, Any]]]) -> Callable[..., list[dict[str, Any]]]:
    """``fit`` run inside ``comm.guard()`` (``comm`` None: one process), so that an exception on
    one rank ends every rank instead of leaving them blocked in their next collective."""

    @functools.wraps(fit)
    def run(*args: Any, comm: Communicator | None = None, **kwargs: Any) -> list[dict[str, Any]]:
        comm = comm or LocalCommunicator()
        with comm.guard():
            return fit(*args, comm=comm, **kwargs)

    return run


@_guarded
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
    after_step: Callable[[Module, int], None] | None = None,
    resume: bool = False,
    progress: bool = True,
    extra: dict[str, Any] | None = None,
    comm: Communicator | None = None,
    keep_epochs: bool = False,
) -> list[dict[str, Any]]:
    """Train ``model`` for ``epochs`` epochs; returns the per-epoch records of ``metrics.jsonl``.

    See the module docstring for the contract of ``batches``, ``loss_fn`` and ``evaluate``, the
    learning-rate schedule, what is written to ``run_dir`` and what ``comm`` (a
    ``whitebox.distributed`` communicator; default: one process) changes. With ``resume=True`` and a
    checkpoint in ``run_dir`` the run continues after its last completed epoch (a finished run
    returns at once); without one it starts from scratch. ``extra`` (a dict of arrays and JSON
    values) is saved into every checkpoint beside the training state. ``keep_epochs`` also keeps the
    weights at initialization and after every epoch (module docstring).
    """
    assert comm is not None  # ``_guarded`` gives one
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

    start_epoch, step, start_loss = 0, 0, None
    history: list[dict[str, Any]] = []
    if resume and (run_dir / CHECKPOINT).exists():
        state = load_checkpoint(run_dir)
        saved_task, task = state["config"].get("task"), config.get("task")
        if saved_task != task:
            raise RunError(f"{run_dir / CHECKPOINT} is a {saved_task} checkpoint; this is a {task} run")
        load_weights(model, state["model"], run_dir)
        optimizer.load_state_dict(state["optimizer"])
        start_epoch, step, start_loss = state["epoch"] + 1, state["step"], state.get("start_loss")
        history = [r for r in state["history"] if r["epoch"] < start_epoch]
    comm.barrier()  # every rank has read the run directory: rank 0 may now write to it
    comm.broadcast_parameters(model)  # every replica starts from rank 0's weights
    if comm.is_root:
        save_config(run_dir, config)
        write_metrics(run_dir, history)
        if keep_epochs and start_epoch == 0:
            save_epoch(run_dir, model, 0)
    watch = _LossWatch(start_loss)

    for epoch in range(start_epoch, epochs):
        backend.manual_seed(epoch_seed(seed, epoch, comm.rank))
        model.train()
        tic = time.perf_counter()
        with (
            tqdm(
                total=steps_per_epoch,
                desc=f"epoch {epoch + 1}/{epochs}",
                disable=None if progress and comm.is_root else True,  # None: no bar unless a terminal
                leave=False,
                dynamic_ncols=True,
            ) as bar,
            np.errstate(over="ignore", invalid="ignore"),
        ):  # a non-finite loss is reported instead
            step, train = _train_epoch(model, optimizer, batches(epoch), loss_fn, lr_at=lr_at, step=step,
                                       clip_norm=clip_norm, bar=bar, watch=watch, comm=comm,
                                       after_step=after_step)  # fmt: skip
        seconds = time.perf_counter() - tic
        record: dict[str, Any] = {"epoch": epoch, "step": step, "lr": lr_at(step - 1)}
        record.update({f"train_{k}": v for k, v in train.items() if k != "samples"})
        record["seconds"] = seconds
        record["samples_per_s"] = train["samples"] / seconds
        if evaluate is not None:
            with no_grad(), model.evaluating():
                record.update({f"eval_{k}": v for k, v in evaluate(model).items()})
        record = strict_record(record)
        watch.check_growth(epoch, train["loss"])
        history.append(record)
        if comm.is_root:  # rank 0 alone writes and prints
            save_checkpoint(run_dir, model, optimizer, epoch=epoch, step=step, seed=seed, config=config,
                            history=history, start_loss=watch.start, extra=extra)  # fmt: skip
            if keep_epochs:
                save_epoch(run_dir, model, epoch + 1)
            write_metrics(run_dir, history)
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
