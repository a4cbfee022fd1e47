"""whitebox: a from-scratch, white-box reference implementation of CRATE."""

from whitebox import ops
from whitebox.backend import cuda_available, manual_seed, set_default_device
from whitebox.ops import concat, stack, where
from whitebox.serialization import load, save
from whitebox.tensor import Tensor, is_grad_enabled, no_grad

__version__ = "0.1.0"

__all__ = [
    "Tensor",
    "concat",
    "cuda_available",
    "is_grad_enabled",
    "load",
    "manual_seed",
    "no_grad",
    "ops",
    "save",
    "set_default_device",
    "stack",
    "where",
]
