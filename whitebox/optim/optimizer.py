"""The base class of every optimizer: parameters, per-parameter state, checkpoints.

An optimizer keeps, for each parameter p that has received a gradient, a state
dict ``{"step": t, <buffer name>: array, ...}`` whose arrays live on p's device
with p's dtype. ``step()`` visits the parameters in order, skips those whose
``grad`` is None, increments their ``t`` and applies the subclass's update to
``p.data`` in place.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, ClassVar

import numpy as np

from whitebox import backend
from whitebox.tensor import Tensor


class Optimizer:
    """Subclasses name their hyperparameters and state buffers and define ``_update``."""

    hyperparameters: ClassVar[tuple[str, ...]] = ("lr",)
    buffers: ClassVar[tuple[str, ...]] = ()

    def __init__(self, params: Iterable[Tensor], lr: float) -> None:
        self.params = list(params)
        if not self.params:
            raise ValueError(f"{type(self).__name__}: got an empty parameter list")
        for i, p in enumerate(self.params):
            if not isinstance(p, Tensor):
                raise TypeError(f"{type(self).__name__}: parameter {i} is a {type(p).__name__}, not a Tensor")
        if len({id(p) for p in self.params}) != len(self.params):
            raise ValueError(f"{type(self).__name__}: a parameter appears more than once in the list")
        self.lr = lr
        self.state: dict[int, dict[str, Any]] = {}

    @property
    def lr(self) -> float:
        """The learning rate of the next step (schedules set it)."""
        return self._lr

    @lr.setter
    def lr(self, value: float) -> None:
        # A Python float, so that NumPy's weak-scalar rule keeps float32 updates in float32
        # (a NumPy float64 scalar would upcast them).
        value = float(value)
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"{type(self).__name__}: lr must be a finite number >= 0, got {value}")
        self._lr = value

    def zero_grad(self) -> None:
        """Drop every parameter's gradient (the next backward() starts from zero)."""
        for p in self.params:
            p.grad = None

    def step(self) -> None:
        """Update, in place, every parameter that has a gradient."""
        for i, p in enumerate(self.params):
            if p.grad is None:
                continue
            if i not in self.state:
                self.state[i] = {"step": 0} | {name: p.xp.zeros_like(p.data) for name in self.buffers}
            state = self.state[i]
            state["step"] += 1
            self._update(p, state)

    def _update(self, p: Tensor, state: dict[str, Any]) -> None:
        raise NotImplementedError

    # ---- checkpoints -----------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """A snapshot (arrays copied): optimizer type, hyperparameters and per-parameter state.

        Parameter indices are string keys, so ``whitebox.save`` can store it as is.
        """
        hyper = {name: getattr(self, name) for name in self.hyperparameters}
        return {
            "type": type(self).__name__,
            "hyperparameters": {k: list(v) if isinstance(v, tuple) else v for k, v in hyper.items()},
            "state": {
                str(i): {k: v.copy() if k in self.buffers else v for k, v in s.items()}
                for i, s in self.state.items()
            },
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore hyperparameters and state saved by ``state_dict`` (arrays copied to each
        parameter's device and dtype), so that training resumes exactly."""
        name = type(self).__name__
        if state_dict.get("type") != name:
            raise ValueError(
                f"{name}.load_state_dict: the state is from a {state_dict.get('type')!r} optimizer"
            )
        hyper = state_dict["hyperparameters"]
        if set(hyper) != set(self.hyperparameters):
            raise ValueError(
                f"{name}.load_state_dict: hyperparameters {sorted(hyper)}, "
                f"expected {sorted(self.hyperparameters)}"
            )
        for k, v in hyper.items():
            setattr(self, k, tuple(v) if isinstance(v, list) else v)
        state: dict[int, dict[str, Any]] = {}
        for key, saved in state_dict["state"].items():
            i = int(key)
            if not 0 <= i < len(self.params):
                raise ValueError(
                    f"{name}.load_state_dict: state for parameter {i}, but the optimizer has "
                    f"{len(self.params)} parameters"
                )
            p = self.params[i]
            if set(saved) != {"step", *self.buffers}:
                raise ValueError(
                    f"{name}.load_state_dict: parameter {i} has state {sorted(saved)}, "
                    f"expected {sorted({'step', *self.buffers})}"
                )
            state[i] = {"step": int(saved["step"])}
            for buf in self.buffers:
                arr = saved[buf] if hasattr(saved[buf], "dtype") else np.asarray(saved[buf])
                if tuple(arr.shape) != p.shape:
                    raise ValueError(
                        f"{name}.load_state_dict: {buf} of parameter {i} has shape {tuple(arr.shape)}, "
                        f"the parameter {p.shape}"
                    )
                state[i][buf] = backend.to_device(arr, p.device).astype(p.dtype, copy=True)
        self.state = state

    def __repr__(self) -> str:
        hyper = ", ".join(f"{k}={getattr(self, k)}" for k in self.hyperparameters)
        return f"{type(self).__name__}({hyper})"
