"""Training: a task-agnostic loop (``loop``) and the tasks built on it (``image``; ``text``).

Only the loop is imported here, so ``from whitebox.train import fit`` pulls in no task.
"""

from whitebox.train.loop import (
    epoch_seed,
    fit,
    load_checkpoint,
    load_config,
    read_metrics,
    save_checkpoint,
    save_config,
)

__all__ = [
    "epoch_seed",
    "fit",
    "load_checkpoint",
    "load_config",
    "read_metrics",
    "save_checkpoint",
    "save_config",
]
