"""PyTorch interop: load official CRATE checkpoints, export whitebox weights to PyTorch.

whitebox models use the official parameter names and PyTorch tensor layouts
(Linear weights (out, in)), so conversion is a change of array type only.
torch is imported inside the functions; it is an optional dependency.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from whitebox import backend
from whitebox.nn import Module

_WRAPPERS = ("model", "state_dict")
#: The classifier layer, whose shape depends on the number of classes.
HEAD = "mlp_head.1."


def _torch() -> Any:
    try:
        import torch
    except ImportError as exc:
        raise ImportError(
            "whitebox.interop needs PyTorch: install it with `pip install 'whitebox[torch]'` (torch==2.13.0)"
        ) from exc
    return torch


def _unwrap(state: Mapping[str, Any]) -> Mapping[str, Any]:
    """The parameter dict inside a training checkpoint ({'model': ...} or {'state_dict': ...})."""
    for key in _WRAPPERS:
        if key in state and isinstance(state[key], Mapping):
            return state[key]
    return state


def _to_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().cpu()
        if str(value.dtype) == "torch.bfloat16":
            value = value.float()
        return value.numpy()
    return np.asarray(value)


def load_official_checkpoint(
    path_or_state_dict: str | Path | Mapping[str, Any],
    model: Module,
    *,
    skip_head: bool = False,
    strict: bool = True,
) -> Module:
    """Load an official CRATE (or any whitebox-layout) PyTorch checkpoint into ``model``, in place.

    Accepts a path to a ``.pth`` file (read with ``torch.load(map_location='cpu',
    weights_only=True)``) or an already loaded dict; the parameters may be nested under
    'model' or 'state_dict' and prefixed with 'module.' (DataParallel). Every key must
    match in name and shape; otherwise ValueError names the missing, unexpected and
    mis-shaped keys. Values are cast to each parameter's dtype and device. Returns ``model``.

    To fine-tune with another number of classes, ``skip_head=True`` leaves the classifier
    layer (``mlp_head.1.*``) as initialized; ``strict=False`` loads every key that matches in
    name and shape and leaves the rest. Either warns (``UserWarning``) naming every key of the
    checkpoint it skipped and every key of the model it left as initialized.
    """
    if isinstance(path_or_state_dict, str | Path):
        torch = _torch()
        state = torch.load(str(path_or_state_dict), map_location="cpu", weights_only=True)
    else:
        state = path_or_state_dict
    if not isinstance(state, Mapping):
        raise TypeError(f"load_official_checkpoint: expected a state dict, got {type(state).__name__}")
    state = _unwrap(state)
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    arrays = {k: _to_numpy(v) for k, v in state.items()}
    if strict and not skip_head:
        model.load_state_dict(arrays)
        return model
    own = model.state_dict()
    skipped = [k for k in arrays if skip_head and k.startswith(HEAD)]
    if not strict:
        skipped += [k for k, v in arrays.items() if k not in own or tuple(own[k].shape) != np.shape(v)]
    kept = {k: v for k, v in arrays.items() if k not in skipped}
    if strict:  # the head skipped: every other key must match, the head keeps its own values
        model.load_state_dict({**kept, **{k: v for k, v in own.items() if k.startswith(HEAD)}})
    else:
        model.load_state_dict(kept, strict=False)
    untouched = [k for k in own if k not in kept]
    if skipped or untouched:
        warnings.warn(
            f"load_official_checkpoint: skipped {', '.join(skipped) or 'no key'} of the checkpoint; "
            f"left {', '.join(untouched) or 'no key'} of the model as initialized",
            UserWarning,
            stacklevel=2,
        )
    return model


def to_torch_state_dict(model: Module) -> dict[str, Any]:
    """The model's parameters and buffers as a dict of CPU torch tensors (copies), ready for
    ``torch_module.load_state_dict`` or ``torch.save``."""
    torch = _torch()
    return {k: torch.from_numpy(np.array(backend.to_numpy(v))) for k, v in model.state_dict().items()}
