"""Module: a container of parameters and sub-modules, as in PyTorch.

Assigning a ``Parameter`` or ``Module`` to an attribute registers it under that
name; ``named_parameters`` walks the tree and gives dotted names
(``blocks.0.attn.qkv.weight``), which are also the ``state_dict`` keys.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np

from whitebox import backend
from whitebox.tensor import Tensor


class Parameter(Tensor):
    """A Tensor that is a trainable weight of a Module (``requires_grad=True``)."""

    __slots__ = ()

    def __init__(self, data: Any, dtype: Any = None, device: str | None = None) -> None:
        super().__init__(data, requires_grad=True, dtype=dtype, device=device)

    def __repr__(self) -> str:
        return "Parameter" + super().__repr__()[len("Tensor") :]


_hook_ids = itertools.count()


class _HookHandle:
    def __init__(self, hooks: dict[int, Callable[..., Any]], key: int) -> None:
        self._hooks, self._key = hooks, key

    def remove(self) -> None:
        self._hooks.pop(self._key, None)


class Module:
    """Base class of every layer and model: subclasses set attributes in
    ``__init__`` (after ``super().__init__()``) and define ``forward``."""

    def __init__(self) -> None:
        object.__setattr__(self, "_parameters", {})
        object.__setattr__(self, "_modules", {})
        object.__setattr__(self, "_buffers", {})
        object.__setattr__(self, "_forward_hooks", {})
        object.__setattr__(self, "training", True)

    def __setattr__(self, name: str, value: Any) -> None:
        if "_parameters" not in self.__dict__:
            raise AttributeError(
                f"{type(self).__name__}.__init__ must call super().__init__() before setting {name!r}"
            )
        for registry in (self._parameters, self._modules, self._buffers):
            registry.pop(name, None)
        if isinstance(value, Parameter):
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._modules[name] = value
        object.__setattr__(self, name, value)

    def register_buffer(self, name: str, value: Tensor) -> None:
        """A non-trainable tensor that belongs to the state (saved, moved by ``to``)."""
        setattr(self, name, value)
        self._buffers[name] = value

    # ---- calling -----------------------------------------------------------
    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must define forward()")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        out = self.forward(*args, **kwargs)
        for hook in list(self._forward_hooks.values()):
            hook(self, args, out)
        return out

    def register_forward_hook(self, hook: Callable[[Module, tuple, Any], None]) -> _HookHandle:
        """Call ``hook(module, inputs, output)`` after every forward; returns a handle with ``remove()``."""
        key = next(_hook_ids)
        self._forward_hooks[key] = hook
        return _HookHandle(self._forward_hooks, key)

    # ---- the tree ------------------------------------------------------------
    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, Module]]:
        yield prefix, self
        for name, child in self._modules.items():
            yield from child.named_modules(f"{prefix}.{name}" if prefix else name)

    def children(self) -> Iterator[Module]:
        yield from self._modules.values()

    def modules(self) -> Iterator[Module]:
        for _, m in self.named_modules():
            yield m

    def _named_tensors(self, kind: str) -> Iterator[tuple[str, Tensor]]:
        for prefix, module in self.named_modules():
            for name, t in getattr(module, kind).items():
                yield (f"{prefix}.{name}" if prefix else name), t

    def named_parameters(self) -> Iterator[tuple[str, Parameter]]:
        """(dotted name, parameter) pairs; a parameter shared by two modules appears once."""
        seen: set[int] = set()
        for name, p in self._named_tensors("_parameters"):
            if id(p) not in seen:
                seen.add(id(p))
                yield name, p

    def parameters(self) -> list[Parameter]:
        return [p for _, p in self.named_parameters()]

    def num_parameters(self) -> int:
        return sum(p.size for p in self.parameters())

    # ---- state -----------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Every parameter and buffer by dotted name (shared ones under each name), as backend arrays."""
        state = {name: p.data for name, p in self._named_tensors("_parameters")}
        state.update({name: b.data for name, b in self._named_tensors("_buffers")})
        return state

    def load_state_dict(self, state: dict[str, Any], strict: bool = True) -> None:
        """Copy arrays into the parameters and buffers of the same names.

        With ``strict``, missing and unexpected keys are errors; a shape mismatch
        always is. The error names every offending key.
        """
        own = dict(self._named_tensors("_parameters"))
        own.update(self._named_tensors("_buffers"))
        missing = [k for k in own if k not in state]
        unexpected = [k for k in state if k not in own]
        shape = {k: tuple(v.shape) if hasattr(v, "shape") else np.shape(v) for k, v in state.items()}
        wrong = [
            f"{k}: checkpoint {shape[k]} vs model {own[k].shape}"
            for k in own
            if k in state and shape[k] != own[k].shape
        ]
        problems = []
        if strict and missing:
            problems.append("missing keys: " + ", ".join(missing))
        if strict and unexpected:
            problems.append("unexpected keys: " + ", ".join(unexpected))
        if wrong:
            problems.append("shape mismatches: " + "; ".join(wrong))
        if own and state and len(missing) == len(own):
            problems.append(
                f"no key of the state dict matches the model (model keys start {sorted(own)[:3]}, "
                f"given keys start {sorted(state)[:3]})"
            )
        if problems:
            raise ValueError(f"load_state_dict into {type(self).__name__}: " + " | ".join(problems))
        for k, t in own.items():
            if k in state:
                value = state[k].data if isinstance(state[k], Tensor) else state[k]
                if not hasattr(value, "dtype"):
                    value = np.asarray(value)
                t.data = backend.to_device(value, t.device).astype(t.dtype, copy=True)

    # ---- modes and placement -------------------------------------------------
    def train(self, mode: bool = True) -> Module:
        for m in self.modules():
            object.__setattr__(m, "training", mode)
        return self

    def eval(self) -> Module:
        return self.train(False)

    @contextlib.contextmanager
    def evaluating(self) -> Iterator[Module]:
        """Eval mode inside a ``with`` block; on exit, even by an exception, every submodule
        gets back the mode it had before (``with model.evaluating(): logits = model(x)``)."""
        before = [(m, m.training) for m in self.modules()]
        self.eval()
        try:
            yield self
        finally:
            for m, mode in before:
                object.__setattr__(m, "training", mode)

    def to(self, device: str | None = None, dtype: Any = None) -> Module:
        """Move every parameter and buffer to ``device`` and/or cast to a floating ``dtype``, in place."""
        for _, t in [*self._named_tensors("_parameters"), *self._named_tensors("_buffers")]:
            data = t.data if device is None else backend.to_device(t.data, device)
            if dtype is not None and data.dtype.kind == "f":
                data = data.astype(dtype)
            t.data = data
            t.grad = None
        return self

    def zero_grad(self) -> None:
        for p in self.parameters():
            p.grad = None

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__}({self.extra_repr()}"]
        for name, child in self._modules.items():
            lines.append(f"  ({name}): " + repr(child).replace("\n", "\n  "))
        return "\n".join(lines) + ("\n)" if self._modules else ")")


class ModuleList(Module):
    """A list of modules, registered as '0', '1', ..."""

    def __init__(self, modules: Iterable[Module] = ()) -> None:
        super().__init__()
        for m in modules:
            self.append(m)

    def append(self, module: Module) -> None:
        setattr(self, str(len(self._modules)), module)

    def __getitem__(self, i: int) -> Module:
        return list(self._modules.values())[i]

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[Module]:
        return iter(self._modules.values())


class Sequential(ModuleList):
    """Apply modules in order; children are named '0', '1', ..."""

    def __init__(self, *modules: Module) -> None:
        super().__init__(modules)

    def forward(self, x: Any) -> Any:
        for m in self:
            x = m(x)
        return x
