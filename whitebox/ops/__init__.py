"""The op set: every differentiable primitive, each with its vector-Jacobian product."""

from whitebox.ops.elementwise import (
    abs,
    add,
    clip,
    div,
    exp,
    gelu,
    log,
    maximum,
    minimum,
    mul,
    neg,
    pow,
    relu,
    sigmoid,
    soft_threshold,
    sqrt,
    sub,
    tanh,
    where,
)
from whitebox.ops.fused import cross_entropy, dropout, embedding, layer_norm, log_softmax, logsumexp, softmax
from whitebox.ops.linalg import cholesky, logdet, matmul, solve
from whitebox.ops.reduce import max, mean, sum, var
from whitebox.ops.shape import concat, expand, getitem, permute, reshape, split, stack, swapaxes, transpose

__all__ = [
    "abs",
    "add",
    "cholesky",
    "clip",
    "concat",
    "cross_entropy",
    "div",
    "dropout",
    "embedding",
    "exp",
    "expand",
    "gelu",
    "getitem",
    "layer_norm",
    "log",
    "log_softmax",
    "logdet",
    "logsumexp",
    "matmul",
    "max",
    "maximum",
    "mean",
    "minimum",
    "mul",
    "neg",
    "permute",
    "pow",
    "relu",
    "reshape",
    "sigmoid",
    "soft_threshold",
    "softmax",
    "solve",
    "split",
    "sqrt",
    "stack",
    "sub",
    "sum",
    "swapaxes",
    "tanh",
    "transpose",
    "var",
    "where",
]
from whitebox.ops.attention import attention, tied_attention
from whitebox.ops.tssa import tssa

__all__ += ["attention", "tied_attention", "tssa"]
