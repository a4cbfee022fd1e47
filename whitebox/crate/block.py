"""What every layer stack here is made of: PreNorm, the two-half pre-norm block, the stack.

A block is two halves, each after its own LayerNorm, an attention half with a residual and a
second half with or without one:

    x = x + attn(LN1(x), mask)
    x = x + second(LN2(x))        (residual_second = True: the standard transformer block)
    x = second(LN2(x))            (residual_second = False: CRATE's block, second = ISTA)

``Transformer`` is ``depth`` such blocks applied in order, the official ``Transformer``
(keys ``layers.{i}.0.*`` for the attention half, ``layers.{i}.1.*`` for the second half).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

from whitebox.nn import LayerNorm, Module, ModuleList
from whitebox.tensor import Tensor


class PreNorm(Module):
    """fn(LayerNorm(x)): submodules ``norm`` (epsilon ``eps``) and ``fn``, the official ``PreNorm``."""

    def __init__(self, dim: int, fn: Module, eps: float = 1e-5) -> None:
        super().__init__()
        self.norm = LayerNorm(dim, eps=eps)
        self.fn = fn

    def forward(self, x: Tensor, **kwargs: Any) -> Tensor:
        return self.fn(self.norm(x), **kwargs)


class PreNormBlock(ModuleList):
    """One layer: item 0 = PreNorm(attn), item 1 = PreNorm(second), as a ModuleList like the
    official code, so its keys are ``0.norm.*``, ``0.fn.*``, ``1.norm.*``, ``1.fn.*``.
    ``mask`` (boolean, True = may attend) goes to the attention. Subclasses set
    ``residual_second`` (see the module docstring); ``eps`` is both LayerNorms' epsilon."""

    residual_second: ClassVar[bool]

    def __init__(self, dim: int, attn: Module, second: Module, eps: float = 1e-5) -> None:
        super().__init__([PreNorm(dim, attn, eps), PreNorm(dim, second, eps)])

    @property
    def attn(self) -> Module:
        """The attention half's layer (``self[0].fn``)."""
        return self[0].fn

    def forward(self, x: Tensor, mask: Any = None) -> Tensor:
        x = x + self[0](x, mask=mask)
        return x + self[1](x) if self.residual_second else self[1](x)


class Transformer(Module):
    """Blocks applied in order, in ``layers`` (a ModuleList, keys ``layers.{i}.*``); no final norm.
    Each block maps (B, N, dim) and a mask to (B, N, dim)."""

    def __init__(self, blocks: Iterable[Module]) -> None:
        super().__init__()
        self.layers = ModuleList(blocks)

    def forward(self, x: Tensor, mask: Any = None) -> Tensor:
        for block in self.layers:
            x = block(x, mask=mask)
        return x
