"""Plots: per-layer compression and sparsity curves, training curves, attention overlays,
masked-autoencoder reconstructions and an autoencoder's mirrored per-layer curves.

Every function draws on a bare ``matplotlib.figure.Figure`` (rendered by Agg; no pyplot, so no
display and no global backend state), writes one PNG to ``path`` (creating its folder) and
returns the path.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from whitebox.segment import cls_attention_maps, upsample

# cls_attention_maps (defined in whitebox.segment) makes the maps plot_attention draws.
__all__ = ["cls_attention_maps", "membership_maps", "plot_attention", "plot_layerwise", "plot_training"]


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return path


def plot_layerwise(
    results: Mapping[str, Sequence[Mapping[str, Any]]],
    path: str | Path,
    title: str = "",
    rc_lim: tuple[float | None, float | None] | None = None,
) -> Path:
    """Two panels against the layer index, one line per model: R^c of the tokens entering each
    layer's attention, and the nonzero fraction ||Z||_0 / (dN) of each layer's ISTA (or MLP) output.

    ``results`` maps a label to the list ``whitebox.measure.layerwise_compression_sparsity`` returns.
    ``rc_lim`` (bottom, top) fixes the R^c axis (None in either place: automatic), e.g. (0, None)
    so that a small relative change is drawn as small.
    """
    fig = Figure(figsize=(10, 3.8), layout="constrained")
    ax_c, ax_s = fig.subplots(1, 2)
    for label, rows in results.items():
        layers = [r["layer"] + 1 for r in rows]
        ax_c.plot(layers, [r["compression"] for r in rows], marker="o", label=label)
        ax_s.plot(layers, [r["sparsity"] for r in rows], marker="o", label=label)
    ax_c.set(
        xlabel="layer", ylabel=r"$R^c(Z^\ell; U^\ell_{[K]})$", title="compression (lower = more compressed)"
    )
    ax_s.set(xlabel="layer", ylabel=r"$\|Z^{\ell+1}\|_0 \,/\, (dN)$", title="sparsity (lower = sparser)")
    ax_s.set_ylim(0, 1.05)
    if rc_lim is not None:
        ax_c.set_ylim(*rc_lim)
    for ax in (ax_c, ax_s):
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.legend()
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def plot_layerwise_epochs(
    curves: Mapping[int, Mapping[str, Sequence[Mapping[str, Any]]]], path: str | Path, title: str = ""
) -> Path:
    """The paper's figure over training: R^c and the nonzero fraction against the layer index, one
    curve per epoch (colour from light = initialization to dark = last epoch), held-out inputs
    solid and training inputs dashed.

    ``curves`` maps epochs trained (0 = init) to {"held-out": rows, "train": rows} (either may be
    missing), rows as ``whitebox.measure.layerwise_compression_sparsity`` returns.
    """
    fig = Figure(figsize=(10, 3.8), layout="constrained")
    ax_c, ax_s = fig.subplots(1, 2)
    epochs = sorted(curves)
    cmap = matplotlib.colormaps["viridis_r"]
    for j, epoch in enumerate(epochs):
        color = cmap(0.15 + 0.85 * j / max(1, len(epochs) - 1))
        for split, style in (("held-out", "-"), ("train", "--")):
            rows = curves[epoch].get(split)
            if not rows:
                continue
            layers = [r["layer"] + 1 for r in rows]
            label = (f"epoch {epoch}" if epoch else "init") if split == "held-out" else None
            for ax, key in ((ax_c, "compression"), (ax_s, "sparsity")):
                ax.plot(layers, [r[key] for r in rows], style, marker="o", ms=3, color=color, label=label)
    ax_c.set(
        xlabel="layer", ylabel=r"$R^c(Z^\ell; U^\ell_{[K]})$", title="compression (lower = more compressed)"
    )
    ax_s.set(xlabel="layer", ylabel=r"$\|Z^{\ell+1}\|_0 \,/\, (dN)$", title="sparsity (lower = sparser)")
    for ax in (ax_c, ax_s):
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    ax_s.legend(fontsize=7, title="solid held out, dashed train", title_fontsize=7)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def plot_training(records: Sequence[Mapping[str, Any]], path: str | Path, title: str = "") -> Path:
    """Training loss and (train / eval) accuracy per epoch, from ``metrics.jsonl`` records.

    The train curve is the objective as optimized (with label smoothing and augmentation, where the
    task uses them, averaged over the epoch); the held-out one is the plain cross-entropy.
    """
    epochs = [r["epoch"] + 1 for r in records]
    fig = Figure(figsize=(10, 3.5), layout="constrained")
    ax_l, ax_a = fig.subplots(1, 2)
    ax_l.plot(epochs, [r["train_loss"] for r in records], marker="o", label="train (the objective)")
    if all("eval_loss" in r for r in records):
        ax_l.plot(epochs, [r["eval_loss"] for r in records], marker="o", label="held out (plain)")
    ax_l.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    for key, label in (("train_acc", "train"), ("eval_acc", "held out")):
        if all(key in r for r in records):
            ax_a.plot(epochs, [r[key] for r in records], marker="o", label=label)
    ax_a.set(xlabel="epoch", ylabel="accuracy", title="accuracy")
    for ax in (ax_l, ax_a):
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def _display(image: np.ndarray) -> tuple[np.ndarray, str | None]:
    """An image (C, H, W), any range, as something ``imshow`` takes, with its colormap."""
    img = np.asarray(image, dtype=np.float64)
    img = (img - img.min()) / max(img.max() - img.min(), 1e-12)
    return (img[0], "gray") if img.shape[0] == 1 else (img.transpose(1, 2, 0), None)


def membership_maps(pi: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """ToST's stand-in for attention maps: each patch's membership Pi_k in head k, (B, heads, gh, gw),
    from TSSA's memberships (B, heads, N) (token 0, the cls token, left out). TSSA has no N x N
    attention matrix; Pi is the only per-token weighting it computes."""
    B, H = pi.shape[:2]
    return pi[:, :, 1:].reshape(B, H, *grid)


def plot_attention(
    images: np.ndarray,
    maps: np.ndarray,
    path: str | Path,
    title: str = "",
    labels: Sequence[str] | None = None,
) -> Path:
    """Rows = images, columns = the image, then one overlay per head.

    ``images`` (B, C, H, W), ``maps`` (B, heads, gh, gw) as ``cls_attention_maps`` gives; each
    map is upsampled to the image by repeating every patch's value over its pixels and drawn
    over the image (per-map color scale).
    """
    B, K, gh, gw = maps.shape
    H, W = images.shape[-2:]
    fig = Figure(figsize=(1.6 * (K + 1), 1.6 * B + 0.4), layout="constrained")
    axes = fig.subplots(B, K + 1, squeeze=False)
    for b in range(B):
        img, cmap = _display(images[b])
        axes[b, 0].imshow(img, cmap=cmap)
        axes[b, 0].set_ylabel(labels[b] if labels is not None else "", fontsize=8)
        for k in range(K):
            up = upsample(maps[b, k], (H // gh, W // gw))
            ax = axes[b, k + 1]
            ax.imshow(img, cmap=cmap)
            ax.imshow(up, cmap="inferno", alpha=0.6)
            if b == 0:
                ax.set_title(f"head {k + 1}", fontsize=8)
    axes[0, 0].set_title("image", fontsize=8)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def plot_reconstructions(
    originals: np.ndarray,
    masked: np.ndarray,
    reconstructions: Mapping[str, np.ndarray],
    path: str | Path,
    title: str = "",
) -> Path:
    """Rows = images; columns = the original, the masked input, then one reconstruction per model.

    All arrays (B, C, H, W), as ``MaskedAutoencoder.reconstruct`` gives them; each row is drawn on
    its original's intensity range (values outside it clipped), so the columns compare directly.
    """
    columns = {"original": originals, "masked input": masked, **reconstructions}
    B = len(originals)
    fig = Figure(figsize=(1.5 * len(columns), 1.5 * B + 0.4), layout="constrained")
    axes = fig.subplots(B, len(columns), squeeze=False)
    for b in range(B):
        lo, hi = float(originals[b].min()), float(originals[b].max())
        for c, (name, images) in enumerate(columns.items()):
            img = (np.clip(np.asarray(images[b], dtype=np.float64), lo, hi) - lo) / max(hi - lo, 1e-12)
            ax = axes[b, c]
            ax.imshow(img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if b == 0:
                ax.set_title(name, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def plot_mirrored(rows: Sequence[Mapping[str, Any]], path: str | Path, title: str = "") -> Path:
    """Three panels against the encoder layer l, from ``whitebox.invertibility.mirrored_layers``:
    R^c of encoder layer l and of its mirror, decoder layer D - 1 - l; the nonzero fraction of the
    encoder layer's output and of the decoder layer's input; and the relative distance of the
    decoder layer's output to the encoder layer's input (with its distance to the other layers)."""
    layers = [r["layer"] + 1 for r in rows]
    fig = Figure(figsize=(13, 3.6), layout="constrained")
    ax_c, ax_s, ax_d = fig.subplots(1, 3)
    ax_c.plot(layers, [r["enc_compression"] for r in rows], marker="o", label="encoder layer l")
    ax_c.plot(layers, [r["dec_compression"] for r in rows], marker="s", label="decoder layer D-l+1")
    ax_s.plot(layers, [r["enc_sparsity"] for r in rows], marker="o", label="encoder output")
    ax_s.plot(layers, [r["dec_sparsity"] for r in rows], marker="s", label="decoder input")
    ax_d.plot(layers, [r["distance"] for r in rows], marker="o", color="k", label="to its mirror")
    others = [[d for m, d in enumerate(r["distance_to"]) if m != r["layer"]] for r in rows]
    if any(others):
        ax_d.plot(layers, [min(o) for o in others], ls="--", marker=".", label="to the nearest other layer")
    ax_c.set(xlabel="encoder layer l", ylabel=r"$R^c$", title="compression (mirrored)")
    ax_s.set(xlabel="encoder layer l", ylabel=r"$\|Z\|_0 / (dN)$", title="nonzero fraction (mirrored)")
    ax_s.set_ylim(0, 1.05)
    ax_d.set(
        xlabel="encoder layer l",
        ylabel=r"$\|X - Z^\ell\|_F / \|Z^\ell\|_F$",
        title="decoder output vs encoder input",
    )
    for ax in (ax_c, ax_s, ax_d):
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return _save(fig, path)
