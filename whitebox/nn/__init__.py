"""Neural-network building blocks on the whitebox autograd."""

from whitebox.nn import init
from whitebox.nn.layers import GELU, Dropout, Embedding, Identity, LayerNorm, Linear, ReLU, Tanh
from whitebox.nn.module import Module, ModuleList, Parameter, Sequential

__all__ = [
    "GELU",
    "Dropout",
    "Embedding",
    "Identity",
    "LayerNorm",
    "Linear",
    "Module",
    "ModuleList",
    "Parameter",
    "ReLU",
    "Sequential",
    "Tanh",
    "init",
]
