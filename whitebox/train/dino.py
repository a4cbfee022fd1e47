"""Self-supervised training without labels: DINO's self-distillation (``DINOConfig``, task "dino").

A CRATE or ViT backbone (``ImageFeatures``: the pooled, normalized tokens of the classifier; its
classification head is never used) and DINO's projection head form the student; the teacher is
their EMA (``whitebox.selfsup``). Each batch of training images becomes two global and
``n_local`` local views (``whitebox.data.MultiCrop``); the loss is the cross-entropy between the
teacher's centered, sharpened output on one view and the student's on every other view

    L = mean_{i global, v != i} mean_b -sum_k softmax((t_i - c) / tau_t)_k log softmax(s_v / tau_s)_k,

and after every optimizer step the teacher moves: theta_t <- m theta_t + (1 - m) theta_s, m rising
from ``momentum`` to 1 along a cosine. The labels are never read in training. The collapse watch
(teacher entropy, input dependence, teacher-student KL) is logged with every epoch and warns on a
collapse to a constant or to uniform.

After each epoch the teacher's features are scored by a weighted k-NN on the test split (the
train split as the memory bank). ``frozen_evaluation`` adds the linear probe, and the same scores
for the model as it was before training (the run's own initialization): the gain from training.
Local crops are resampled to the global size: the backbones' positional embeddings have one size.

Defaults are for minutes of CPU training on 28 px images, not DINO's ImageNet values (cls token,
momentum 0.996, teacher temperature 0.04 to 0.07, 4 KB outputs x 16 = 65,536): on mnist5k with a
few hundred steps, the cls token of an untrained CRATE hardly depends on the image (input
dependence I of the teacher about 0.02 nats at step 0) and the teacher drifted to uniform with
temperature 0.04; the mean of the tokens, temperature 0.02 and momentum 0.98 kept I near 1 nat
(benchmarks/dino_side_by_side.py lists what was measured).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from whitebox import backend
from whitebox.data import DataLoader, MultiCrop, load_dataset
from whitebox.distributed import Communicator
from whitebox.features import ImageFeatures, embed_dataset, knn_accuracy, linear_probe
from whitebox.nn import Module
from whitebox.selfsup import DINO, CollapseMonitor, DINOHead, DINOLoss
from whitebox.tensor import Tensor
from whitebox.train.classify import ARCH_NAMES, MODELS, model_args, resolve_preset
from whitebox.train.config import ConfigError, TrainConfig, given_settings, register, spec, validate
from whitebox.train.task import Task, rng_untouched

#: What the per-epoch statistics of the loss are called in metrics.jsonl (with a train_ prefix).
WATCHED = ("teacher_entropy", "teacher_information", "kl_teacher_student")


@register("dino")
@dataclasses.dataclass(kw_only=True)
class DINOConfig(TrainConfig):
    """DINO on the images of ``data`` (labels only for the evaluation)."""

    model: str = spec("crate", choices=("crate", "vit"))
    preset: str = spec("crate_mnist_tiny")
    data: str = spec("mnist5k")
    model_args: dict[str, Any] = dataclasses.field(default_factory=dict)
    pool: str = spec("mean", choices=("cls", "mean"))  # the backbone's feature: cls token or mean
    epochs: int = spec(10, low=1)
    batch_size: int = spec(64, low=1)
    lr: float = spec(1e-3, low=0)
    min_lr: float = spec(1e-6, low=0)
    weight_decay: float = spec(0.04, low=0)
    clip_norm: float = spec(3.0, low=0)
    # the head
    out_dim: int = spec(256, low=2)
    hidden_dim: int = spec(256, low=1)
    bottleneck_dim: int = spec(64, low=1)
    head_layers: int = spec(3, low=1)
    # the views
    n_local: int = spec(2, low=0)
    global_scale_min: float = spec(0.4, low=0, high=1, above=True)
    global_scale_max: float = spec(1.0, low=0, high=1, above=True)
    local_scale_min: float = spec(0.05, low=0, high=1, above=True)
    local_scale_max: float = spec(0.4, low=0, high=1, above=True)
    brightness: float = spec(0.4, low=0, high=1)
    contrast: float = spec(0.4, low=0, high=1)
    # teacher and loss
    momentum: float = spec(0.98, low=0, high=1)
    student_temp: float = spec(0.1, low=0, above=True)
    teacher_temp: float = spec(0.02, low=0, above=True)
    warmup_teacher_temp: float = spec(0.02, low=0, above=True)
    teacher_temp_warmup_steps: int = spec(0, low=0)
    center_momentum: float = spec(0.9, low=0, high=1)
    # evaluation
    knn_k: int = spec(20, low=1)
    knn_temperature: float = spec(0.07, low=0, above=True)

    def check(self) -> None:
        g, loc = (self.global_scale_min, self.global_scale_max), (self.local_scale_min, self.local_scale_max)
        if g[0] > g[1] or loc[0] > loc[1] or loc[1] > g[0]:
            raise ConfigError(
                f"crop scales out of order: need local_scale_min <= local_scale_max <= global_scale_min "
                f"<= global_scale_max, got local {loc} and global {g}"
            )


def dino_config(
    model: str = "crate",
    preset: str = "mnist_tiny",
    data: str = "mnist5k",
    overrides: dict[str, Any] | None = None,
    **settings: Any,
) -> DINOConfig:
    """A complete, validated run config; ``settings`` are ``DINOConfig`` fields (None: default),
    ``overrides`` constructor arguments of the backbone. ``warmup_steps`` defaults to one epoch."""
    settings = given_settings(DINOConfig, "dino_config", settings)
    config = validate(DINOConfig(model=model, preset=resolve_preset(model, preset), data=data, **settings))
    backend.check_device(config.device)
    train = load_dataset(data, "train")
    config.model_args = model_args(model, preset, train, **(overrides or {}))
    if "warmup_steps" not in settings:
        config.warmup_steps = len(train) // config.batch_size
    return config


class SelfDistillation(Task):
    """The "dino" task (module docstring). The model is a ``whitebox.selfsup.DINO``."""

    config: DINOConfig

    def __init__(self, config: DINOConfig, run_dir: Path, comm: Communicator | None = None) -> None:
        super().__init__(config, run_dir, comm)
        if self.comm.world_size > 1:  # the center and the k-NN bank would need all-reduces
            raise ConfigError("the dino task runs in one process; train it without --distributed")
        c = config
        train = load_dataset(c.data, "train")
        if len(train) < c.batch_size:
            raise ConfigError(f"batch_size {c.batch_size} is larger than the {len(train)} training images")
        self.views = MultiCrop(
            train.image_shape[1],
            train.image_shape[1],
            n_local=c.n_local,
            global_scale=(c.global_scale_min, c.global_scale_max),
            local_scale=(c.local_scale_min, c.local_scale_max),
            flip_p=0.5 if train.flip_ok else 0.0,
            brightness=c.brightness,
            contrast=c.contrast,
        )
        self.loader = DataLoader(
            train, c.batch_size, seed=c.seed, augment=self.views, device=c.device, drop_last=True
        )
        self.steps_per_epoch = len(self.loader)
        self.monitor = CollapseMonitor(c.out_dim)
        self._features: dict[str, Any] = {}

    def build_model(self) -> DINO:
        c = self.config
        backbone = ImageFeatures(MODELS[c.model](**c.model_args), c.pool)
        head = DINOHead(backbone.dim, c.out_dim, c.hidden_dim, c.bottleneck_dim, c.head_layers)
        loss = DINOLoss(
            c.out_dim,
            c.student_temp,
            c.teacher_temp,
            c.warmup_teacher_temp,
            c.teacher_temp_warmup_steps,
            c.center_momentum,
        )
        return DINO(backbone, head, loss, c.epochs * self.steps_per_epoch, c.momentum, n_global=2)

    def batches(self, epoch: int) -> DataLoader:
        self.loader.set_epoch(epoch)
        return self.loader

    def loss(self, model: Module, batch: tuple[list[Tensor], Any]) -> tuple[Tensor, dict[str, float]]:
        views, _ = batch  # the labels are not used
        loss, stats = model(views)
        self.monitor.update(stats, int(model.steps.data))
        return loss, {"n": views[0].shape[0], **{k: stats[k] for k in WATCHED}}

    def after_step(self, model: Module, step: int) -> None:
        model.update_teacher(step)

    def dataset(self, split: str) -> Any:
        """The ``split`` of the run's data (loaded once)."""
        if split not in self._features:
            self._features[split] = load_dataset(self.config.data, split)
        return self._features[split]

    def features(self, model: Module) -> tuple[Any, ...]:
        """(train features, train labels, test features, test labels) of the teacher's backbone."""
        backbone = model.teacher.backbone
        with backbone.evaluating():
            tx, ty = embed_dataset(backbone, self.dataset("train"), device=self.config.device)
            ex, ey = embed_dataset(backbone, self.dataset("test"), device=self.config.device)
        return tx, ty, ex, ey

    def evaluate(self, model: Module, limit: int | None = None) -> dict[str, float]:
        """k-NN accuracy of the teacher's features on the test split (``limit`` is ignored)."""
        tx, ty, ex, ey = self.features(model)
        return {"knn_acc": knn_accuracy(tx, ty, ex, ey, self.config.knn_k, self.config.knn_temperature)}

    def initial_model(self) -> DINO:
        """The model as this run built it before training (seeded by the run's seed, the RNG then
        restored): the randomly initialized baseline of the same shape."""
        with rng_untouched():
            backend.manual_seed(self.config.seed)
            model = self.build_model()
        return model.to(self.config.device)

    def frozen_evaluation(self, model: Module, knn: bool = True, probe: bool = True) -> list[dict[str, Any]]:
        """Rows {"backbone", "knn_acc", "probe_acc"} for the trained teacher and the same network
        before training, each on frozen features (k-NN: k, T of the config; probe: 100 epochs)."""
        rows = []
        for name, m in (("trained", model), ("random init", self.initial_model())):
            tx, ty, ex, ey = self.features(m)
            row: dict[str, Any] = {"backbone": name}
            if knn:
                row["knn_acc"] = knn_accuracy(tx, ty, ex, ey, self.config.knn_k, self.config.knn_temperature)
            if probe:
                row["probe_acc"] = linear_probe(tx, ty, ex, ey, epochs=100, seed=self.config.seed)["test_acc"]
            rows.append(row)
        return rows

    def heldout_inputs(self, n: int) -> Tensor:
        test = self.dataset("test")
        loader = DataLoader(test, min(n, len(test)), shuffle=False, device=self.config.device)
        return next(iter(loader))[0]

    def describe(self, n: int) -> str:
        c = self.config
        return f"DINO {ARCH_NAMES[c.model]} ({c.preset}) {self.run_dir.name}, {n} held-out {c.data} images"

    def summary(self, result: dict[str, Any]) -> str:
        c = self.config
        return (
            f"{self.run_dir}: DINO {c.model} {c.preset} on {c.data} (no labels), {result['params']:,} "
            f"parameters (student + teacher), k-NN test accuracy {result['eval_knn_acc']:.4f} after "
            f"{c.epochs} epochs ({result['seconds']:.0f} s)"
        )
