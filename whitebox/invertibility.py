"""Does CRATE-MAE's decoder retrace its encoder? Per-layer measurements in mirrored order.

The encoder (``CRATEMAE.blocks``) takes the tokens Z^0 (embedded patches, cls and position code)
through D layers, Z^{l+1} = ISTA(LN(Z^l + MSSA(LN Z^l))). The decoder (``decoder_blocks``)
starts from X^0 = norm(Z^D) and takes D layers, X^{j+1} = y - MSSA'(LN y) with y = LN(X^j) W_j^T.
Decoder layer j is meant to undo encoder layer l = D - 1 - j, so X^{j+1} mirrors Z^l, the
tokens that entered encoder layer l, and X^j mirrors Z^{l+1}, what came out of it.

For each mirrored pair (l, j = D - 1 - l), averaged over the images, this module reads:

* ``enc_compression``: R^c of LN(Z^l), the tokens encoder layer l's MSSA compresses, against that
  MSSA's subspaces; ``dec_compression``: R^c of LN(y), the tokens decoder layer j's MSSA acts on,
  against its own subspaces (``whitebox.measure.compression``, eps^2 = 0.01);
* ``enc_sparsity``: ||Z^{l+1}||_0 / (d N), the encoder layer's (ReLU) output; ``dec_sparsity``:
  ||X^j||_0 / (d N), the code decoder layer j receives, which mirrors Z^{l+1};
* ``distance``: ||X^{j+1} - Z^l||_F / ||Z^l||_F per image, how far the decoder layer's output is
  from the encoder tokens it mirrors; ``cosine``: the mean over tokens of the cosine between
  the rows of X^{j+1} and Z^l (1 = same directions, whatever the scale);
* ``distance_to``: the relative distance of X^{j+1} to every Z^0 .. Z^{D-1}, so a reader can see
  whether the mirrored layer is the nearest one.

All measurements are on unmasked images: ``model.decode(model.encode(images))``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from whitebox.measure import EPS2, compression, subspace_bases
from whitebox.nn import Module
from whitebox.tensor import Tensor, no_grad


def _host(x: Tensor) -> np.ndarray:
    return x.numpy().astype(np.float64)


def _recorders(model: Module) -> tuple[dict[str, list[list[np.ndarray]]], list[Any]]:
    """Forward hooks that keep, per layer, the tokens listed in the module docstring."""
    D = len(model.blocks)
    keys = ("enc_in", "enc_mssa_in", "enc_out", "dec_in", "dec_mssa_in", "dec_out")
    rec: dict[str, list[list[np.ndarray]]] = {k: [[] for _ in range(D)] for k in keys}
    handles = []

    def keep(key: str, i: int, which: str) -> Any:
        def hook(m: Module, inputs: tuple, out: Any) -> None:
            rec[key][i].append(_host(inputs[0] if which == "in" else out))

        return hook

    for i in range(D):
        enc, dec = model.blocks[i].layers[0], model.decoder_blocks[i].layers[0]
        handles += [
            enc.register_forward_hook(keep("enc_in", i, "in")),
            enc.register_forward_hook(keep("enc_out", i, "out")),
            enc[0].norm.register_forward_hook(keep("enc_mssa_in", i, "out")),
            dec.register_forward_hook(keep("dec_in", i, "in")),
            dec.register_forward_hook(keep("dec_out", i, "out")),
            dec[1].norm.register_forward_hook(keep("dec_mssa_in", i, "out")),
        ]
    return rec, handles


def _relative(a: np.ndarray, b: np.ndarray) -> float:
    """Mean over images of ||a - b||_F / ||b||_F, for token arrays (B, N, d)."""
    num = np.linalg.norm((a - b).reshape(len(a), -1), axis=1)
    return float((num / np.maximum(np.linalg.norm(b.reshape(len(b), -1), axis=1), 1e-12)).mean())


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Mean over images and tokens of the cosine between corresponding rows of a and b."""
    dot = (a * b).sum(-1)
    return float((dot / np.maximum(np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1), 1e-12)).mean())


def mirrored_layers(
    model: Module, images: Any, eps2: float = EPS2, batch_size: int = 100
) -> list[dict[str, Any]]:
    """The measurements of the module docstring for a ``CRATEMAE`` with as many decoder layers as
    encoder layers, one dict per encoder layer l = 0 .. D-1 (decoder layer D - 1 - l)::

        {"layer": l, "decoder_layer": D - 1 - l, "enc_compression", "dec_compression",
         "enc_sparsity", "dec_sparsity", "distance", "cosine", "distance_to": [D floats]}

    ``images`` (B, C, H, W), normalized as in training, go through in chunks of ``batch_size``
    in eval mode without gradients."""
    if not (hasattr(model, "decoder_blocks") and hasattr(model, "blocks")) or not all(
        hasattr(b, "layers") for b in model.decoder_blocks
    ):
        raise TypeError(f"mirrored_layers: expected a CRATEMAE, got {type(model).__name__}")
    D = len(model.blocks)
    if len(model.decoder_blocks) != D:
        raise ValueError(
            f"mirrored_layers: the decoder must have as many layers as the encoder ({D}), "
            f"got decoder_depth={len(model.decoder_blocks)}"
        )
    rec, handles = _recorders(model)
    was_training = model.training
    model.eval()
    try:
        with no_grad():
            for start in range(0, len(images), batch_size):
                chunk = images[start : start + batch_size]  # an array or a Tensor: the model converts it
                model.decode(model.encode(chunk))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    tokens = {k: [np.concatenate(v) for v in lists] for k, lists in rec.items()}
    rows = []
    for l in range(D):  # noqa: E741 (the layer index of the docstring)
        j = D - 1 - l
        enc, dec = model.blocks[l].layers[0], model.decoder_blocks[j].layers[0]
        Z_in, X_out = tokens["enc_in"][l], tokens["dec_out"][j]
        rows.append(
            {
                "layer": l,
                "decoder_layer": j,
                "enc_compression": float(
                    compression(tokens["enc_mssa_in"][l], subspace_bases(enc[0].fn), eps2).mean()
                ),
                "dec_compression": float(
                    compression(tokens["dec_mssa_in"][j], subspace_bases(dec[1].fn), eps2).mean()
                ),
                "enc_sparsity": float(np.count_nonzero(tokens["enc_out"][l]) / tokens["enc_out"][l].size),
                "dec_sparsity": float(np.count_nonzero(tokens["dec_in"][j]) / tokens["dec_in"][j].size),
                "distance": _relative(X_out, Z_in),
                "cosine": _cosine(X_out, Z_in),
                "distance_to": [_relative(X_out, tokens["enc_in"][m]) for m in range(D)],
            }
        )
    return rows


def format_mirrored(rows: list[dict[str, Any]], title: str = "") -> str:
    """``mirrored_layers`` as a fixed-width text table, encoder layer l beside decoder layer D-1-l."""
    lines = [title] if title else []
    lines.append(
        f"{'enc':>3} {'dec':>3}  {'R^c enc':>8} {'R^c dec':>8}  {'nnz enc out':>11} {'nnz dec in':>10}"
        f"  {'|X-Z|/|Z|':>9} {'cos(X,Z)':>8}"
    )
    for r in rows:
        lines.append(
            f"{r['layer'] + 1:>3} {r['decoder_layer'] + 1:>3}  {r['enc_compression']:>8.2f} "
            f"{r['dec_compression']:>8.2f}  {r['enc_sparsity']:>11.3f} {r['dec_sparsity']:>10.3f}"
            f"  {r['distance']:>9.3f} {r['cosine']:>8.3f}"
        )
    return "\n".join(lines)
