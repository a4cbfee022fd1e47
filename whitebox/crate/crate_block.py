"""One CRATE layer: compression (MSSA) then sparsification (ISTA), each after a LayerNorm.

docs/math.md §4.3, eq. (3.11): x = x + MSSA(LN1(x)); x = ISTA(LN2(x)), residual only around MSSA.
"""

from __future__ import annotations

from whitebox.crate.block import PreNormBlock, Transformer
from whitebox.crate.ista import ISTA
from whitebox.crate.mssa import MSSA


class CRATEBlock(PreNormBlock):
    """One CRATE layer (docs/math.md §4.3; tutorials 03 eq. (8) and 04 eq. (3)):

        Z^{l+1/2} = Z^l + MSSA(LN(Z^l))          compression, approximates whitebox.rate.compression_step_mssa
        Z^{l+1}   = ISTA(LN(Z^{l+1/2}))           sparsification, whitebox.rate.ista_step (no residual)

    Keys ``0.norm.*``, ``0.fn.qkv.weight``, ``0.fn.to_out.0.*``, ``1.norm.*``, ``1.fn.weight``.
    ``tied_out=True``: MSSA maps back through its own bases (``MSSA``), ``0.fn.step`` for ``to_out``.
    """

    residual_second = False

    def __init__(  # noqa: PLR0917 (the official signature)
        self,
        dim: int,
        heads: int,
        dim_head: int | None = None,
        dropout: float = 0.0,
        eta: float = 0.1,
        lam: float = 0.1,
        tied_out: bool = False,
    ) -> None:
        super().__init__(dim, MSSA(dim, heads, dim_head, dropout, tied_out=tied_out), ISTA(dim, eta, lam))

    @property
    def ista(self) -> ISTA:
        """The sparsification half's layer (``self[1].fn``)."""
        return self[1].fn


class CRATETransformer(Transformer):
    """``depth`` CRATE layers with the official ``Transformer``'s signature: keys
    ``layers.{i}.0.*`` (MSSA) and ``layers.{i}.1.*`` (ISTA). No final norm."""

    def __init__(  # noqa: PLR0917 (the official signature)
        self,
        dim: int,
        depth: int,
        heads: int,
        dim_head: int | None = None,
        dropout: float = 0.0,
        eta: float = 0.1,
        lam: float = 0.1,
        tied_out: bool = False,
    ) -> None:
        super().__init__(CRATEBlock(dim, heads, dim_head, dropout, eta, lam, tied_out) for _ in range(depth))
