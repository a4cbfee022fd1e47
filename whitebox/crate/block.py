"""What every layer stack here is made of: PreNorm, the two-half pre-norm block, the stack.

A block is two halves, each after its own LayerNorm, an attention half with a residual and a
second half with or without one:

    x = x + attn(LN1(x), mask)
    x = x + second(LN2(x))        (residual_second = True: the standard transformer block)
    x = second(LN2(x))            (residual_second = False: CRATE's block, second = ISTA)

``Transformer`` is ``depth`` such blocks applied in order, the official ``Transformer``
(keys ``layers.{i}.0.*`` for the attention half, ``layers.{i}.1.*`` for the second half).
For generation a ``KVCache`` (``whitebox.crate.kv_cache``) passes through: block i hands its
attention the slot ``cache.layer(i)``; a stack is ``cacheable`` when every attention is.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

from whitebox.crate.kv_cache import KVCache, LayerCache
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

    @property
    def cacheable(self) -> bool:
        """Whether the attention takes a key/value cache slot (its class says ``cacheable``)."""
        return getattr(self.attn, "cacheable", False)

    def forward(self, x: Tensor, mask: Any = None, cache: LayerCache | None = None) -> Tensor:
        x = x + (self[0](x, mask=mask) if cache is None else self[0](x, mask=mask, cache=cache))
        return x + self[1](x) if self.residual_second else self[1](x)


class Transformer(Module):
    """Blocks applied in order, in ``layers`` (a ModuleList, keys ``layers.{i}.*``); no final norm.
    Each block maps (B, N, dim) and a mask to (B, N, dim)."""

    def __init__(self, blocks: Iterable[Module]) -> None:
        super().__init__()
        self.layers = ModuleList(blocks)

    @property
    def cacheable(self) -> bool:
        """Whether every block takes a key/value cache slot."""
        return all(getattr(block, "cacheable", False) for block in self.layers)

    def forward(self, x: Tensor, mask: Any = None, cache: KVCache | None = None) -> Tensor:
        for i, block in enumerate(self.layers):
            x = block(x, mask=mask) if cache is None else block(x, mask=mask, cache=cache.layer(i))
        return x
