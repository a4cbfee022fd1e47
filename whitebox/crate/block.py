"""One CRATE layer: compression (MSSA) then sparsification (ISTA), each after a LayerNorm.

CRATE.md sec. 4: x = x + MSSA(LN1(x)); x = ISTA(LN2(x)), residual only around MSSA.
"""

from __future__ import annotations

from typing import Any

from whitebox.crate.ista import ISTA
from whitebox.crate.mssa import MSSA
from whitebox.nn import LayerNorm, Module, ModuleList
from whitebox.tensor import Tensor


class PreNorm(Module):
    """fn(LayerNorm(x)): submodules ``norm`` and ``fn``, the official ``PreNorm``."""

    def __init__(self, dim: int, fn: Module) -> None:
        super().__init__()
        self.norm = LayerNorm(dim)
        self.fn = fn

    def forward(self, x: Tensor, **kwargs: Any) -> Tensor:
        return self.fn(self.norm(x), **kwargs)


class CRATEBlock(ModuleList):
    """One CRATE layer (CRATE.md sec. 4; tutorials 03 eq. (8) and 04 eq. (3)):

        Z^{l+1/2} = Z^l + MSSA(LN(Z^l))          compression, approximates whitebox.rate.compression_step_mssa
        Z^{l+1}   = ISTA(LN(Z^{l+1/2}))           sparsification, whitebox.rate.ista_step (no residual)

    A ModuleList as in the official code: item 0 = PreNorm(MSSA), item 1 = PreNorm(ISTA),
    so its keys are ``0.norm.*``, ``0.fn.qkv.weight``, ``0.fn.to_out.0.*``, ``1.norm.*``,
    ``1.fn.weight``. ``mask`` (boolean, True = may attend) goes to the MSSA.
    """

    def __init__(  # noqa: PLR0917 (the official signature)
        self,
        dim: int,
        heads: int,
        dim_head: int | None = None,
        dropout: float = 0.0,
        eta: float = 0.1,
        lam: float = 0.1,
    ) -> None:
        super().__init__(
            [PreNorm(dim, MSSA(dim, heads, dim_head, dropout)), PreNorm(dim, ISTA(dim, eta, lam))]
        )

    @property
    def attn(self) -> MSSA:
        return self[0].fn

    @property
    def ista(self) -> ISTA:
        return self[1].fn

    def forward(self, x: Tensor, mask: Any = None) -> Tensor:
        x = x + self[0](x, mask=mask)
        return self[1](x)


class CRATETransformer(Module):
    """A stack of ``depth`` CRATE layers in ``layers`` (ModuleList of CRATEBlock), the official
    ``Transformer``: keys ``layers.{i}.0.*`` (MSSA) and ``layers.{i}.1.*`` (ISTA). No final norm."""

    def __init__(  # noqa: PLR0917 (the official signature)
        self,
        dim: int,
        depth: int,
        heads: int,
        dim_head: int | None = None,
        dropout: float = 0.0,
        eta: float = 0.1,
        lam: float = 0.1,
    ) -> None:
        super().__init__()
        self.layers = ModuleList(CRATEBlock(dim, heads, dim_head, dropout, eta, lam) for _ in range(depth))

    def forward(self, x: Tensor, mask: Any = None) -> Tensor:
        for block in self.layers:
            x = block(x, mask=mask)
        return x
