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

Data parallelism: a task is made with the run's ``Communicator`` (``self.comm``; one process by
default). ``batches`` then gives this rank's share of each epoch, in batches of
``config.batch_size / world_size`` (the global batch is ``config.batch_size``), and ``evaluate``
scores this rank's share of the held-out data and sums the scores over the ranks.

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
from whitebox.distributed import Communicator, LocalCommunicator
from whitebox.nn import Module
from whitebox.tensor import Tensor
from whitebox.train.config import TrainConfig, build_optimizer, read_config, to_dict
from whitebox.train.loop import fit
from whitebox.train.run_files import CHECKPOINT, RunError, load_checkpoint, load_weights

#: Task name -> "module:class" of its ``Task`` subclass (imported on first use).
TASKS = {
    "image": "whitebox.train.classify:ImageClassification",
    "lm": "whitebox.train.language:LanguageModelling",
    "mlm": "whitebox.train.language:LanguageModelling",
    "mae": "whitebox.train.autoencode:MaskedAutoencoding",
    "dino": "whitebox.train.dino:SelfDistillation",
}
#: How long the ranks wait for rank 0 to prepare the run directory (a tokenizer to train, images to read).
PREPARE_TIMEOUT = 3600.0


class Task(ABC):
    """One run of a task: ``config`` (its dataclass) trained into ``run_dir``."""

    #: Batches in one epoch (set by the subclass, as a class or instance attribute).
    steps_per_epoch: int
    #: How many held-out inputs ``evaluate`` scores after each epoch (None: all).
    eval_limit: int | None = None

    def __init__(self, config: TrainConfig, run_dir: Path, comm: Communicator | None = None) -> None:
        self.config, self.run_dir = config, Path(run_dir)
        self.comm = comm or LocalCommunicator(config.device)

    def prepare(self, resume: bool) -> None:  # noqa: B027 (optional: most tasks need nothing here)
        """Before training: write what the run directory needs besides the loop's files."""

    def checkpoint_extra(self) -> dict[str, Any]:
        """What travels in every checkpoint beside the training state (e.g. a tokenizer)."""
        return {}

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

    def after_step(self, model: Module, step: int) -> None:  # noqa: B027 (optional)
        """After optimizer step ``step`` (from 0): ``fit``'s ``after_step`` (DINO moves its teacher)."""

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


def make_task(config: TrainConfig, run_dir: Path, comm: Communicator | None = None) -> Task:
    """The task object of a run (of this rank of ``comm``; default: one process)."""
    return task_class(config.task)(config, run_dir, comm)


def train(
    config: TrainConfig,
    run_dir: Path,
    resume: bool = False,
    progress: bool = True,
    comm: Communicator | None = None,
) -> dict[str, Any]:
    """Train ``config`` into ``run_dir``; with ``resume`` continue after its last checkpoint.

    With ``comm`` (``whitebox.distributed.init``) this process is one rank of a data-parallel
    run: rank 0 alone prepares and writes ``run_dir`` (see ``loop.fit``). Returns {"history":
    the per-epoch records, "params", "seconds", and the last record's ``eval_*`` scores}.
    """
    run_dir = Path(run_dir)
    comm = comm or LocalCommunicator(config.device)
    resume = resume and (run_dir / CHECKPOINT).exists()
    with comm.guard():
        task = make_task(config, run_dir, comm)
        comm.barrier(PREPARE_TIMEOUT)  # every rank has read run_dir before rank 0 writes to it
        if comm.is_root:
            task.prepare(resume)
        comm.barrier(PREPARE_TIMEOUT)  # ... and rank 0 has written it before the others read on
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
        after_step=task.after_step,
        resume=resume,
        progress=progress,
        extra=task.checkpoint_extra(),
        comm=comm,
        keep_epochs=config.keep_epochs,
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
    state = load_checkpoint(run_dir)
    if state["config"].get("task") != task.config.task:
        raise RunError(f"{run_dir / CHECKPOINT} is a {state['config'].get('task')} checkpoint; "
                       f"{run_dir} is a {task.config.task} run")  # fmt: skip
    with rng_untouched():
        model = task.build_model()
    load_weights(model, state["model"], run_dir)
    return task, model.to(task.config.device).eval()
