"""Run configs: one dataclass per task, validated in one place, saved as ``config.json``.

``TrainConfig`` holds what every task's training loop needs (epochs, batch size, optimizer and
its learning-rate schedule, seed, device); each task adds its fields in a subclass registered
with ``@register("task name")``:

    ImageConfig   ("image")  image classification (CRATE or ViT on a named dataset)
    LMConfig      ("lm")     language modelling (next-token prediction)
    MLMConfig     ("mlm")    masked language modelling (adds ``mask_prob``)
    MAEConfig     ("mae")    masked autoencoding of images (CRATE-MAE or its ViT-MAE twin)

A new task (an autoencoder, self-supervised training) adds its own subclass in its own file.
Every field carries its allowed range in its metadata (``spec``); ``validate`` checks them all
(type, finite, range, choices) and raises ``ConfigError`` naming the field. Warmup is counted in
optimizer steps everywhere (``warmup_steps``).

``to_dict`` / ``from_dict`` convert to and from the JSON object written to ``run_dir/config.json``:
``{"version": CONFIG_VERSION, "task": ..., fields...}``. An unknown key is an error that names
it. Version 1 (the configs written before the version key, with ``warmup`` in epochs for images
and in steps for text) is upgraded on reading; any other version is an error naming it.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from whitebox.nn import Module
from whitebox.optim import AdamW, Lion
from whitebox.train.loop import CONFIG, save_config

CONFIG_VERSION = 2
OPTIMIZERS = {"adamw": AdamW, "lion": Lion}

C = TypeVar("C", bound="TrainConfig")


class ConfigError(ValueError):
    """A config field out of range, of the wrong type, unknown, or of an unknown version."""


def spec(default: Any, *, low: float | None = None, high: float | None = None, above: bool = False,
         choices: tuple[Any, ...] | None = None, optional: bool = False) -> Any:  # fmt: skip
    """A dataclass field with its allowed values: ``low <= x <= high`` (``low < x`` with ``above``),
    one of ``choices``; ``optional`` allows None."""
    meta = {"low": low, "high": high, "above": above, "choices": choices, "optional": optional}
    return dataclasses.field(default=default, metadata=meta)


@dataclasses.dataclass(kw_only=True)
class TrainConfig:
    """What the training loop needs, whatever the task (``whitebox.train.loop.fit``)."""

    task: ClassVar[str] = ""

    epochs: int = spec(10, low=1)
    batch_size: int = spec(128, low=1)
    lr: float = spec(1e-3, low=0)  # peak of the warmup-cosine schedule
    min_lr: float = spec(0.0, low=0)
    optimizer: str = spec("adamw", choices=tuple(OPTIMIZERS))
    weight_decay: float = spec(0.05, low=0)
    warmup_steps: int = spec(0, low=0)
    clip_norm: float = spec(1.0, low=0)  # 0: no clipping
    seed: int = spec(0, low=0)
    device: str = spec("cpu", choices=("cpu", "cuda"))


_TASKS: dict[str, type[TrainConfig]] = {}


def register(task: str) -> Callable[[type[C]], type[C]]:
    """Class decorator: ``cls`` is the config of ``task`` (its ``task`` attribute is set)."""

    def deco(cls: type[C]) -> type[C]:
        if task in _TASKS:
            raise ValueError(f"task {task!r} already has a config ({_TASKS[task].__name__})")
        cls.task = task
        _TASKS[task] = cls
        return cls

    return deco


def config_class(task: str) -> type[TrainConfig]:
    """The config dataclass registered for ``task``."""
    if task not in _TASKS:
        raise ConfigError(f"unknown task {task!r}; registered: {', '.join(_TASKS)}")
    return _TASKS[task]


@register("image")
@dataclasses.dataclass(kw_only=True)
class ImageConfig(TrainConfig):
    """Image classification: ``model`` (a ``model_args`` constructor) on dataset ``data``."""

    model: str = spec("crate", choices=("crate", "vit"))
    preset: str = spec("crate_mnist_tiny")  # the whitebox.crate.PRESETS key model_args started from
    data: str = spec("mnist5k")
    model_args: dict[str, Any] = dataclasses.field(default_factory=dict)
    min_lr: float = spec(1e-5, low=0)
    label_smoothing: float = spec(0.1, low=0, high=1)
    augment: bool = spec(True)


@register("lm")
@dataclasses.dataclass(kw_only=True)
class LMConfig(TrainConfig):
    """Language modelling: next-token prediction on windows of ``block_size`` tokens."""

    model: str = spec("crate", choices=("crate", "gpt"))
    preset: str = spec("small")  # the size preset the sizes below started from
    data: str = spec("pydoc")
    tokenizer: str = spec("char", choices=("char", "bpe"))
    vocab_size: int = spec(512, low=257)  # BPE only: 256 bytes + merges (+ specials)
    epochs: int = spec(5, low=1)
    steps_per_epoch: int = spec(100, low=1)
    batch_size: int = spec(32, low=1)
    weight_decay: float = spec(0.01, low=0)
    warmup_steps: int = spec(50, low=0)
    block_size: int = spec(64, low=1)
    dim: int = spec(128, low=1)
    depth: int = spec(4, low=1)
    heads: int = spec(4, low=1)
    dim_head: int | None = spec(None, low=1, optional=True)
    dropout: float = spec(0.0, low=0, high=1)
    eta: float = spec(0.1, low=0)  # CRATE only: ISTA step size
    lam: float = spec(0.1, low=0)  # CRATE only: ISTA sparsity weight
    val_fraction: float = spec(0.1, low=0, high=1, above=True)
    eval_windows: int = spec(64, low=1)  # validation windows scored after each epoch


@register("mlm")
@dataclasses.dataclass(kw_only=True)
class MLMConfig(LMConfig):
    """Masked language modelling: BERT's masking rule (``whitebox.data.masking``) on each window."""

    model: str = spec("crate", choices=("crate", "bert"))
    mask_prob: float = spec(0.15, low=0, high=1, above=True)


@register("mae")
@dataclasses.dataclass(kw_only=True)
class MAEConfig(TrainConfig):
    """Masked autoencoding: ``model`` (CRATE-MAE or ViT-MAE, ``model_args``) on dataset ``data``,
    ``mask_ratio`` of the patches hidden (``whitebox.train.autoencode``)."""

    model: str = spec("crate", choices=("crate", "vit"))
    preset: str = spec("mae_crate_mnist_tiny")  # the whitebox.crate.PRESETS key model_args started from
    data: str = spec("mnist5k")
    model_args: dict[str, Any] = dataclasses.field(default_factory=dict)
    mask_ratio: float = spec(0.75, low=0, high=1, above=True)  # < 1 is checked by validate
    norm_pix_loss: bool = spec(False)
    min_lr: float = spec(1e-5, low=0)


def _check(name: str, value: Any, kind: Any, meta: dict[str, Any]) -> None:
    """Raise ConfigError unless ``value`` is of ``kind`` and within ``meta``'s range / choices."""
    if value is None and meta.get("optional"):
        return
    # ``kind`` is the annotation as written ("int", "float", "int | None", "dict[str, Any]", ...)
    base = {"int": int, "float": float, "str": str, "bool": bool}.get(str(kind).split(" |")[0], dict)
    if base is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, base) or (base is int and isinstance(value, bool)):
        raise ConfigError(f"{name} must be {base.__name__}, got {value!r}")
    if base is float and not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, got {value!r}")
    if meta.get("choices") and value not in meta["choices"]:
        raise ConfigError(f"{name} must be one of {', '.join(map(str, meta['choices']))}, got {value!r}")
    low, high = meta.get("low"), meta.get("high")
    if low is not None and (value <= low if meta.get("above") else value < low):
        raise ConfigError(f"{name} must be {'>' if meta.get('above') else '>='} {low}, got {value!r}")
    if high is not None and value > high:
        raise ConfigError(f"{name} must be <= {high}, got {value!r}")


def validate(config: C) -> C:
    """``config`` itself if every field is within its ``spec`` (floats given as ints become floats)."""
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        _check(f.name, value, f.type, dict(f.metadata))
        if f.type == "float" and isinstance(value, int):
            setattr(config, f.name, float(value))
    if isinstance(config, LMConfig) and config.dim_head is None and config.dim % config.heads:
        raise ConfigError(f"dim {config.dim} is not divisible by {config.heads} heads; set dim_head")
    if isinstance(config, MAEConfig) and config.mask_ratio >= 1:
        raise ConfigError(f"mask_ratio must be < 1 (some patches stay visible), got {config.mask_ratio}")
    return config


def to_dict(config: TrainConfig) -> dict[str, Any]:
    """The JSON object of ``config``: version, task, then every field."""
    return {"version": CONFIG_VERSION, "task": config.task, **dataclasses.asdict(config)}


def _upgrade_v1(d: dict[str, Any]) -> dict[str, Any]:
    """A version-1 config (no version key) in version 2's terms: ``warmup`` (epochs for images,
    steps for text) becomes ``warmup_steps``; the run's results and display flags are dropped."""
    d = {"task": "image", **d}
    warmup = d.pop("warmup", None)
    if d["task"] == "image":
        from whitebox.data import load_dataset  # only to count the steps of one epoch

        steps_per_epoch = -(-len(load_dataset(d["data"], "train")) // d["batch_size"])
        d["warmup_steps"] = round((1.0 if warmup is None else warmup) * steps_per_epoch)
    else:
        d["warmup_steps"] = 50 if warmup is None else int(warmup)
        for key in ("vocab", "params", "progress", "steps", *(("mask_prob",) if d["task"] == "lm" else ())):
            d.pop(key, None)
    return d


def from_dict(d: dict[str, Any]) -> TrainConfig:
    """The validated config of a ``to_dict`` object (version 1 upgraded; see the module docstring)."""
    version = d.get("version", 1)
    if version == 1:
        d = _upgrade_v1(d)
    elif version != CONFIG_VERSION:
        raise ConfigError(
            f"config version {version!r} is not readable by this whitebox (config version {CONFIG_VERSION})"
        )
    d = {k: v for k, v in d.items() if k != "version"}
    cls = config_class(d.pop("task", "image"))
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ConfigError(f"{cls.__name__}: unknown keys {', '.join(unknown)}")
    return validate(cls(**d))


def write_config(run_dir: Path, config: TrainConfig) -> Path:
    """Write ``run_dir/config.json`` (sorted keys, indented)."""
    save_config(Path(run_dir), to_dict(config))
    return Path(run_dir) / CONFIG


def read_config(run_dir: Path) -> TrainConfig:
    """The config of ``run_dir/config.json``."""
    return from_dict(json.loads((Path(run_dir) / CONFIG).read_text()))


def build_optimizer(config: TrainConfig, model: Module) -> AdamW | Lion:
    """The optimizer ``config`` names, over ``model``'s parameters, at the peak learning rate."""
    cls = OPTIMIZERS[config.optimizer]
    return cls(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
