"""Look inside CRATE and its twins layer by layer, with forward hooks (the forward pass is unchanged).

``record(model)`` is a context manager: every forward inside it appends, for each layer l
(CRATEBlock, CRATEAlphaBlock or TransformerBlock, in the order ``model.modules()`` lists them), host
NumPy copies of the layer's intermediate tokens to a dict of lists, one list per key,
indexed by layer. Shapes are (B, N, dim) for tokens, (B, heads, N, N) for attention.

CRATE layer l (docs/math.md §4.3 and §5; Z^l the tokens entering the layer):
    "mssa_in"    LN1(Z^l), the tokens MSSA compresses (measure R^c here)
    "mssa_out"   Z^{l+1/2} = Z^l + MSSA(LN1(Z^l)), after the residual
    "ista_in"    LN2(Z^{l+1/2}), the tokens ISTA sparsifies
    "ista_out"   Z^{l+1} = ISTA(LN2(Z^{l+1/2})), the layer's output (measure sparsity here)
    "attention"  the MSSA's per-head attention probabilities softmax(w w^T / sqrt(p))

CRATE-alpha layer l: the CRATE keys, with the residual around the sparse coding half, plus
    "code"       A2, the overcomplete sparse code of ISTA_in, (B, N, r dim) (measure sparsity here)
    "ista_out"   Z^{l+1} = Z^{l+1/2} + D1 A2, the layer's output

Standard (ViT, GPT, BERT; ToST, whose attention is TSSA) layer l:
    "attn_in"    LN1(Z^l), the tokens entering attention
    "attn_out"   Z^l + Attention(LN1(Z^l))
    "mlp_in"     LN2 of that
    "mlp_hidden" GELU activations inside the MLP, (B, N, mlp_dim)
    "mlp_out"    the layer's output, attn_out + MLP(mlp_in)
    "attention"  per-head attention probabilities softmax(q k^T / sqrt(p)); for ToST the
                 memberships Pi (B, heads, N) of each token to each head (TSSA has no N x N map)

Example::

    with record(model) as rec:
        model(images)
    rec["ista_out"][3]        # layer 3's output tokens, a NumPy array (B, N, dim)
    rec["attention"][-1][:, :, 0, 1:]   # last layer: the cls token's attention over patches

After several forwards inside one ``record``, each list holds depth x (number of forwards)
entries, forward after forward. ``intermediates(model, images)`` does one forward without
gradients and returns ``(logits, rec)``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from whitebox import backend
from whitebox.crate.alpha import CRATEAlphaBlock
from whitebox.crate.crate_block import CRATEBlock
from whitebox.crate.transformer_block import TransformerBlock
from whitebox.nn import Module
from whitebox.tensor import Tensor, no_grad

CRATE_KEYS = ("mssa_in", "mssa_out", "ista_in", "ista_out", "attention")
ALPHA_KEYS = (*CRATE_KEYS, "code")
LAYERS = (CRATEBlock, CRATEAlphaBlock, TransformerBlock)
TRANSFORMER_KEYS = ("attn_in", "attn_out", "mlp_in", "mlp_hidden", "mlp_out", "attention")


def _host(x: Any) -> np.ndarray:
    data = x.data if isinstance(x, Tensor) else x
    return np.array(backend.to_numpy(data), copy=True)


def _output(m: Module, inputs: tuple, out: Any) -> Any:
    return out


def _first_input(m: Module, inputs: tuple, out: Any) -> Any:
    return inputs[0]


def _kept_attention(m: Module, inputs: tuple, out: Any) -> Any:
    return m.attention


Picker = Callable[[Module, tuple, Any], Any]


def _sparse_code(block: CRATEAlphaBlock) -> Picker:
    def pick(m: Module, inputs: tuple, out: Any) -> Any:
        with no_grad():
            return block.ista.code(out)

    return pick


def _keys(block: Module) -> tuple[str, ...]:
    if isinstance(block, CRATEAlphaBlock):
        return ALPHA_KEYS
    return CRATE_KEYS if isinstance(block, CRATEBlock) else TRANSFORMER_KEYS


def _layer_hooks(block: Module) -> list[tuple[Module, str, Picker]]:
    """(module, key, picker): after ``module``'s forward, record picker(module, inputs, output) under key."""
    if isinstance(block, CRATEBlock):
        return [
            (block[0].norm, "mssa_in", _output),
            (block[0].fn, "attention", _kept_attention),
            (block[1], "mssa_out", _first_input),
            (block[1].norm, "ista_in", _output),
            (block[1], "ista_out", _output),
        ]
    if isinstance(block, CRATEAlphaBlock):
        return [
            (block[0].norm, "mssa_in", _output),
            (block[0].fn, "attention", _kept_attention),
            (block[1], "mssa_out", _first_input),
            (block[1].norm, "ista_in", _output),
            (block[1].norm, "code", _sparse_code(block)),
            (block, "ista_out", _output),
        ]
    return [
        (block[0].norm, "attn_in", _output),
        (block[0].fn, "attention", _kept_attention),
        (block[1], "attn_out", _first_input),
        (block[1].norm, "mlp_in", _output),
        (block.mlp.net[1], "mlp_hidden", _output),
        (block, "mlp_out", _output),
    ]


def _recorder(into: list[np.ndarray], pick: Picker) -> Callable[[Module, tuple, Any], None]:
    def hook(m: Module, inputs: tuple, out: Any) -> None:
        into.append(_host(pick(m, inputs, out)))

    return hook


@contextlib.contextmanager
def record(model: Module) -> Iterator[dict[str, list[np.ndarray]]]:
    """Record every CRATE / CRATE-alpha / standard layer's intermediates during the forwards inside the block.

    Yields the dict described in the module docstring (keys CRATE_KEYS, ALPHA_KEYS or
    TRANSFORMER_KEYS, or several for a model mixing them). Attention maps are kept only while
    recording; hooks and ``keep_attention`` flags are restored on exit.
    """
    blocks = [m for m in model.modules() if isinstance(m, LAYERS)]
    if not blocks:
        raise ValueError(
            f"record: {type(model).__name__} has no CRATEBlock, CRATEAlphaBlock or TransformerBlock layers"
        )
    rec: dict[str, list[np.ndarray]] = {}
    handles, flags = [], []
    for block in blocks:
        for key in _keys(block):
            rec.setdefault(key, [])
        attn = block[0].fn
        flags.append((attn, attn.keep_attention))
        attn.keep_attention = True
        for module, key, pick in _layer_hooks(block):
            handles.append(module.register_forward_hook(_recorder(rec[key], pick)))
    try:
        yield rec
    finally:
        for h in handles:
            h.remove()
        for attn, flag in flags:
            attn.keep_attention = flag
            if not flag:
                attn.attention = None


def intermediates(model: Module, images: Any) -> tuple[np.ndarray, dict[str, list[np.ndarray]]]:
    """One forward of ``images`` without gradients; returns (logits as NumPy, the ``record`` dict)."""
    with no_grad(), record(model) as rec:
        logits = model(images)
    return _host(logits), rec
