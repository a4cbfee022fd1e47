"""The task interface: what a task gives the training loop, and the one ``train`` that runs any task.

A task is a subclass of ``Task`` in its own module, made for one run (its config and directory):

* ``build_model()``: a freshly initialized model (the caller seeds the RNG first);
* ``batches(epoch)``: the training batches of one epoch, a function of (seed, epoch) only;
  ``steps_per_epoch`` of them;
* ``loss(model, batch) -> (loss, metrics)``: the objective (``fit``'s ``loss_fn``);
* ``evaluate(model, limit)``: held-out scores (the first ``limit`` held-out inputs, or all);
* ``heldout_inputs(n)``: ``n`` held-out inputs of the model, for measurements and figures;
* ``describe(n)``: a title for measurements of the run on ``n`` held-out inputs;
* ``summary(result)``: the line the command line prints when training is done.

Registering a task is one line in ``TASKS`` (task name -> module and class) plus its config
dataclass (``whitebox.train.config.register``). ``train(config, run_dir)`` then builds the task,
seeds, builds the model and the optimizer (``build_optimizer``) and runs ``loop.fit``;
``load_run(run_dir)`` rebuilds a trained run without touching the global RNG.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from whitebox import backend
from whitebox.nn import Module
from whitebox.tensor import Tensor
from whitebox.train.config import TrainConfig, build_optimizer, read_config, to_dict
from whitebox.train.loop import CHECKPOINT, fit, load_checkpoint

#: Task name -> "module:class" of its ``Task`` subclass (imported on first use).
TASKS = {
    "image": "whitebox.train.classify:ImageClassification",
    "lm": "whitebox.train.language:LanguageModelling",
    "mlm": "whitebox.train.language:LanguageModelling",
    "mae": "whitebox.train.autoencode:MaskedAutoencoding",
}


class Task(ABC):
    """One run of a task: ``config`` (its dataclass) trained into ``run_dir``."""

    #: Batches in one epoch (set by the subclass, as a class or instance attribute).
    steps_per_epoch: int
    #: How many held-out inputs ``evaluate`` scores after each epoch (None: all).
    eval_limit: int | None = None

    def __init__(self, config: TrainConfig, run_dir: Path) -> None:
        self.config, self.run_dir = config, Path(run_dir)

    def prepare(self, resume: bool) -> None:  # noqa: B027 (optional: most tasks need nothing here)
        """Before training: write what the run directory needs besides the loop's files."""

    @abstractmethod
    def build_model(self) -> Module:
        """A freshly initialized model of the run's config (the caller seeds the RNG)."""

    @abstractmethod
    def batches(self, epoch: int) -> Iterable[Any]:
        """The training batches of epoch ``epoch``: a function of (seed, epoch) only."""

    @abstractmethod
    def loss(self, model: Module, batch: Any) -> tuple[Tensor, dict[str, float]]:
        """(scalar loss, metrics) of one batch: ``fit``'s ``loss_fn``."""

    @abstractmethod
    def evaluate(self, model: Module, limit: int | None = None) -> dict[str, float]:
        """Held-out scores of ``model`` (the first ``limit`` held-out inputs; None: all)."""

    @abstractmethod
    def heldout_inputs(self, n: int) -> Any:
        """``n`` held-out inputs of the model, for measurements."""

    def describe(self, n: int) -> str:
        """A title for measurements of the run on ``n`` held-out inputs."""
        return f"{self.config.task} run {self.run_dir.name}, {n} held-out inputs"

    def summary(self, result: dict[str, Any]) -> str:
        """The line printed when training is done (``result``: what ``train`` returns)."""
        scores = ", ".join(f"{k} {v:.4f}" for k, v in result["history"][-1].items() if k.startswith("eval_"))
        return f"{self.run_dir}: {result['params']:,} parameters; {scores}"


def task_class(name: str) -> type[Task]:
    """The ``Task`` subclass registered as ``name``."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; choose one of {', '.join(TASKS)}")
    module, cls = TASKS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def make_task(config: TrainConfig, run_dir: Path) -> Task:
    """The task object of a run."""
    return task_class(config.task)(config, run_dir)


def train(config: TrainConfig, run_dir: Path, resume: bool = False, progress: bool = True) -> dict[str, Any]:
    """Train ``config`` into ``run_dir``; with ``resume`` continue after its last checkpoint.

    Returns {"history": the per-epoch records, "params", "seconds", and the last record's
    ``eval_*`` scores}.
    """
    run_dir = Path(run_dir)
    resume = resume and (run_dir / CHECKPOINT).exists()
    task = make_task(config, run_dir)
    task.prepare(resume)
    backend.manual_seed(config.seed)
    model = task.build_model().to(config.device)
    history = fit(
        model,
        build_optimizer(config, model),
        task.batches,
        task.loss,
        epochs=config.epochs,
        run_dir=run_dir,
        config=to_dict(config),
        base_lr=config.lr,
        min_lr=config.min_lr,
        warmup_steps=config.warmup_steps,
        clip_norm=config.clip_norm,
        seed=config.seed,
        steps_per_epoch=task.steps_per_epoch,
        evaluate=lambda m: task.evaluate(m, task.eval_limit),
        resume=resume,
        progress=progress,
    )
    last = {k: v for k, v in history[-1].items() if k.startswith("eval_")}
    seconds = sum(r["seconds"] for r in history)
    return {"history": history, "params": model.num_parameters(), "seconds": seconds, **last}


@contextmanager
def rng_untouched() -> Iterator[None]:
    """Restore the host RNG's state on exit: building a model to load weights into draws no numbers
    that anyone else sees."""
    state = backend.host_rng().bit_generator.state
    try:
        yield
    finally:
        backend.host_rng().bit_generator.state = state


def open_run(run_dir: Path) -> tuple[Task, Module]:
    """(task, model with the last checkpoint's weights, in eval mode) of a run; the RNG is untouched."""
    run_dir = Path(run_dir)
    task = make_task(read_config(run_dir), run_dir)
    with rng_untouched():
        model = task.build_model()
    model.load_state_dict(load_checkpoint(run_dir)["model"])
    return task, model.to(task.config.device).eval()
