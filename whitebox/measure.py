"""Measuring the white box layer by layer: compression and sparsity (docs/math.md §5).

Every CRATE layer is meant to take one step on the sparse rate reduction objective,
max Delta R(Z; U_[K]) - lam ||Z||_0, so two quantities can be read off each layer l:

* **Compression** of the tokens entering its MSSA, Z = LN1(Z^l) (one image or sequence, N tokens
  as rows), against the layer's own subspaces. Head k's basis is U_k = W_k^T, W_k being head k's
  rows of the ``qkv`` weight (for a ViT, of its query weight), so U_k^T z is exactly what the head
  attends with. As in the official plots each projected token is unit-normalized per head and
  eps^2 = 0.01:

      y_{k,i} = U_k^T z_i / ||U_k^T z_i||_2,   Y_k = [y_{k,1}, ..., y_{k,N}]  (p x N)
      R^c(Z) = sum_k R(Y_k) = sum_k 1/2 logdet(I_N + p/(N eps^2) Y_k^T Y_k)     (natural log)

  It lies between K/2 log(1 + p/eps^2) (each head's tokens all on one line) and
  K m/2 log(1 + p/(m eps^2)) with m = min(N, p) (each head's tokens spread evenly over m
  orthogonal directions, e.g. N <= p orthonormal tokens), and should fall with depth.
* **Sparsity** of the layer's ISTA output Z^{l+1}: the fraction of nonzero entries
  ||Z^{l+1}||_0 / (d N), which should also fall with depth. For a ViT the same is taken of the
  MLP's output MLP(LN2(x)) (before the residual), its stand-in for ISTA.

CRATE's successors: a CRATE-alpha layer is measured as CRATE's, but its sparsity is that of the
overcomplete sparse code A2 (r d features per token), ||A2||_0 / (r d N), since its output
Z^{l+1/2} + D1 A2 is dense by construction (a residual). A ToST layer is a standard block whose
attention is TSSA: R^c is taken against the subspaces U_k = W_k^T of TSSA's own projection
(``qkv`` / ``c_attn``), the ones whose Pi-weighted second moments TSSA's objective compresses;
its sparsity is that of the MLP output, as for a ViT (ToST has no ISTA step, so it is a
stand-in, not a quantity its derivation promises to lower).

Numbers are averaged over the given inputs (images or token sequences). Works for any model made
of ``CRATEBlock`` / ``CRATEAlphaBlock`` / ``TransformerBlock`` layers (CRATE, ViT, CausalCRATE,
GPT, CRATEAlpha, ToST, CausalCRATEAlpha, CausalToST): see ``whitebox.crate.probe``.

``halfsteps`` takes a CRATE layer apart to say where R^c and sparsity move: R^c against the
layer's own U^l at each stage of the layer, Z^l -> LN1(Z^l), Z^l -> Z^{l+1/2} = Z^l + MSSA(LN1(Z^l))
(the compression half-step, residual included) -> LN2(Z^{l+1/2}) -> Z^{l+1} = ISTA(LN2(Z^{l+1/2})),
and, for ISTA's pre-activation Y = LN2(Z^{l+1/2}) P - eta lam (P = I + eta (D - D^T D),
docs/math.md eq. (4.2)), which entries the sign zeroes (x P <= 0) and which only the threshold
eta lam does (0 < x P <= eta lam), with the RMS of x P as the token scale eta lam is set against.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from whitebox.crate import TSSA, CausalTSSA, CRATEAlphaBlock, CRATEBlock, TransformerBlock, record
from whitebox.nn import Module
from whitebox.rate import coding_rate
from whitebox.tensor import Tensor, no_grad

EPS2 = 0.01


def subspace_bases(attn: Module) -> np.ndarray:
    """The bases U_[K] an attention module projects onto, as a float64 array (K, d, p).

    MSSA: W = ``qkv.weight`` (K p, d) and U_k = (rows k p .. (k+1) p of W)^T.
    ViT ``Attention``: the same with the query third of ``to_qkv.weight`` ([q | k | v] rows).
    ToST: ``TSSA``'s ``qkv.weight``, ``CausalTSSA``'s ``c_attn.weight`` (its one projection).
    """
    K, p = attn.heads, attn.dim_head
    if hasattr(attn, "qkv"):
        W = attn.qkv.weight.numpy()
    elif hasattr(attn, "c_attn"):
        W = attn.c_attn.weight.numpy()
    elif hasattr(attn, "to_qkv"):
        W = attn.to_qkv.weight.numpy()[: K * p]
    else:
        raise TypeError(f"subspace_bases: {type(attn).__name__} has neither a qkv nor a to_qkv projection")
    return W.astype(np.float64).reshape(K, p, -1).transpose(0, 2, 1)


def compression_per_head(Z: Any, U: np.ndarray, eps2: float = EPS2) -> np.ndarray:
    """R(Y_k) for every head k (module docstring), shape (..., K), for tokens ``Z`` (..., N, d).

    Y_k holds the tokens projected by U[k] (d, p) and unit-normalized (a zero projection stays
    zero); computed in float64 with ``whitebox.rate.coding_rate``.
    """
    Z = np.asarray(Z.numpy() if isinstance(Z, Tensor) else Z, dtype=np.float64)
    P = Z[..., None, :, :] @ U  # (..., K, N, p)
    norms = np.linalg.norm(P, axis=-1, keepdims=True)
    P = P / np.where(norms > 0, norms, 1.0)
    return coding_rate(P, math.sqrt(eps2)).numpy()


def compression(Z: Any, U: np.ndarray, eps2: float = EPS2) -> np.ndarray:
    """R^c(Z; U_[K]) = sum_k R(Y_k), shape Z.shape[:-2]."""
    return compression_per_head(Z, U, eps2).sum(axis=-1)


def nonzero_fraction(Z: Any) -> float:
    """||Z||_0 / Z.size: the fraction of entries that are not exactly zero."""
    Z = Z.numpy() if isinstance(Z, Tensor) else np.asarray(Z)
    return np.count_nonzero(Z) / Z.size


def _blocks(model: Module) -> list[Module]:
    return [m for m in model.modules() if isinstance(m, CRATEBlock | CRATEAlphaBlock | TransformerBlock)]


def _kind(block: Module) -> str:
    """The ``block`` field: "crate", "crate-alpha", "tost" or "vit" (any other standard block)."""
    if isinstance(block, CRATEAlphaBlock):
        return "crate-alpha"
    if isinstance(block, TransformerBlock):
        return "tost" if isinstance(block.attn, TSSA | CausalTSSA) else "vit"
    return "crate"


def layerwise_compression_sparsity(
    model: Module, inputs: Any, eps2: float = EPS2, batch_size: int = 200
) -> list[dict[str, Any]]:
    """Per layer of ``model``, the compression and sparsity of the module docstring.

    ``inputs`` are what ``model`` takes (images (B, C, H, W) normalized as in training, or token
    ids (B, T)), as an array or Tensor; they go through the model in chunks of ``batch_size``
    in eval mode without gradients. Returns one dict per layer::

        {"layer": i, "block": "crate" | "crate-alpha" | "tost" | "vit",
         "compression": R^c averaged over the inputs,
         "compression_per_head": [R(Y_1), ..., R(Y_K)], "sparsity": ||Z||_0 / (d N)}
    """
    blocks = _blocks(model)
    if not blocks:
        raise ValueError(
            f"layerwise_compression_sparsity: {type(model).__name__} has no CRATE, CRATE-alpha "
            "or standard layers"
        )
    bases = [subspace_bases(b[0].fn) for b in blocks]
    device, dtype = model.parameters()[0].device, model.parameters()[0].dtype
    rc = [np.zeros(len(U)) for U in bases]
    nonzero, entries, count = np.zeros(len(blocks)), np.zeros(len(blocks)), 0
    with model.evaluating():
        for start in range(0, len(inputs), batch_size):
            chunk = inputs[start : start + batch_size]
            if not isinstance(chunk, Tensor):
                chunk = np.asarray(chunk)
                chunk = Tensor(chunk, dtype=dtype if chunk.dtype.kind == "f" else None, device=device)
            mlp_out: list[np.ndarray] = []

            def keep(m: Module, i: tuple, out: Tensor) -> None:
                mlp_out.append(out.numpy())

            handles = [b[1].fn.register_forward_hook(keep) for b in blocks if isinstance(b, TransformerBlock)]
            try:
                with no_grad(), record(model) as rec:
                    model(chunk)
            finally:
                for h in handles:
                    h.remove()
            vit_outputs = iter(mlp_out)
            for i, block in enumerate(blocks):
                vit = isinstance(block, TransformerBlock)
                Z = rec["attn_in" if vit else "mssa_in"][i]
                out = (
                    next(vit_outputs)
                    if vit
                    else rec["code" if _kind(block) == "crate-alpha" else "ista_out"][i]
                )
                rc[i] += compression_per_head(Z, bases[i], eps2).sum(axis=0)
                nonzero[i] += np.count_nonzero(out)
                entries[i] += out.size
            count += len(chunk)
    return [
        {
            "layer": i,
            "block": _kind(block),
            "compression": float(rc[i].sum() / count),
            "compression_per_head": (rc[i] / count).tolist(),
            "sparsity": float(nonzero[i] / entries[i]),
        }
        for i, block in enumerate(blocks)
    ]


def halfsteps(
    model: Module, inputs: Any, eps2: float = EPS2, batch_size: int = 200
) -> list[dict[str, float]]:
    """Per CRATE layer l, averaged over ``inputs`` (module docstring)::

    {"layer": l, "rc_pre": R^c(Z^l), "rc_in": R^c(LN1(Z^l)), "rc_half": R^c(Z^{l+1/2}),
     "rc_ista_in": R^c(LN2(Z^{l+1/2})), "rc_out": R^c(Z^{l+1}) (all against U^l),
     "sparsity": ||Z^{l+1}||_0 / (d N),
     "sign_zero": share of x P <= 0, "threshold_zero": share of 0 < x P <= eta lam,
     "scale": RMS of x P, "eta_lam": eta lam}
    """
    blocks = [b for b in _blocks(model) if isinstance(b, CRATEBlock)]
    if not blocks:
        raise ValueError(f"halfsteps: {type(model).__name__} has no CRATE layers")
    bases = [subspace_bases(b.attn) for b in blocks]
    stages = {
        "rc_pre": "layer_in",
        "rc_in": "mssa_in",
        "rc_half": "mssa_out",
        "rc_ista_in": "ista_in",
        "rc_out": "ista_out",
    }
    sums = [dict.fromkeys([*stages, "nonzero", "sign_zero", "threshold_zero", "sq"], 0.0) for _ in blocks]
    device, dtype = model.parameters()[0].device, model.parameters()[0].dtype
    count, entries = 0, np.zeros(len(blocks))
    with model.evaluating():
        for start in range(0, len(inputs), batch_size):
            chunk = inputs[start : start + batch_size]
            if not isinstance(chunk, Tensor):
                chunk = np.asarray(chunk)
                chunk = Tensor(chunk, dtype=dtype if chunk.dtype.kind == "f" else None, device=device)
            layer_in: list[np.ndarray] = []

            def keep(m: Module, i: tuple, out: Tensor) -> None:
                layer_in.append(i[0].numpy())

            handles = [b.register_forward_hook(keep) for b in blocks]
            try:
                with no_grad(), record(model) as rec:
                    model(chunk)
            finally:
                for h in handles:
                    h.remove()
            rec["layer_in"] = layer_in
            for i, block in enumerate(blocks):
                for key, stage in stages.items():
                    sums[i][key] += compression(rec[stage][i], bases[i], eps2).sum()
                ista = block.ista
                D = ista.weight.numpy().astype(np.float64)
                xP = rec["ista_in"][i].astype(np.float64) @ (np.eye(ista.dim) + ista.eta * (D - D.T @ D))
                sums[i]["nonzero"] += np.count_nonzero(rec["ista_out"][i])
                sums[i]["sign_zero"] += np.count_nonzero(xP <= 0)
                sums[i]["threshold_zero"] += np.count_nonzero((xP > 0) & (xP <= ista.eta * ista.lam))
                sums[i]["sq"] += float((xP**2).sum())
                entries[i] += xP.size
            count += len(chunk)
    rows = []
    for i, block in enumerate(blocks):
        s, n = sums[i], entries[i]
        row: dict[str, float] = {"layer": i, **{k: float(s[k] / count) for k in stages}}
        row.update(
            sparsity=float(s["nonzero"] / n),
            sign_zero=float(s["sign_zero"] / n),
            threshold_zero=float(s["threshold_zero"] / n),
            scale=math.sqrt(s["sq"] / n),
            eta_lam=block.ista.eta * block.ista.lam,
        )
        rows.append(row)
    return rows


def format_table(rows: list[dict[str, Any]], title: str = "") -> str:
    """The per-layer results of ``layerwise_compression_sparsity`` as a fixed-width text table."""
    heads = len(rows[0]["compression_per_head"]) if rows else 0
    lines = [title] if title else []
    lines.append(
        f"{'layer':>5}  {'R^c (sum of ' + str(heads) + ' heads)':>22}  {'sparsity ||Z||_0/(dN)':>22}"
    )
    for r in rows:
        lines.append(f"{r['layer'] + 1:>5}  {r['compression']:>22.3f}  {r['sparsity']:>22.4f}")
    return "\n".join(lines)
