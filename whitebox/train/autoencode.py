"""Masked autoencoding of images: CRATE-MAE or its ViT-MAE twin (``MAEConfig``, task "mae").

``mae_config`` resolves a run: the preset (a ``mae_crate_*`` / ``mae_vit_*`` key of
``whitebox.crate.PRESETS``), with the dataset's image size and channels and any ``overrides``
(dim, depth, heads, patch_size, ...), becomes ``model_args``; warmup defaults to one epoch of
steps. Training minimizes the masked-patch loss of ``whitebox.crate.autoencoder``,

    L = sum_{b,i} m_bi mean_j (pred_bij - x_bij)^2 / sum_{b,i} m_bi,   m_bi = 1 for hidden patches,

with a fresh random mask per image and step (drawn from the device RNG, which the loop reseeds
every epoch), on the train split without augmentation. After every epoch the held-out score is
the same loss on the test split with masks fixed once for all (``heldout_noise``), so epochs
and runs (CRATE-MAE and its twin) are compared on identical masks. ``probes`` reads frozen
encoder features with a k-NN vote and a linear probe (``whitebox.features``, as for dino runs).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from whitebox import backend
from whitebox.crate import CRATEMAE, PRESETS, ViTMAE
from whitebox.data import DataLoader, ImageDataset, load_dataset
from whitebox.distributed import Communicator
from whitebox.features import embed_dataset, knn_accuracy, linear_probe
from whitebox.nn import Module
from whitebox.tensor import Tensor, no_grad
from whitebox.train.config import ConfigError, MAEConfig, given_settings, validate
from whitebox.train.task import Task, open_run

MODELS = {"crate": CRATEMAE, "vit": ViTMAE}
ARCH_NAMES = {"crate": "CRATE-MAE", "vit": "ViT-MAE"}
#: Seed of the held-out masks (one noise array per test split).
HELDOUT_SEED = 1234


def resolve_preset(model: str, preset: str) -> str:
    """The PRESETS key for ``preset`` ('mnist_tiny' or 'mae_crate_mnist_tiny') of ``model``."""
    if model not in MODELS:
        raise ConfigError(f"unknown model {model!r} for task mae; choose one of {', '.join(MODELS)}")
    arch = f"mae_{model}"
    for name in (f"{arch}_{preset}", preset):
        if name in PRESETS and PRESETS[name]["arch"] == arch:
            return name
    names = [n.removeprefix(arch + "_") for n, c in PRESETS.items() if c["arch"] == arch]
    raise ConfigError(f"unknown {arch} preset {preset!r}; choose one of {', '.join(names)}")


def mae_config(
    model: str = "crate",
    preset: str = "mnist_tiny",
    data: str = "mnist5k",
    overrides: dict[str, Any] | None = None,
    **settings: Any,
) -> MAEConfig:
    """A complete, validated run config; ``settings`` are ``MAEConfig`` fields (None: default),
    ``overrides`` constructor arguments of the model. ``warmup_steps`` defaults to one epoch."""
    settings = given_settings(MAEConfig, "mae_config", settings)
    config = validate(MAEConfig(model=model, preset=resolve_preset(model, preset), data=data, **settings))
    backend.check_device(config.device)
    train = load_dataset(data, "train")
    args = {k: v for k, v in PRESETS[config.preset].items() if k != "arch"}
    C, H, W = train.image_shape
    args.update(image_size=H if H == W else [H, W], channels=C)
    args.update({k: v for k, v in (overrides or {}).items() if v is not None})
    p = args["patch_size"]
    if H % p or W % p:
        raise ConfigError(f"image size {H}x{W} (dataset {data!r}) is not a multiple of the patch size {p}")
    if args.get("dim_head") is None and args["dim"] % args["heads"]:
        raise ConfigError(f"dim {args['dim']} is not divisible by {args['heads']} heads; pass --dim-head")
    if args["dim"] % 4:
        raise ConfigError(
            f"dim must be a multiple of 4 (the 2-D sine-cosine position code), got {args['dim']}"
        )
    config.model_args = args
    if "warmup_steps" not in settings:
        config.warmup_steps = -(-len(train) // config.batch_size)
    return config


def heldout_noise(n: int, patches: int) -> np.ndarray:
    """The fixed masking noise (n, patches) of the held-out images: ``random_masking`` hides, per
    image, the patches with the largest noise."""
    return np.random.default_rng(HELDOUT_SEED).random((n, patches))


class MaskedAutoencoding(Task):
    """The "mae" task: the masked-patch loss, its held-out value on fixed masks (module docstring)."""

    config: MAEConfig

    def __init__(self, config: MAEConfig, run_dir: Path, comm: Communicator | None = None) -> None:
        super().__init__(config, run_dir, comm)
        self.train_set = load_dataset(config.data, "train")
        self.loader = DataLoader(  # this rank's share of each epoch
            self.train_set,
            self.comm.local_batch_size(config.batch_size),
            shuffle=True,
            seed=config.seed,
            device=config.device,
            rank=self.comm.rank,
            world_size=self.comm.world_size,
        )
        self.steps_per_epoch = len(self.loader)
        self._test: ImageDataset | None = None

    def build_model(self) -> Module:
        c = self.config
        return MODELS[c.model](**c.model_args, mask_ratio=c.mask_ratio, norm_pix_loss=c.norm_pix_loss)

    def batches(self, epoch: int) -> DataLoader:
        self.loader.set_epoch(epoch)
        return self.loader

    def loss(self, model: Module, batch: tuple[Tensor, Any]) -> tuple[Tensor, dict[str, float]]:
        images, _ = batch
        return model(images)[0], {}

    def test_set(self) -> ImageDataset:
        if self._test is None:
            self._test = load_dataset(self.config.data, "test")
        return self._test

    def images(self, dataset: ImageDataset, idx: Any = None) -> Tensor:
        """Normalized images of ``dataset`` (rows ``idx``, default all) on the run's device."""
        subset = (
            dataset
            if idx is None
            else dataclasses.replace(dataset, images=dataset.images[idx], labels=dataset.labels[idx])
        )
        loader = DataLoader(subset, len(subset), shuffle=False, device=self.config.device)
        return next(iter(loader))[0]

    def evaluate(self, model: Module, limit: int | None = None) -> dict[str, float]:
        """Masked-patch MSE on the first ``limit`` test images (None: all), on the fixed masks; each
        rank scores every ``world_size``-th image and the sums are added up over the ranks."""
        test = self.test_set()
        n = len(test) if limit is None else min(limit, len(test))
        noise = heldout_noise(len(test), model.num_patches)
        mine = np.arange(n)[self.comm.rank :: self.comm.world_size]
        total, hidden = 0.0, 0.0
        with no_grad(), model.evaluating():
            for start in range(0, len(mine), 250):
                idx = mine[start : start + 250]
                loss, _, mask = model(self.images(test, idx), noise=noise[idx])
                count = float(mask.numpy().sum())  # the loss is a mean over the hidden patches
                total, hidden = total + loss.item() * count, hidden + count
        total, hidden = self.comm.allreduce_sum([total, hidden])
        return {"masked_mse": float(total / hidden)}

    def heldout_images(self, n: int) -> tuple[Tensor, np.ndarray, np.ndarray, np.ndarray]:
        """``n`` test images spread evenly over the test split (every class appears where the
        split is sorted by class): (normalized Tensor, their rows of ``heldout_noise``, labels, indices)."""
        test = self.test_set()
        idx = np.unique(np.linspace(0, len(test) - 1, min(n, len(test))).round().astype(int))
        (_, H, W), p = test.image_shape, self.config.model_args["patch_size"]
        noise = heldout_noise(len(test), (H // p) * (W // p))
        return self.images(test, idx), noise[idx], test.labels[idx], idx

    def heldout_inputs(self, n: int) -> Tensor:
        return self.heldout_images(n)[0]

    def probes(
        self,
        model: Module,
        pools: tuple[str, ...] = ("cls", "mean"),
        *,
        knn: bool = True,
        linear: bool = True,
    ) -> dict[str, float]:
        """k-NN (k = 20, cosine, T = 0.07) and linear-probe test accuracy on frozen encoder
        features (``pool`` "cls" and/or "mean"), fitted on the whole train split."""
        train, test, device = self.train_set, self.test_set(), self.config.device
        out: dict[str, float] = {}
        with model.evaluating():
            for pool in pools:
                embed = lambda x, pool=pool: model.features(x, pool=pool)  # noqa: E731
                tx, ty = embed_dataset(embed, train, device=device)
                ex, ey = embed_dataset(embed, test, device=device)
                if knn:
                    out[f"knn_{pool}"] = knn_accuracy(tx, ty, ex, ey)
                if linear:
                    probe = linear_probe(tx, ty, ex, ey, seed=self.config.seed)
                    out[f"linear_probe_{pool}"] = probe["test_acc"]
        return out

    def describe(self, n: int) -> str:
        c = self.config
        return f"{ARCH_NAMES[c.model]} ({c.preset}) {self.run_dir.name}, {n} held-out {c.data} images"

    def summary(self, result: dict[str, Any]) -> str:
        c = self.config
        return (
            f"{self.run_dir}: {ARCH_NAMES[c.model]} {c.preset} on {c.data}, {result['params']:,} parameters, "
            f"held-out masked MSE {result['eval_masked_mse']:.4f} ({int(c.mask_ratio * 100)}% of patches "
            f"hidden) after {c.epochs} epochs ({result['seconds']:.0f} s)"
        )


def load_run(run_dir: Path) -> tuple[MaskedAutoencoding, Module]:
    """(task, model with the last checkpoint's weights, in eval mode) of a masked-autoencoder run."""
    task, model = open_run(run_dir)
    if not isinstance(task, MaskedAutoencoding):
        raise ConfigError(f"{run_dir} is a {task.config.task} run, not a mae run")
    return task, model
