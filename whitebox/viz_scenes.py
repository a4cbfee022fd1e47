"""Figures of scenes with object masks and of attention segmentations (Agg, no pyplot; each
function writes one PNG to ``path`` and returns the path, like ``whitebox.viz``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from whitebox.viz import _display, _save


def _bare(axes: np.ndarray) -> None:
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])


def plot_scenes(
    images: np.ndarray,
    masks: np.ndarray,
    path: str | Path,
    labels: Sequence[str] | None = None,
    title: str = "",
) -> Path:
    """Two rows: the scenes (B, C, H, W) with their labels, and the true masks (B, H, W) drawn
    over the dimmed scene."""
    B = len(images)
    if masks.shape != (B, *images.shape[-2:]):
        raise ValueError(f"masks must be (B, H, W) = {(B, *images.shape[-2:])}, got {masks.shape}")
    fig = Figure(figsize=(1.5 * B, 3.2), layout="constrained")
    axes = fig.subplots(2, B, squeeze=False)
    for b in range(B):
        img, cmap = _display(images[b])
        axes[0, b].imshow(img, cmap=cmap)
        axes[0, b].set_title(labels[b] if labels is not None else "", fontsize=8)
        axes[1, b].imshow(img, cmap=cmap, alpha=0.5)
        axes[1, b].imshow(np.ma.masked_where(~masks[b], masks[b]), cmap="autumn", alpha=0.7, vmin=0, vmax=1)
    axes[0, 0].set_ylabel("scene", fontsize=8)
    axes[1, 0].set_ylabel("true mask", fontsize=8)
    _bare(axes)
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def plot_segmentation(
    images: np.ndarray,
    truth: np.ndarray,
    pred: np.ndarray,
    head_maps: np.ndarray,
    path: str | Path,
    *,
    title: str = "",
) -> Path:
    """Rows = images; columns: the image, the true mask, the predicted mask, then the cls attention
    of each head (``head_maps`` (B, heads, H, W) at pixel resolution, per-map color scale)."""
    B, K = head_maps.shape[:2]
    if truth.shape != pred.shape or truth.shape != (B, *images.shape[-2:]):
        raise ValueError(
            f"truth and pred must be (B, H, W) like the images, got {truth.shape} and {pred.shape}"
        )
    fig = Figure(figsize=(1.5 * (K + 3), 1.5 * B + 0.4), layout="constrained")
    axes = fig.subplots(B, K + 3, squeeze=False)
    for b in range(B):
        img, cmap = _display(images[b])
        axes[b, 0].imshow(img, cmap=cmap)
        axes[b, 1].imshow(truth[b], cmap="gray", vmin=0, vmax=1)
        axes[b, 2].imshow(pred[b], cmap="gray", vmin=0, vmax=1)
        for k in range(K):
            axes[b, k + 3].imshow(head_maps[b, k], cmap="inferno")
    for j, name in enumerate(["image", "true mask", "predicted", *(f"head {k + 1}" for k in range(K))]):
        axes[0, j].set_title(name, fontsize=8)
    _bare(axes)
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def plot_layer_ious(
    results: dict[str, list[dict[str, Any]]], refs: dict[str, float], path: str | Path, title: str = ""
) -> Path:
    """Mean IoU against the layer (from 1), one panel per method (head average, best head,
    normalized cut), one line per model; ``results`` maps a label to ``segment.layer_scores`` rows,
    ``refs`` holds the floor and the ceiling (``segment.references``), drawn as dashed lines."""
    fig = Figure(figsize=(11, 3.4), layout="constrained")
    axes = fig.subplots(1, 3, sharey=True)
    panels = {"average": "head average", "best": "best head", "maskcut": "normalized cut"}
    for ax, (key, name) in zip(axes, panels.items(), strict=True):
        for label, rows in results.items():
            ax.plot([r["layer"] + 1 for r in rows], [r[key] for r in rows], marker="o", label=label)
        ax.axhline(refs["floor"], color="gray", ls="--", lw=1, label="floor (centred box)")
        ax.axhline(refs["ceiling"], color="black", ls=":", lw=1, label="ceiling (best patch mask)")
        ax.set(xlabel="layer", title=name)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("mean IoU")
    axes[0].legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path)
