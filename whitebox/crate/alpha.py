"""CRATE-alpha's layer: an overcomplete dictionary, two ISTA steps and a residual.

CRATE's ISTA block takes one proximal step with a square dictionary, warm started at
the input. CRATE-alpha (i) makes the dictionary overcomplete, D of shape (d, r d)
with r >= 1 (4 in the paper), (ii) runs two ISTA steps on the non-negative LASSO
min_{A >= 0} lam ||A||_1 + 1/2 ||Y - D A||^2 from A = 0, (iii) decodes the sparse
code with a separate learned dictionary D1 (d, r d) and (iv) adds a residual.
Column form, Y = LN(Z^{l+1/2}):

    A1 = ReLU(eta D^T Y - eta lam),
    A2 = ReLU(A1 - eta D^T (D A1 - Y) - eta lam),
    Z^{l+1} = Z^{l+1/2} + D1 A2.

Row form (tokens as rows y): a1 = relu(eta y D - eta lam), a2 = relu(a1 - eta (a1 D^T - y) D - eta lam),
out = a2 D1^T. The compression half is CRATE's MSSA with its residual, as before.
"""

from __future__ import annotations

import math

from whitebox import backend
from whitebox.crate.block import PreNormBlock
from whitebox.crate.mssa import MSSA
from whitebox.nn import Module, Parameter, init
from whitebox.tensor import Tensor


def sparse_code(x: Tensor, D: Tensor, eta: float, lam: float) -> Tensor:
    """Two ISTA steps from zero with dictionary D (d, m), row form over the last axis of ``x`` (..., d):

        a1 = relu(eta x D - eta lam),   a2 = relu(a1 - eta (a1 D^T - x) D - eta lam);

    returns the sparse code a2 (..., m).
    """
    d = x.shape[-1]
    if D.ndim != 2 or D.shape[0] != d:
        raise ValueError(f"sparse_code: D must have shape ({d}, m) for tokens of width {d}, got {D.shape}")
    a1 = (eta * (x @ D) - eta * lam).relu()
    return (a1 - eta * ((a1 @ D.T - x) @ D) - eta * lam).relu()


def overcomplete_ista(x: Tensor, D: Tensor, D1: Tensor, eta: float, lam: float) -> Tensor:
    """The reconstruction a2 D1^T (..., d) of ``sparse_code``(x, D, eta, lam), decoded by D1 (d, m);
    without the residual."""
    if D1.shape != D.shape:
        raise ValueError(f"overcomplete_ista: D1 must have the shape of D {D.shape}, got {D1.shape}")
    return sparse_code(x, D, eta, lam) @ D1.T


class OvercompleteISTA(Module):
    """CRATE-alpha's sparse coding block, the official ``OvercompleteISTABlock``.

    Parameters ``D`` and ``D1``, both (dim, overcomplete_ratio * dim), with
    torch.nn.init.kaiming_uniform_'s default init, U(-sqrt(6/m), sqrt(6/m)) for m = r dim.
    forward(x) = ``overcomplete_ista``(x, D, D1, eta, lam), without the residual
    (the block adds it).
    """

    def __init__(self, dim: int, overcomplete_ratio: int = 4, eta: float = 0.1, lam: float = 0.1) -> None:
        super().__init__()
        if not isinstance(overcomplete_ratio, int) or overcomplete_ratio < 1:
            raise ValueError(
                f"OvercompleteISTA: overcomplete_ratio must be an integer >= 1, got {overcomplete_ratio!r}"
            )
        self.dim, self.overcomplete_ratio, self.eta, self.lam = dim, overcomplete_ratio, eta, lam
        m = overcomplete_ratio * dim
        bound = math.sqrt(6 / m)
        self.D = Parameter(init.uniform((dim, m), bound), dtype=backend.DEFAULT_DTYPE)
        self.D1 = Parameter(init.uniform((dim, m), bound), dtype=backend.DEFAULT_DTYPE)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] != self.dim:
            raise ValueError(f"OvercompleteISTA: expected tokens of width {self.dim}, got shape {x.shape}")
        return overcomplete_ista(x, self.D, self.D1, self.eta, self.lam)

    def code(self, x: Tensor) -> Tensor:
        """The sparse code a2 (..., r dim) of LN-normalized tokens ``x``."""
        return sparse_code(x, self.D, self.eta, self.lam)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, overcomplete_ratio={self.overcomplete_ratio}, eta={self.eta}, lam={self.lam}"


class CRATEAlphaBlock(PreNormBlock):
    """One CRATE-alpha layer, the official ``Transformer`` layer:

        Z^{l+1/2} = Z^l + MSSA(LN(Z^l)),
        Z^{l+1}   = Z^{l+1/2} + D1 A2(LN(Z^{l+1/2}))     (``OvercompleteISTA``).

    Item 0 = PreNorm(MSSA), item 1 = PreNorm(OvercompleteISTA), LayerNorm eps 1e-6 and
    an output projection without bias, as in the official code, so the keys are
    ``0.norm.weight``, ``0.norm.bias``, ``0.fn.qkv.weight``, ``0.fn.to_out.0.weight``,
    ``1.norm.weight``, ``1.norm.bias``, ``1.fn.D``, ``1.fn.D1``. ``mask`` goes to the MSSA.
    """

    residual_second = True

    def __init__(  # noqa: PLR0917 (the official order, then CRATE-alpha's hyperparameters)
        self,
        dim: int,
        heads: int,
        dim_head: int | None = None,
        dropout: float = 0.0,
        overcomplete_ratio: int = 4,
        eta: float = 0.1,
        lam: float = 0.1,
    ) -> None:
        attn = MSSA(dim, heads, dim_head, dropout, out_bias=False)
        super().__init__(dim, attn, OvercompleteISTA(dim, overcomplete_ratio, eta, lam), eps=1e-6)

    @property
    def ista(self) -> OvercompleteISTA:
        """The sparse coding half's layer (``self[1].fn``)."""
        return self[1].fn
