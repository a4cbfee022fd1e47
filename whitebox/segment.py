"""Segmentation from a classifier's attention, with no segmentation training, and its IoU.

Attention maps. In layer l, head k, the cls token's attention over the n = gh * gw patches is
row 0 of the attention matrix without its own entry, a_k = A_k[0, 1:]. A map is thresholded
by the mass rule: sort its entries in decreasing order and keep the smallest prefix whose sum
reaches ``keep`` (0.6) of the total (the patches that carry 60% of the attention), then
upsample each patch to its p1 x p2 pixels. The head average thresholds (1/K) sum_k a_k.

Normalized cut (MaskCut-style). On the patch features f_i of a layer (its output tokens), the
affinity W_ij = 1 if cos(f_i, f_j) >= tau, else eps, with degrees D = diag(W 1). The relaxed
normalized cut min_x x^T (D - W) x / x^T D x, x orthogonal to D 1, is solved by the generalized
eigenproblem (D - W) x = lambda D x: with v the eigenvector of the second smallest eigenvalue of
the symmetric I - D^{-1/2} W D^{-1/2}, x = D^{-1/2} v. The patches with x above its mean form
one side; the side with more of the (head-averaged) cls attention is the object.

Metrics. IoU(P, T) = |P and T| / |P or T| per image (1 when both are empty); the floor is a
box of the mean object size (mean height and width of the true masks' bounding boxes) in the
centre of every image; the ceiling is ``best_patch_masks``, the mask made of whole patches with
the highest IoU, the best any patch-level segmenter can do.

    pred = predict_masks(model, images, method="attention", layer=-1)   # bool (B, H, W)
    iou(pred, true_masks).mean()
    rows = layer_scores(model, images, true_masks)   # every layer, head and method, one forward
    print(format_table(rows, references(true_masks, model.patch_size)))
"""

from __future__ import annotations

from typing import Any

import numpy as np

from whitebox import backend
from whitebox.crate.probe import intermediates
from whitebox.nn import Module

METHODS = ("attention", "maskcut")
#: Share of the attention mass a thresholded map keeps (DINO's rule).
KEEP = 0.6


def cls_attention_maps(attention: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """The cls token's attention over the patches, (B, heads, gh, gw), from (B, heads, N, N),
    N = 1 + gh * gw; patches in row-major order."""
    B, K, N, N2 = attention.shape
    if N != N2 or N != 1 + grid[0] * grid[1]:
        raise ValueError(
            f"attention must be (B, heads, N, N) with N = 1 + {grid[0]}*{grid[1]}, got {attention.shape}"
        )
    return attention[:, :, 0, 1:].reshape(B, K, *grid)


def mass_threshold(maps: np.ndarray, keep: float = KEEP) -> np.ndarray:
    """Boolean masks, same shape as ``maps`` (..., gh, gw) of nonnegative weights: per map the
    largest entries whose sum first reaches ``keep`` of the map's total (ties broken by order)."""
    if not 0 < keep <= 1:
        raise ValueError(f"keep must be in (0, 1], got {keep}")
    maps = np.asarray(maps, dtype=np.float64)
    if maps.ndim < 2 or np.any(maps < 0):
        raise ValueError(f"maps must be nonnegative (..., gh, gw), got shape {maps.shape}")
    flat = maps.reshape(-1, maps.shape[-2] * maps.shape[-1])
    order = np.argsort(-flat, axis=1, kind="stable")
    ranked = np.take_along_axis(flat, order, axis=1)
    before = np.cumsum(ranked, axis=1) - ranked  # mass of the entries ranked above each one
    chosen = before < keep * ranked.sum(axis=1, keepdims=True)
    out = np.zeros_like(chosen)
    np.put_along_axis(out, order, chosen, axis=1)
    return out.reshape(maps.shape)


def upsample(maps: np.ndarray, patch_size: tuple[int, int]) -> np.ndarray:
    """Each patch's value repeated over its p1 x p2 pixels: (..., gh, gw) -> (..., gh p1, gw p2)."""
    p1, p2 = patch_size
    return np.repeat(np.repeat(maps, p1, axis=-2), p2, axis=-1)


def attention_masks(
    attention: np.ndarray, grid: tuple[int, int], patch_size: tuple[int, int], keep: float = KEEP
) -> tuple[np.ndarray, np.ndarray]:
    """(per-head masks (B, heads, H, W), head-average masks (B, H, W)) from one layer's
    attention (B, heads, N, N), thresholded by ``mass_threshold`` and upsampled to pixels."""
    maps = cls_attention_maps(attention, grid)
    heads = upsample(mass_threshold(maps, keep), patch_size)
    average = upsample(mass_threshold(maps.mean(axis=1), keep), patch_size)
    return heads, average


def normalized_cut(features: Any, weights: Any, tau: float = 0.15, eps: float = 1e-5) -> np.ndarray:
    """Bipartition of each image's patches by the normalized cut (module docstring).

    ``features`` (B, n, d) patch features, ``weights`` (B, n) nonnegative (the cls attention);
    returns bool (B, n), True on the side holding more of ``weights``. Computed with the array
    module of ``features`` (NumPy or CuPy) and its ``linalg.eigh``.
    """
    xp = backend.array_module(features)
    f = xp.asarray(features, dtype=xp.float64)
    w = xp.asarray(weights, dtype=xp.float64)
    if f.ndim != 3 or w.shape != f.shape[:2]:
        raise ValueError(f"features must be (B, n, d) and weights (B, n), got {f.shape} and {w.shape}")
    f = f / xp.maximum(xp.linalg.norm(f, axis=-1, keepdims=True), 1e-12)
    W = xp.where(f @ f.transpose(0, 2, 1) >= tau, 1.0, eps)
    d_isqrt = 1 / xp.sqrt(W.sum(axis=-1))
    L = xp.eye(f.shape[1]) - d_isqrt[:, :, None] * W * d_isqrt[:, None, :]
    _, vecs = xp.linalg.eigh(L)
    x = vecs[:, :, 1] * d_isqrt
    side = x > x.mean(axis=1, keepdims=True)
    inside = (w * side).sum(axis=1) >= (w * ~side).sum(axis=1)
    return backend.to_numpy(xp.where(inside[:, None], side, ~side))


def iou(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Intersection over union per image, (B,), of boolean masks (B, H, W); 1 where both are empty."""
    pred, truth = np.asarray(pred), np.asarray(truth)
    if pred.shape != truth.shape or pred.ndim != 3:
        raise ValueError(f"pred and truth must both be (B, H, W), got {pred.shape} and {truth.shape}")
    if pred.dtype != np.bool_ or truth.dtype != np.bool_:
        raise ValueError(f"pred and truth must be boolean, got {pred.dtype} and {truth.dtype}")
    inter = (pred & truth).sum(axis=(1, 2))
    union = (pred | truth).sum(axis=(1, 2))
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


def head_ious(heads: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """IoU of every head's mask, (B, heads), from masks (B, heads, H, W) and the truth (B, H, W);
    the best head is the argmax of its mean over the images (chosen with the truth: an oracle)."""
    heads = np.asarray(heads)
    if heads.ndim != 4:
        raise ValueError(f"heads must be (B, heads, H, W), got {heads.shape}")
    return np.stack([iou(heads[:, k], truth) for k in range(heads.shape[1])], axis=1)


def centered_box(truth: np.ndarray) -> np.ndarray:
    """The baseline: for every image the same box, of the mean bounding-box height and width of
    the true masks (B, H, W), centred in the frame; bool (B, H, W)."""
    truth = np.asarray(truth, dtype=bool)
    if truth.ndim != 3:
        raise ValueError(f"truth must be (B, H, W), got {truth.shape}")
    _, H, W = truth.shape
    sizes = []
    for axis in (2, 1):  # rows occupied, columns occupied
        any_ = truth.any(axis=axis)
        first, last = any_.argmax(axis=1), any_.shape[1] - 1 - any_[:, ::-1].argmax(axis=1)
        sizes.append(np.where(any_.any(axis=1), last - first + 1, 0).mean())
    h, w = (round(s) for s in sizes)
    box = np.zeros((H, W), dtype=bool)
    box[(H - h) // 2 : (H - h) // 2 + h, (W - w) // 2 : (W - w) // 2 + w] = True
    return np.broadcast_to(box, truth.shape).copy()


def patch_coverage(truth: np.ndarray, patch_size: tuple[int, int]) -> np.ndarray:
    """The share of each patch's pixels inside the true mask, (B, gh, gw) in [0, 1]."""
    truth = np.asarray(truth, dtype=bool)
    if truth.ndim != 3:
        raise ValueError(f"truth must be (B, H, W), got {truth.shape}")
    B, H, W = truth.shape
    p1, p2 = patch_size
    if H % p1 or W % p2:
        raise ValueError(f"masks of {H}x{W} are not divisible into {p1}x{p2} patches")
    return truth.reshape(B, H // p1, p1, W // p2, p2).mean(axis=(2, 4))


def best_patch_masks(truth: np.ndarray, patch_size: tuple[int, int]) -> np.ndarray:
    """Per image, the patch-level mask (whole patches, bool (B, H, W)) with the highest IoU with
    ``truth``: the ceiling of any segmenter that works patch by patch.

    With c_p the coverage of patch p (``patch_coverage``) and P = p1 p2 pixels a patch, a set S
    of patches has IoU(S) = sum_S c_p P / (|T| + sum_S (1 - c_p) P); it is at least lambda iff
    sum_S (c_p (1 + lambda) - lambda) P >= lambda |T|, best met by the patches with
    c_p > lambda / (1 + lambda). So the optimum is a set of the most covered patches: the best of
    the prefixes of the patches sorted by decreasing coverage.
    """
    cover = patch_coverage(truth, patch_size)
    B, gh, gw = cover.shape
    flat = cover.reshape(B, -1)
    order = np.argsort(-flat, axis=1, kind="stable")
    ranked = np.take_along_axis(flat, order, axis=1)
    area = np.asarray(truth, dtype=bool).sum(axis=(1, 2))[:, None] / (patch_size[0] * patch_size[1])
    inter = np.cumsum(ranked, axis=1)  # in patches
    union = area + np.cumsum(1 - ranked, axis=1)
    score = np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)
    k = score.argmax(axis=1) + 1  # prefixes of length k >= 1 (an empty truth gets one patch)
    chosen = np.arange(flat.shape[1])[None, :] < k[:, None]
    out = np.zeros_like(chosen)
    np.put_along_axis(out, order, chosen, axis=1)
    return upsample(out.reshape(B, gh, gw), patch_size)


def layer_tokens(model: Module, images: Any) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """One forward (no gradients): per layer, the attention (B, heads, N, N) and the output tokens
    (B, N, dim) of a CRATE ("ista_out") or ViT ("mlp_out") classifier with a cls token."""
    if getattr(model, "cls_token", None) is None:
        raise ValueError(f"{type(model).__name__} has no cls token; attention segmentation needs one")
    _, rec = intermediates(model, images)
    if any(a.ndim != 4 for a in rec["attention"]):
        raise ValueError(f"{type(model).__name__} records no (B, heads, N, N) attention to segment with")
    return rec["attention"], rec["ista_out" if "ista_out" in rec else "mlp_out"]


def _geometry(model: Module) -> tuple[tuple[int, int], tuple[int, int]]:
    """(patch grid (gh, gw), patch size (p1, p2)) of an image model."""
    (H, W), (p1, p2) = model.image_size, model.patch_size
    return (H // p1, W // p2), (p1, p2)


def cut_masks(
    attention: np.ndarray, tokens: np.ndarray, grid: tuple[int, int], patch_size: tuple[int, int]
) -> np.ndarray:
    """MaskCut-style masks (B, H, W) of one layer: the normalized cut of its patch tokens
    (B, N, dim), the side with more of the head-averaged cls attention (B, heads, N, N)."""
    weights = cls_attention_maps(attention, grid).mean(axis=1).reshape(len(tokens), -1)
    side = normalized_cut(tokens[:, 1:], weights)
    return upsample(side.reshape(-1, *grid), patch_size)


def _check_layer(layer: int, depth: int) -> None:
    if not -depth <= layer < depth:
        raise ValueError(f"layer {layer} is out of range for a model of {depth} layers")


def predict_masks(
    model: Module, images: Any, method: str = "attention", layer: int = -1, keep: float = KEEP
) -> np.ndarray:
    """Object masks, bool (B, H, W), of ``images`` from the cls attention of layer ``layer``
    (``method="attention"``: the head average, thresholded to ``keep`` of the mass) or from the
    normalized cut of that layer's patch features (``method="maskcut"``)."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    attention, tokens = layer_tokens(model, images)
    _check_layer(layer, len(attention))
    grid, patch = _geometry(model)
    if method == "attention":
        return attention_masks(attention[layer], grid, patch, keep)[1]
    return cut_masks(attention[layer], tokens[layer], grid, patch)


def layer_scores(model: Module, images: Any, truth: np.ndarray, keep: float = KEEP) -> list[dict[str, Any]]:
    """Mean IoU against the true masks ``truth`` (B, H, W) of ``images`` (B, C, H, W), per layer l
    (0-based): ``{"layer": l, "heads": [one per head], "average": head average, "best": the best
    head (chosen with the truth, an oracle), "maskcut": normalized cut}``, from one forward."""
    truth = np.asarray(truth)
    shape = tuple(images.shape)
    if truth.dtype != np.bool_ or truth.shape != (shape[0], *shape[2:]):
        raise ValueError(
            f"masks must be bool (B, H, W) = {(shape[0], *shape[2:])} like the images {shape}, "
            f"got {truth.dtype} {truth.shape}"
        )
    attention, tokens = layer_tokens(model, images)
    grid, patch = _geometry(model)
    rows = []
    for layer, (attn, tok) in enumerate(zip(attention, tokens, strict=True)):
        heads, average = attention_masks(attn, grid, patch, keep)
        per_head = head_ious(heads, truth).mean(axis=0)
        rows.append(
            {
                "layer": layer,
                "heads": [float(v) for v in per_head],
                "average": float(iou(average, truth).mean()),
                "best": float(per_head.max()),
                "maskcut": float(iou(cut_masks(attn, tok, grid, patch), truth).mean()),
            }
        )
    return rows


def references(truth: np.ndarray, patch_size: tuple[int, int]) -> dict[str, float]:
    """The floor and the ceiling of ``layer_scores``: mean IoU of the centred box of the mean object
    size ("floor") and of the best mask made of whole patches ("ceiling", ``best_patch_masks``)."""
    return {
        "floor": float(iou(centered_box(truth), truth).mean()),
        "ceiling": float(iou(best_patch_masks(truth, patch_size), truth).mean()),
    }


def format_table(rows: list[dict[str, Any]], refs: dict[str, float], title: str = "") -> str:
    """``layer_scores`` rows as text (layers numbered from 1), then the floor and the ceiling."""
    lines = [title] if title else []
    lines.append(f"{'layer':>5s} {'average':>8s} {'best':>6s} {'maskcut':>8s}   per head")
    for r in rows:
        heads = " ".join(f"{v:.3f}" for v in r["heads"])
        lines.append(
            f"{r['layer'] + 1:5d} {r['average']:8.3f} {r['best']:6.3f} {r['maskcut']:8.3f}   {heads}"
        )
    lines.append(
        f"floor (centred box of the mean object size) {refs['floor']:.3f}; "
        f"ceiling (best mask of whole patches) {refs['ceiling']:.3f}"
    )
    return "\n".join(lines)
