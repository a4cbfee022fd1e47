"""Optimizers (SGD, AdamW, Lion), gradient clipping and learning-rate schedules.

Every optimizer updates ``p.data`` in place with whole-array operations on the
parameter's own backend (NumPy or CuPy) and dtype, skips parameters whose
``grad`` is None, and round-trips through ``state_dict``/``load_state_dict``.
"""

from whitebox.optim.adamw import AdamW
from whitebox.optim.clip import clip_grad_norm_
from whitebox.optim.lion import Lion
from whitebox.optim.optimizer import Optimizer
from whitebox.optim.schedule import LRScheduler, constant, warmup_cosine
from whitebox.optim.sgd import SGD

__all__ = [
    "SGD",
    "AdamW",
    "LRScheduler",
    "Lion",
    "Optimizer",
    "clip_grad_norm_",
    "constant",
    "warmup_cosine",
]
