"""Image classification: CRATE, ViT, CRATE-alpha or ToST on a named dataset or your own images
(``ImageConfig``, task "image").

``image_config`` resolves a run: the preset (a key of ``whitebox.crate.PRESETS``), with the image
size, channels and number of classes of the dataset and any ``overrides`` (dim, depth, heads,
patch_size, ...), becomes ``model_args``; warmup defaults to one epoch of steps. Training minimizes
the label-smoothed cross-entropy

    L = -1/B sum_i sum_c q_ic log softmax(f(x_i))_c,   q_i = (1 - s) onehot(y_i) + s / C,

on the train split, with random crops (zero padding 2 for 28 px images, 4 for 32 px) and, where
the dataset allows it (``flip_ok``), horizontal flips; held-out accuracy is measured on the test
split after every epoch.

Your own images (``data`` the path of an .npz file or an image folder) are read by
``whitebox.data.user_images`` with the config's ``image_size`` and ``val_fraction`` and a fixed
split seed; a run on them records the source's SHA-256, class names and normalization in
``data.json`` (``whitebox.train.data_source``), and reading them again for a trained run checks
that the bytes are the ones it was trained on.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

import whitebox.functional as F
from whitebox import backend
from whitebox.crate import CRATE, PRESETS, CRATEAlpha, ToST, ViT
from whitebox.data import DataLoader, ImageDataset, RandomCrop, RandomHorizontalFlip, load_dataset
from whitebox.data.augment import Augment, Compose
from whitebox.data.datasets import available_datasets
from whitebox.distributed import Communicator
from whitebox.nn import Module
from whitebox.tensor import Tensor, no_grad
from whitebox.train import data_source
from whitebox.train.config import ConfigError, ImageConfig, given_settings, validate
from whitebox.train.task import Task, open_run

MODELS = {"crate": CRATE, "vit": ViT, "crate-alpha": CRATEAlpha, "tost": ToST}
ARCH_NAMES = {"crate": "CRATE", "vit": "ViT", "crate-alpha": "CRATE-alpha", "tost": "ToST"}
#: Zero padding of the random crop, by image side.
CROP_PADDING = {28: 2, 32: 4}


def arch(model: str) -> str:
    """The ARCHITECTURES key of the CLI's model name ``model`` ('crate-alpha' -> 'crate_alpha')."""
    return model.replace("-", "_")


def preset_names(model: str) -> list[str]:
    """The presets of architecture ``model``, without the architecture prefix ('crate_', 'tost_', ...)."""
    prefix = arch(model) + "_"
    return [name.removeprefix(prefix) for name, cfg in PRESETS.items() if cfg["arch"] == arch(model)]


def resolve_preset(model: str, preset: str) -> str:
    """The PRESETS key for ``preset`` ('mnist_tiny' or 'crate_mnist_tiny') of architecture ``model``."""
    if model not in MODELS:
        raise ConfigError(f"unknown model {model!r}; choose one of {', '.join(MODELS)}")
    for name in (f"{arch(model)}_{preset}", preset):
        if name in PRESETS and PRESETS[name]["arch"] == arch(model):
            return name
    raise ConfigError(f"unknown {model} preset {preset!r}; choose one of {', '.join(preset_names(model))}")


def model_args(model: str, preset: str, dataset: ImageDataset, **overrides: Any) -> dict[str, Any]:
    """Constructor arguments: the preset's, the dataset's shape and classes, then ``overrides``."""
    args = {k: v for k, v in PRESETS[resolve_preset(model, preset)].items() if k != "arch"}
    C, H, W = dataset.image_shape
    if H != W:
        raise ConfigError(f"dataset {dataset.name!r} has {H}x{W} images; only square images are supported")
    args.update(image_size=H, channels=C, num_classes=dataset.num_classes)
    args.update({k: v for k, v in overrides.items() if v is not None})
    if args["image_size"] % args["patch_size"]:
        raise ConfigError(
            f"image size {args['image_size']} (dataset {dataset.name!r}) is not divisible by the patch size "
            f"{args['patch_size']}; pass --patch-size with a divisor of {args['image_size']}"
        )
    heads, dim = args["heads"], args["dim"]
    if args.get("dim_head") is None and dim % heads:
        raise ConfigError(f"dim {dim} is not divisible by {heads} heads; pass --dim-head")
    return args


def image_config(
    model: str = "crate",
    preset: str = "mnist_tiny",
    data: str = "mnist5k",
    overrides: dict[str, Any] | None = None,
    **settings: Any,
) -> ImageConfig:
    """A complete, validated run config; ``settings`` are ``ImageConfig`` fields (None: default),
    ``overrides`` constructor arguments of the model. ``warmup_steps`` defaults to one epoch."""
    settings = given_settings(ImageConfig, "image_config", settings)
    if "lr" in settings and "min_lr" not in settings:  # the default floor never exceeds an explicit lr
        settings["min_lr"] = min(ImageConfig.min_lr, settings["lr"])
    data = data_source.resolve(data, available_datasets(), "dataset")
    config = validate(ImageConfig(model=model, preset=resolve_preset(model, preset), data=data, **settings))
    backend.check_device(config.device)
    if data_source.is_builtin(data, available_datasets()):
        given = sorted({"image_size", "val_fraction"} & set(settings))
        if given:
            flags = ", ".join("--" + name.replace("_", "-") for name in given)
            raise ConfigError(
                f"{flags}: for your own images (--data PATH), not the built-in dataset {data!r}"
            )
        train = load_dataset(data, "train")
    else:
        train = data_source.read_own_images(config).train
    config.model_args = model_args(model, preset, train, **(overrides or {}))
    if "warmup_steps" not in settings:
        config.warmup_steps = -(-len(train) // config.batch_size)
    return validate(config)


def augmentation(dataset: ImageDataset) -> Augment:
    """Random crop with zero padding (28 / 32 px images) and, if ``flip_ok``, a horizontal flip."""
    _, H, _ = dataset.image_shape
    steps: list[Augment] = [RandomCrop(H, padding=CROP_PADDING.get(H, max(1, H // 8)))]
    if dataset.flip_ok:
        steps.append(RandomHorizontalFlip(0.5))
    return Compose(steps)


def accuracy(
    model: Module, loader: DataLoader, label_smoothing: float = 0.0, comm: Communicator | None = None
) -> dict[str, float]:
    """Top-1 accuracy and mean cross-entropy of ``model`` over ``loader``, in eval mode; with
    ``comm``, over the loaders of every rank (the counts and sums are added up over the ranks)."""
    correct, loss, n = 0, 0.0, 0
    with no_grad(), model.evaluating():
        for images, labels in loader:
            logits = model(images)
            loss += F.cross_entropy(logits, labels, label_smoothing=label_smoothing).item() * len(labels)
            correct += int((logits.data.argmax(-1) == labels).sum())
            n += len(labels)
    if comm is not None:
        correct, loss, n = comm.allreduce_sum([correct, loss, n])
    return {"acc": correct / n, "loss": loss / n}


def evenly_spaced(dataset: ImageDataset, n: int) -> ImageDataset:
    """``n`` images of ``dataset`` spread evenly over it (every class appears even where it is
    sorted by class, as mnist5k's test split is), with their labels and (if any) true masks."""
    idx = np.unique(np.linspace(0, len(dataset) - 1, min(n, len(dataset))).round().astype(int))
    masks = None if dataset.masks is None else dataset.masks[idx]
    return dataclasses.replace(dataset, images=dataset.images[idx], labels=dataset.labels[idx], masks=masks)


class ImageClassification(data_source.ImageSource, Task):
    """The "image" task: label-smoothed cross-entropy, held-out accuracy (module docstring)."""

    config: ImageConfig

    def __init__(self, config: ImageConfig, run_dir: Path, comm: Communicator | None = None) -> None:
        super().__init__(config, run_dir, comm)
        train = self.dataset("train")
        self.loader = DataLoader(  # this rank's share of each epoch
            train,
            self.comm.local_batch_size(config.batch_size),
            shuffle=True,
            seed=config.seed,
            augment=augmentation(train) if config.augment else None,
            device=config.device,
            rank=self.comm.rank,
            world_size=self.comm.world_size,
        )
        self.steps_per_epoch = len(self.loader)
        self._test: DataLoader | None = None

    def prepare(self, resume: bool) -> None:
        """Record your own images' source, class names and statistics (``data.json``)."""
        self.record_images(resume)

    def build_model(self) -> Module:
        return MODELS[self.config.model](**self.config.model_args)

    def batches(self, epoch: int) -> DataLoader:
        self.loader.set_epoch(epoch)
        return self.loader

    def loss(self, model: Module, batch: tuple[Tensor, Any]) -> tuple[Tensor, dict[str, float]]:
        images, labels = batch
        logits = model(images)
        acc = float((logits.data.argmax(-1) == labels).mean())
        return F.cross_entropy(logits, labels, label_smoothing=self.config.label_smoothing), {"acc": acc}

    def test_loader(self, batch_size: int = 500) -> DataLoader:
        """This rank's share of the test split (every ``world_size``-th image), in order, normalized
        with the train statistics."""
        if self._test is None:
            test = self.dataset("test")
            if self.comm.world_size > 1:
                mine = slice(self.comm.rank, None, self.comm.world_size)
                test = dataclasses.replace(test, images=test.images[mine], labels=test.labels[mine])
            self._test = DataLoader(test, batch_size, shuffle=False, device=self.config.device)
        return self._test

    def evaluate(self, model: Module, limit: int | None = None) -> dict[str, float]:
        """Test-split accuracy and cross-entropy over every rank (``limit`` is ignored: the whole split)."""
        return accuracy(model, self.test_loader(), comm=self.comm)

    def heldout_subset(self, n: int) -> ImageDataset:
        """``n`` test images spread evenly over the test split (every class appears even where the
        split is sorted by class, as mnist5k's is), with their labels and (if any) true masks."""
        return evenly_spaced(self.dataset("test"), n)

    def heldout_images(self, n: int) -> tuple[Tensor, np.ndarray, np.ndarray]:
        """The images of ``heldout_subset(n)``: (normalized Tensor, raw uint8 (n, C, H, W), labels)."""
        subset = self.heldout_subset(n)
        loader = DataLoader(subset, len(subset), shuffle=False, device=self.config.device)
        images, labels = next(iter(loader))
        return images, subset.images, backend.to_numpy(labels)

    def heldout_inputs(self, n: int) -> Tensor:
        return self.heldout_images(n)[0]

    def describe(self, n: int) -> str:
        c = self.config
        return f"{ARCH_NAMES[c.model]} ({c.preset}) {self.run_dir.name}, {n} held-out {c.data} images"

    def summary(self, result: dict[str, Any]) -> str:
        c = self.config
        return (
            f"{self.run_dir}: {c.model} {c.preset} on {c.data}, {result['params']:,} parameters, "
            f"test accuracy {result['eval_acc']:.4f} after {c.epochs} epochs ({result['seconds']:.0f} s)"
        )


def load_run(run_dir: Path) -> tuple[Module, ImageConfig]:
    """(model with the last checkpoint's weights, in eval mode; config) of an image run."""
    task, model = open_run(run_dir)
    if not isinstance(task, ImageClassification):
        raise ConfigError(f"{run_dir} is a {task.config.task} run, not an image run")
    return model, task.config
