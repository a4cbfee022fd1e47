"""The image classification task: CRATE or ViT on a named dataset, trained with ``loop.fit``.

A run is described by one flat config dict (saved as ``run_dir/config.json``)::

    task="image", model="crate"|"vit", preset (a key of whitebox.crate.PRESETS), data (a dataset name),
    model_args (the constructor arguments actually used), epochs, batch_size, lr, min_lr,
    optimizer="adamw"|"lion", weight_decay, warmup (epochs), label_smoothing, clip_norm, augment,
    seed, device

``image_config`` fills in the defaults and resolves the model: the preset, with the image size,
channels and number of classes of the dataset and any ``overrides`` (dim, depth, heads,
patch_size, ...). Training minimizes the label-smoothed cross-entropy

    L = -1/B sum_i sum_c q_ic log softmax(f(x_i))_c,   q_i = (1 - s) onehot(y_i) + s / C,

on the train split, with random crops (zero padding 2 for 28 px images, 4 for 32 px) and, where
the dataset allows it (``flip_ok``), horizontal flips; held-out accuracy is measured on the test
split after every epoch.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

import whitebox.functional as F
from whitebox import backend
from whitebox.crate import CRATE, PRESETS, PatchClassifier, ViT
from whitebox.data import DataLoader, ImageDataset, RandomCrop, RandomHorizontalFlip, load_dataset
from whitebox.data.augment import Augment, Compose
from whitebox.optim import AdamW, Lion
from whitebox.tensor import Tensor, no_grad
from whitebox.train.loop import fit, load_checkpoint, load_config

MODELS = {"crate": CRATE, "vit": ViT}
OPTIMIZERS = ("adamw", "lion")
#: Zero padding of the random crop, by image side.
CROP_PADDING = {28: 2, 32: 4}

DEFAULTS: dict[str, Any] = {
    "epochs": 10,
    "batch_size": 128,
    "lr": 1e-3,
    "min_lr": 1e-5,
    "optimizer": "adamw",
    "weight_decay": 0.05,
    "warmup": 1.0,
    "label_smoothing": 0.1,
    "clip_norm": 1.0,
    "augment": True,
    "seed": 0,
    "device": "cpu",
}


def preset_names(model: str) -> list[str]:
    """The presets of architecture ``model``, without the 'crate_' / 'vit_' prefix."""
    return [name.split("_", 1)[1] for name, cfg in PRESETS.items() if cfg["arch"] == model]


def resolve_preset(model: str, preset: str) -> str:
    """The PRESETS key for ``preset`` ('mnist_tiny' or 'crate_mnist_tiny') of architecture ``model``."""
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}; choose one of {', '.join(MODELS)}")
    for name in (f"{model}_{preset}", preset):
        if name in PRESETS and PRESETS[name]["arch"] == model:
            return name
    raise ValueError(f"unknown {model} preset {preset!r}; choose one of {', '.join(preset_names(model))}")


def model_args(model: str, preset: str, dataset: ImageDataset, **overrides: Any) -> dict[str, Any]:
    """Constructor arguments: the preset's, the dataset's shape and classes, then ``overrides``."""
    args = {k: v for k, v in PRESETS[resolve_preset(model, preset)].items() if k != "arch"}
    C, H, W = dataset.image_shape
    if H != W:
        raise ValueError(f"dataset {dataset.name!r} has {H}x{W} images; only square images are supported")
    args.update(image_size=H, channels=C, num_classes=dataset.num_classes)
    args.update({k: v for k, v in overrides.items() if v is not None})
    if args["image_size"] % args["patch_size"]:
        raise ValueError(
            f"image size {args['image_size']} (dataset {dataset.name!r}) is not divisible by the patch size "
            f"{args['patch_size']}; pass --patch-size with a divisor of {args['image_size']}"
        )
    heads, dim = args["heads"], args["dim"]
    if args.get("dim_head") is None and dim % heads:
        raise ValueError(f"dim {dim} is not divisible by {heads} heads; pass --dim-head")
    return args


def image_config(
    model: str, preset: str, data: str, overrides: dict[str, Any] | None = None, **settings: Any
) -> dict[str, Any]:
    """A complete run config (module docstring); ``settings`` override DEFAULTS (None = default)."""
    unknown = set(settings) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"image_config: unknown settings {sorted(unknown)}")
    config = {**DEFAULTS, **{k: v for k, v in settings.items() if v is not None}}
    if config["optimizer"] not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {config['optimizer']!r}; choose one of {', '.join(OPTIMIZERS)}")
    for key in ("epochs", "batch_size"):
        if config[key] < 1:
            raise ValueError(f"{key.replace('_', ' ')} must be >= 1, got {config[key]}")
    backend.check_device(config["device"])
    resolve_preset(model, preset)  # fail fast, before loading the data
    train = load_dataset(data, "train")
    args = model_args(model, preset, train, **(overrides or {}))
    return {
        "task": "image",
        "model": model,
        "preset": resolve_preset(model, preset),
        "data": data,
        "model_args": args,
        **config,
    }


def build_model(config: dict[str, Any]) -> PatchClassifier:
    """A freshly initialized model of ``config`` (seeded by ``config['seed']``), on its device."""
    backend.manual_seed(config["seed"])
    return MODELS[config["model"]](**config["model_args"]).to(config["device"])


def augmentation(dataset: ImageDataset) -> Augment:
    """Random crop with zero padding (28 / 32 px images) and, if ``flip_ok``, a horizontal flip."""
    _, H, _ = dataset.image_shape
    steps: list[Augment] = [RandomCrop(H, padding=CROP_PADDING.get(H, max(1, H // 8)))]
    if dataset.flip_ok:
        steps.append(RandomHorizontalFlip(0.5))
    return Compose(steps)


def _optimizer(config: dict[str, Any], model: PatchClassifier) -> AdamW | Lion:
    cls = AdamW if config["optimizer"] == "adamw" else Lion
    return cls(model.parameters(), lr=config["lr"], weight_decay=config["weight_decay"])


def accuracy(model: PatchClassifier, loader: DataLoader, label_smoothing: float = 0.0) -> dict[str, float]:
    """Top-1 accuracy and mean cross-entropy of ``model`` over ``loader``, in eval mode."""
    was_training = model.training
    model.eval()
    correct, loss, n = 0, 0.0, 0
    with no_grad():
        for images, labels in loader:
            logits = model(images)
            loss += F.cross_entropy(logits, labels, label_smoothing=label_smoothing).item() * len(labels)
            correct += int((logits.data.argmax(-1) == labels).sum())
            n += len(labels)
    model.train(was_training)
    return {"acc": correct / n, "loss": loss / n}


def heldout_loader(config: dict[str, Any], batch_size: int = 500) -> DataLoader:
    """The test split of the run's dataset, in order, normalized with the train statistics."""
    return DataLoader(
        load_dataset(config["data"], "test"), batch_size, shuffle=False, device=config["device"]
    )


def train(
    config: dict[str, Any], run_dir: Path, resume: bool = False, progress: bool = True
) -> dict[str, Any]:
    """Train the run ``config`` into ``run_dir`` (resuming its checkpoint if asked).

    Returns {"history": the per-epoch records, "test_acc", "test_loss", "params", "seconds"}.
    """
    model = build_model(config)
    optimizer = _optimizer(config, model)
    train_set = load_dataset(config["data"], "train")
    loader = DataLoader(
        train_set,
        config["batch_size"],
        shuffle=True,
        seed=config["seed"],
        augment=augmentation(train_set) if config["augment"] else None,
        device=config["device"],
    )
    held_out = heldout_loader(config)
    smoothing = config["label_smoothing"]

    def batches(epoch: int) -> DataLoader:
        loader.set_epoch(epoch)
        return loader

    def loss_fn(model: PatchClassifier, batch: tuple[Tensor, Any]) -> tuple[Tensor, dict[str, float]]:
        images, labels = batch
        logits = model(images)
        acc = float((logits.data.argmax(-1) == labels).mean())
        return F.cross_entropy(logits, labels, label_smoothing=smoothing), {"acc": acc}

    history = fit(
        model,
        optimizer,
        batches,
        loss_fn,
        epochs=config["epochs"],
        run_dir=run_dir,
        config=config,
        base_lr=config["lr"],
        min_lr=config["min_lr"],
        warmup_steps=round(config["warmup"] * len(loader)),
        clip_norm=config["clip_norm"],
        seed=config["seed"],
        steps_per_epoch=len(loader),
        evaluate=lambda m: accuracy(m, held_out),
        resume=resume,
        progress=progress,
    )
    last = history[-1]
    return {
        "history": history,
        "test_acc": last["eval_acc"],
        "test_loss": last["eval_loss"],
        "params": model.num_parameters(),
        "seconds": sum(r["seconds"] for r in history),
    }


def load_run(run_dir: Path) -> tuple[PatchClassifier, dict[str, Any]]:
    """The trained model of an image run (weights of its last checkpoint, eval mode) and its config."""
    config = load_config(run_dir)
    model = MODELS[config["model"]](**config["model_args"])
    model.load_state_dict(load_checkpoint(run_dir)["model"])
    return model.to(config["device"]).eval(), config


def evaluate(run_dir: Path) -> dict[str, float]:
    """Test-split accuracy and cross-entropy of a run's last checkpoint."""
    model, config = load_run(run_dir)
    result = accuracy(model, heldout_loader(config))
    return {"accuracy": result["acc"], "loss": result["loss"]}


def heldout_images(config: dict[str, Any], n: int) -> tuple[Tensor, np.ndarray, np.ndarray]:
    """``n`` test images spread evenly over the run's test split (every class appears even where the
    split is sorted by class, as mnist5k's is): (normalized Tensor, raw uint8 (n, C, H, W), labels)."""
    test = load_dataset(config["data"], "test")
    idx = np.unique(np.linspace(0, len(test) - 1, min(n, len(test))).round().astype(int))
    subset = dataclasses.replace(test, images=test.images[idx], labels=test.labels[idx])
    images, labels = next(iter(DataLoader(subset, len(idx), shuffle=False, device=config["device"])))
    return images, subset.images, backend.to_numpy(labels)
