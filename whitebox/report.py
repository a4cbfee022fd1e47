"""Reports on trained runs: per-layer measurements, attention maps and the figures of the README.

Used by the command line (``measure``, ``attention``, ``segment``, ``figures``, ``demo``) and by
the benchmarks alike. A run is opened with ``whitebox.train.task.open_run`` (any registered task);
what is measured is ``whitebox.measure.layerwise_compression_sparsity`` on the task's held-out
inputs, segmentation is scored by ``whitebox.segment``; what is drawn is ``whitebox.viz``.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np

from whitebox import invertibility, measure, segment, viz
from whitebox.crate import intermediates
from whitebox.data import DataLoader, load_dataset
from whitebox.train import autoencode
from whitebox.train.classify import ARCH_NAMES, ImageClassification, evenly_spaced
from whitebox.train.dino import SelfDistillation
from whitebox.train.run_files import CHECKPOINT, RunError, epoch_checkpoints, load_epoch, read_metrics
from whitebox.train.task import Task, open_run
from whitebox.viz_scenes import plot_segmentation

#: The splits ``measure_epochs`` measures on, as labelled in its output.
SPLITS = ("held-out", "train")

__all__ = [
    "RunError",
    "attention_figures",
    "demo_figures",
    "measure_run",
    "require_checkpoint",
    "run_figures",
    "segment_run",
]


def require_checkpoint(run: Path) -> None:
    """Raise RunError unless ``run`` holds a checkpoint."""
    if not (Path(run) / CHECKPOINT).exists():
        raise RunError(f"{run} has no {CHECKPOINT} yet (no epoch of it has finished)")


def measure_run(run: Path, n: int) -> tuple[list[dict[str, Any]], str]:
    """Per-layer compression and sparsity of a run on ``n`` held-out inputs, and a title for them."""
    require_checkpoint(run)
    task, model = open_run(run)
    inputs = task.heldout_inputs(n)
    return measure.layerwise_compression_sparsity(model, inputs), task.describe(len(inputs))


def train_inputs(task: Task, n: int) -> Any:
    """``n`` training images of an image run, spread evenly over the train split, normalized as in
    training but not augmented (the inputs the weights were fit to)."""
    if not isinstance(task, ImageClassification):
        raise RunError(f"training inputs are taken from image runs; this is a {task.config.task} run")
    train = load_dataset(task.config.data, "train")
    idx = np.unique(np.linspace(0, len(train) - 1, min(n, len(train))).round().astype(int))
    subset = dataclasses.replace(train, images=train.images[idx], labels=train.labels[idx])
    return next(iter(DataLoader(subset, len(idx), shuffle=False, device=task.config.device)))[0]


def measure_epochs(run: Path, n: int) -> tuple[dict[int, dict[str, list[dict[str, Any]]]], str]:
    """Per-layer compression and sparsity at every epoch a ``keep_epochs`` run kept (0 = init), on
    ``n`` held-out inputs and, for image runs, ``n`` training inputs:
    ({epoch: {"held-out": rows, "train": rows}}, title); rows as ``measure_run``'s."""
    kept = epoch_checkpoints(run)
    if not kept:
        raise RunError(f"{run} kept no per-epoch weights (epoch_NNN.npz): train it with --keep-epochs")
    task, model = open_run(run)
    inputs = {"held-out": task.heldout_inputs(n)}
    if isinstance(task, ImageClassification):
        inputs["train"] = train_inputs(task, n)
    curves = {}
    for epoch, path in kept.items():
        model.load_state_dict(load_epoch(path))
        curves[epoch] = {
            split: measure.layerwise_compression_sparsity(model, x) for split, x in inputs.items()
        }
    return curves, task.describe(n)


def attention_figures(run: Path, out: Path, n: int, layers: int, prefix: str = "attention") -> list[Path]:
    """PNG per layer (the last ``layers``): the cls token's attention per head on ``n`` test images
    (for ToST, whose TSSA has no attention matrix, each patch's membership Pi in each head)."""
    require_checkpoint(run)
    task, model = open_run(run)
    if not isinstance(task, ImageClassification):
        raise RunError(f"attention maps are drawn for image runs; {run} is a {task.config.task} run")
    config = task.config
    images, raw, labels = task.heldout_images(n)
    logits, rec = intermediates(model, images)
    names = task.dataset("test").class_names
    grid = tuple(s // p for s, p in zip(model.image_size, model.patch_size, strict=True))
    depth = len(rec["attention"])
    paths = []
    for layer in range(max(0, depth - layers), depth):
        attention = rec["attention"][layer]
        if attention.ndim == 3:  # TSSA's memberships Pi (B, heads, N)
            maps, what = viz.membership_maps(attention, grid), "head memberships"
        else:
            maps, what = viz.cls_attention_maps(attention, grid), "cls attention"
        tags = [f"{names[y]} -> {names[p]}" for y, p in zip(labels, logits.argmax(-1), strict=True)]
        title = f"{ARCH_NAMES[config.model]} {Path(run).name}: {what}, layer {layer + 1}/{depth}"
        paths.append(viz.plot_attention(raw, maps, out / f"{prefix}_layer{layer + 1}.png", title, tags))
    return paths


#: The networks of a DINO run whose attention ``segment_run`` can score.
BACKBONES = ("teacher", "student")


def _segmenter(run: Path, backbone: str | None) -> tuple[Any, Any, Any, str]:
    """(config, test split, classifier with a cls token, name) of an image or DINO run; of a DINO
    run, the teacher's or the student's backbone (``backbone``, None: the teacher)."""
    require_checkpoint(run)
    task, model = open_run(run)
    if isinstance(task, SelfDistillation):
        backbone = backbone or "teacher"
        if backbone not in BACKBONES:
            raise RunError(f"unknown backbone {backbone!r}; choose one of {', '.join(BACKBONES)}")
        classifier = getattr(model, backbone).backbone.model
        c = task.config
        return c, task.dataset("test"), classifier, f"DINO {backbone} {ARCH_NAMES[c.model]} ({c.preset})"
    if not isinstance(task, ImageClassification):
        raise RunError(f"segmentation needs an image or dino run; {run} is a {task.config.task} run")
    if backbone is not None:
        raise RunError(f"{run} is not a DINO run: it has no teacher and student (drop --backbone)")
    c = task.config
    return c, task.dataset("test"), model, f"{ARCH_NAMES[c.model]} ({c.preset})"


def segment_run(
    run: Path,
    n: int,
    method: str = "attention",
    layer: int | None = None,
    out: Path | None = None,
    *,
    shown: int = 6,
    prefix: str = "segment",
    backbone: str | None = None,
) -> dict[str, Any]:
    """Score a run as a segmenter on ``n`` held-out scenes with true masks (``whitebox.segment``).

    An image run is scored by its classifier's attention; a DINO run by its ``backbone``'s (None:
    the teacher, the EMA of the student that the k-NN and the probe read). ``layer`` counts from 1
    (None: the last). Returns ``rows`` (``segment.layer_scores``), ``refs``
    (floor and ceiling), ``title``, ``table`` (the two as text), ``layer`` (0-based), ``method`` and
    ``iou``, the mean IoU of ``method`` in that layer (the head average for attention); with ``out``,
    also ``figure``: out/<prefix>_<method>_layer<L>.png (image, true mask, predicted mask and each
    head's cls attention, on ``shown`` of the scenes).
    """
    if method not in segment.METHODS:
        raise RunError(f"unknown method {method!r}; choose one of {', '.join(segment.METHODS)}")
    config, test, model, name = _segmenter(run, backbone)
    scenes = evenly_spaced(test, n)
    if scenes.masks is None:
        raise RunError(
            f"{run} was trained on {config.data}, which has no true masks; "
            "segment scores runs on scenes-mnist or scenes-fashion"
        )
    if config.model == "tost":
        raise RunError(f"{run} is a ToST run: its TSSA has no attention matrix to segment with")
    name = f"{name} {Path(run).name}"
    depth = config.model_args["depth"]
    layer = depth if layer is None else layer
    if not 1 <= layer <= depth:
        raise RunError(f"layer {layer} is out of range: {run} has {depth} layers (1..{depth})")
    images, _ = next(iter(DataLoader(scenes, len(scenes), shuffle=False, device=config.device)))
    rows = segment.layer_scores(model, images, scenes.masks)
    refs = segment.references(scenes.masks, model.patch_size)
    title = f"{name}: mean IoU per layer on {len(scenes)} held-out {config.data} scenes"
    key = "average" if method == "attention" else "maskcut"
    result = {
        "rows": rows,
        "refs": refs,
        "title": title,
        "table": segment.format_table(rows, refs, title),
        "layer": layer - 1,
        "method": method,
        "iou": rows[layer - 1][key],
    }
    if out is not None:
        k = min(shown, len(scenes))
        pick = np.unique(np.linspace(0, len(scenes) - 1, k).round().astype(int))
        grid = tuple(s // p for s, p in zip(model.image_size, model.patch_size, strict=True))
        attention, _ = segment.layer_tokens(model, images[pick])
        maps = segment.upsample(segment.cls_attention_maps(attention[layer - 1], grid), model.patch_size)
        pred = segment.predict_masks(model, images[pick], method, layer - 1)
        result["figure"] = plot_segmentation(
            scenes.images[pick],
            scenes.masks[pick],
            pred,
            maps,
            Path(out) / f"{prefix}_{method}_layer{layer}.png",
            title=f"{name}: {method}, layer {layer}/{depth}",
        )
    return result


def demo_figures(run: Path, figures: Path, measured: tuple[list[dict[str, Any]], str]) -> list[Path]:
    """demo_training.png, demo_layerwise.png (from ``measured`` = measure_run(run, n)) and
    demo_attention_layer*.png (the last two layers)."""
    rows, title = measured
    return [
        viz.plot_training(read_metrics(run), figures / "demo_training.png", "CRATE on mnist5k"),
        viz.plot_layerwise({"CRATE": rows}, figures / "demo_layerwise.png", title),
        *attention_figures(run, figures, 4, 2, prefix="demo_attention"),
    ]


def run_figures(runs: dict[str, Path], figures: Path, n: int = 500) -> list[Path]:
    """The figures of the demo and Fashion-MNIST runs that exist in ``runs`` (name -> directory)."""
    made: list[Path] = []
    if "demo" in runs:
        made += demo_figures(runs["demo"], figures, measure_run(runs["demo"], n))
    pair = [runs.get("fashion_crate"), runs.get("fashion_vit")]
    if all(pair):
        curves = {name: measure_run(run, n)[0] for name, run in zip(("CRATE", "ViT"), pair, strict=True)}
        made.append(
            viz.plot_layerwise(curves, figures / "fashion_layerwise.png", "Fashion-MNIST, same budget")
        )
        for name, run in zip(("crate", "vit"), pair, strict=True):
            made += attention_figures(run, figures, 4, 1, prefix=f"fashion_{name}_attention")
    return made


def _mae_run(run: Path) -> tuple[autoencode.MaskedAutoencoding, Any]:
    require_checkpoint(run)
    task, model = open_run(run)
    if not isinstance(task, autoencode.MaskedAutoencoding):
        raise RunError(f"{run} is a {task.config.task} run, not a mae run")
    return task, model


def reconstruction_figure(runs: list[Path], out: Path, n: int) -> Path:
    """One PNG: ``n`` test images, masked as the held-out score masks them, and each mae run's
    reconstruction beside the others (all runs on the same dataset and patch size)."""
    opened = [_mae_run(run) for run in runs]
    first = opened[0][0].config
    kind = [(t.config.data, t.config.model_args["patch_size"]) for t, _ in opened]
    if len(set(kind)) > 1:
        shown = ", ".join(f"{run}: {d} patch {p}" for run, (d, p) in zip(runs, kind, strict=True))
        raise RunError(f"reconstruct compares runs on the same data and patch size; got {shown}")
    images, noise, _, _ = opened[0][0].heldout_images(n)
    fills, masked = {}, None
    for run, (task, model) in zip(runs, opened, strict=True):
        masked, fills[f"{autoencode.ARCH_NAMES[task.config.model]} {Path(run).name}"], _ = model.reconstruct(
            images, noise
        )
    title = f"{first.data}: {int(first.mask_ratio * 100)}% of the patches hidden (held-out masks)"
    return viz.plot_reconstructions(images.numpy(), masked, fills, out, title)


def mirrored_run(run: Path, n: int, out: Path) -> tuple[list[dict[str, Any]], str, Path]:
    """A CRATE-MAE run measured in mirrored order (``whitebox.invertibility``) on ``n`` held-out
    images: (rows, title, path of mirrored.png; mirrored.json beside it)."""
    task, model = _mae_run(run)
    if task.config.model != "crate":
        raise RunError(f"mirrored measurements need a CRATE-MAE run; {run} is a {task.config.model} run")
    images = task.heldout_inputs(n)
    rows = invertibility.mirrored_layers(model, images)
    title = task.describe(len(images))
    path = viz.plot_mirrored(rows, Path(out) / "mirrored.png", title)
    path.with_suffix(".json").write_text(json.dumps(rows, indent=1) + "\n")
    return rows, title, path
