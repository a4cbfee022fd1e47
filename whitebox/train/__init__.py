"""Training: a task-agnostic loop (``loop``), run configs (``config``), the task interface and the
one ``train`` (``task``), and the tasks: image classification (``classify``), language
modelling, causal and masked (``language``), and masked autoencoding of images (``autoencode``).

Only the loop, the configs and the interface are imported here; a task module is imported when a
run of it is made or opened (``task.TASKS``).
"""

from whitebox.train.config import (
    ConfigError,
    ImageConfig,
    LMConfig,
    MAEConfig,
    MLMConfig,
    TrainConfig,
    build_optimizer,
    from_dict,
    read_config,
    to_dict,
    validate,
    write_config,
)
from whitebox.train.loop import epoch_seed, fit
from whitebox.train.run_files import load_checkpoint, read_metrics, save_checkpoint
from whitebox.train.task import Task, open_run, train

__all__ = [
    "ConfigError",
    "ImageConfig",
    "LMConfig",
    "MAEConfig",
    "MLMConfig",
    "Task",
    "TrainConfig",
    "build_optimizer",
    "epoch_seed",
    "fit",
    "from_dict",
    "load_checkpoint",
    "open_run",
    "read_config",
    "read_metrics",
    "save_checkpoint",
    "to_dict",
    "train",
    "validate",
    "write_config",
]
