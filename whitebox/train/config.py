"""Run configs: one dataclass per task, validated in one place, saved as ``config.json``.

``TrainConfig`` holds what every task's training loop needs (epochs, batch size, optimizer and
its learning-rate schedule, seed, device); each task adds its fields in a subclass registered
with ``@register("task name")``:

    ImageConfig   ("image")  image classification (CRATE, ViT, CRATE-alpha, ToST on a named dataset)
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
import importlib
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from whitebox.nn import Module
from whitebox.optim import AdamW, Lion
from whitebox.train.run_files import CONFIG, save_config

CONFIG_VERSION = 2
#: The longest context a language run may ask for (attention memory grows as its square).
MAX_BLOCK_SIZE = 4096
#: Image model arguments checked like config fields (``model_args`` is a free dict).
_MODEL_ARG_SPECS = {
    "dropout": {"low": 0, "high": 1, "below": True},
    "emb_dropout": {"low": 0, "high": 1, "below": True},
    "eta": {"low": 0},
    "lam": {"low": 0},
}
OPTIMIZERS = {"adamw": AdamW, "lion": Lion}

C = TypeVar("C", bound="TrainConfig")


class ConfigError(ValueError):
    """A config field out of range, of the wrong type, unknown, or of an unknown version."""


def spec(default: Any, *, low: float | None = None, high: float | None = None, above: bool = False,
         below: bool = False, choices: tuple[Any, ...] | None = None,
         optional: bool = False) -> Any:  # fmt: skip
    """A dataclass field with its allowed values: ``low <= x <= high`` (``low < x`` with ``above``,
    ``x < high`` with ``below``), one of ``choices``; ``optional`` allows None."""
    meta = dict(low=low, high=high, above=above, below=below, choices=choices, optional=optional)
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
    keep_epochs: bool = spec(False)  # also keep the weights at init and after every epoch

    def check(self) -> None:
        """Checks across fields, run by ``validate`` after every field's own (subclasses add theirs)."""


_TASKS: dict[str, type[TrainConfig]] = {}
#: Tasks whose config is defined in the task's own module: imported when a config names the task.
CONFIG_MODULES = {"dino": "whitebox.train.dino"}


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
    if task not in _TASKS and task in CONFIG_MODULES:
        importlib.import_module(CONFIG_MODULES[task])
    if task not in _TASKS:
        raise ConfigError(f"unknown task {task!r}; registered: {', '.join(_TASKS)}")
    return _TASKS[task]


@register("image")
@dataclasses.dataclass(kw_only=True)
class ImageConfig(TrainConfig):
    """Image classification: ``model`` (a ``model_args`` constructor) on dataset ``data`` (a name,
    or the path of an .npz file or image folder: ``image_size`` and ``val_fraction`` apply to those)."""

    model: str = spec("crate", choices=("crate", "vit", "crate-alpha", "tost"))
    preset: str = spec("crate_mnist_tiny")  # the whitebox.crate.PRESETS key model_args started from
    data: str = spec("mnist5k")
    image_size: int | None = spec(None, low=1, optional=True)  # your own images: resized to this
    val_fraction: float = spec(0.1, low=0, high=1, above=True)  # your own images: held out if no test split
    model_args: dict[str, Any] = dataclasses.field(default_factory=dict)
    min_lr: float = spec(1e-5, low=0)
    label_smoothing: float = spec(0.1, low=0, high=1)
    augment: bool = spec(True)


@register("lm")
@dataclasses.dataclass(kw_only=True)
class LMConfig(TrainConfig):
    """Language modelling: next-token prediction on windows of ``block_size`` tokens."""

    model: str = spec("crate", choices=("crate", "gpt", "crate-alpha", "tost"))
    preset: str = spec("small")  # the size preset the sizes below started from
    data: str = spec("pydoc")
    tokenizer: str = spec("char", choices=("char", "bpe"))
    vocab_size: int = spec(512, low=257)  # BPE only: 256 bytes + merges (+ specials)
    epochs: int = spec(5, low=1)
    steps_per_epoch: int = spec(100, low=1)
    batch_size: int = spec(32, low=1)
    weight_decay: float = spec(0.01, low=0)
    warmup_steps: int = spec(50, low=0)
    block_size: int = spec(64, low=1, high=MAX_BLOCK_SIZE)
    dim: int = spec(128, low=1)
    depth: int = spec(4, low=1)
    heads: int = spec(4, low=1)
    dim_head: int | None = spec(None, low=1, optional=True)
    dropout: float = spec(0.0, low=0, high=1, below=True)
    eta: float = spec(0.1, low=0)  # CRATE and CRATE-alpha only: ISTA step size
    lam: float = spec(0.1, low=0)  # CRATE and CRATE-alpha only: ISTA sparsity weight
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
    mask_ratio: float = spec(0.75, low=0, high=1, above=True)  # < 1 is checked by check
    norm_pix_loss: bool = spec(False)
    min_lr: float = spec(1e-5, low=0)

    def check(self) -> None:
        if self.mask_ratio >= 1:
            raise ConfigError(f"mask_ratio must be < 1 (some patches stay visible), got {self.mask_ratio}")


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
    low, high, above, below = meta.get("low"), meta.get("high"), meta.get("above"), meta.get("below")
    too_low = low is not None and (value <= low if above else value < low)
    too_high = high is not None and (value >= high if below else value > high)
    if too_low or too_high:
        if low is not None and high is not None:
            valid = f"in {'(' if above else '['}{low}, {high}{')' if below else ']'}"
        elif low is not None:
            valid = f"{'>' if above else '>='} {low}"
        else:
            valid = f"{'<' if below else '<='} {high}"
        raise ConfigError(f"{name} must be {valid}, got {value!r}")


def given_settings(cls: type[C], factory: str, settings: dict[str, Any]) -> dict[str, Any]:
    """The settings a config factory (named ``factory``) was given, None meaning "the default" and
    so dropped; each must be a field of ``cls`` other than those the factory fills itself."""
    given = {k: v for k, v in settings.items() if v is not None}
    fields = {f.name for f in dataclasses.fields(cls)} - {"model", "preset", "data", "model_args"}
    if unknown := sorted(set(given) - fields):
        raise ConfigError(f"{factory}: unknown settings {', '.join(unknown)}")
    return given


def validate(config: C) -> C:
    """``config`` itself if every field is within its ``spec`` (floats given as ints become floats)."""
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        _check(f.name, value, f.type, dict(f.metadata))
        if f.type == "float" and isinstance(value, int):
            setattr(config, f.name, float(value))
    if isinstance(config, LMConfig) and config.dim_head is None and config.dim % config.heads:
        raise ConfigError(f"dim {config.dim} is not divisible by {config.heads} heads; set dim_head")
    if config.min_lr > config.lr:
        raise ConfigError(f"min_lr {config.min_lr} is above lr {config.lr}: min_lr must be in [0, lr]")
    if isinstance(config, ImageConfig):
        for key, meta in _MODEL_ARG_SPECS.items():
            if config.model_args.get(key) is not None:
                _check(key, config.model_args[key], "float", meta)
    config.check()
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
    """The config of ``run_dir/config.json``; a missing, torn or invalid file is a ``ConfigError``."""
    path = Path(run_dir) / CONFIG
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path} is missing: {run_dir} is not a run directory (or was damaged)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} is not valid JSON (a torn or edited file?): {exc}") from None
    if not isinstance(d, dict):
        raise ConfigError(f"{path} holds a JSON {type(d).__name__}, not a run config")
    try:
        return from_dict(d)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    except TypeError as exc:
        raise ConfigError(f"{path}: {exc}") from None


#: Command-line settings that only some runs take: setting -> (who takes it, test on (task, model)).
ONLY_FOR: dict[str, tuple[str, Callable[[str, str], bool]]] = {
    **dict.fromkeys(("steps", "tokenizer", "block_size"), ("lm/mlm runs", lambda t, m: t in ("lm", "mlm"))),
    **dict.fromkeys(("label_smoothing", "no_augment"), ("image runs", lambda t, m: t == "image")),
    "patch_size": ("image, mae and dino runs", lambda t, m: t in ("image", "mae", "dino")),
    **dict.fromkeys(("mask_ratio", "norm_pix_loss"), ("mae runs", lambda t, m: t == "mae")),
    **dict.fromkeys(
        ("local_crops", "out_dim", "momentum", "teacher_temp", "pool"),
        ("dino runs", lambda t, m: t == "dino"),
    ),
    **dict.fromkeys(("lam", "eta"), ("crate models", lambda t, m: m == "crate")),
}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def check_applicable(task: str, model: str, given: Any) -> None:
    """Raise ConfigError naming every setting in ``given`` that a ``task`` run of ``model`` ignores."""
    wrong: dict[str, list[str]] = {}
    for name in given:
        if name in ONLY_FOR and not ONLY_FOR[name][1](task, model):
            wrong.setdefault(ONLY_FOR[name][0], []).append(_flag(name))
    if wrong:
        parts = [f"{', '.join(flags)} apply only to {who}" for who, flags in wrong.items()]
        raise ConfigError(f"{'; '.join(parts)}, not to --task {task} --model {model}")


#: What ``--resume`` may change: the length of the run, the device, and the learning-rate schedule
#: and clipping (read afresh at every step; the optimizer's other settings come from the checkpoint).
RESUMABLE = ("epochs", "steps", "device", "lr", "min_lr", "warmup_steps", "clip_norm")


def _saved_value(saved: TrainConfig, name: str, value: Any) -> tuple[str, Any, Any]:
    """(field name, saved value, new value) of the setting ``name`` given as ``value``."""
    if name == "task":
        return name, saved.task, value
    if name == "no_augment":
        return "augment", getattr(saved, "augment", None), not value
    full = (f"{saved.model}_{value}", f"mae_{saved.model}_{value}")  # the image and mae preset keys
    if name == "preset" and isinstance(saved, ImageConfig | MAEConfig) and saved.preset in full:
        return name, saved.preset, saved.preset
    if isinstance(saved, ImageConfig | MAEConfig) and name in saved.model_args:
        return name, saved.model_args[name], value
    return name, getattr(saved, name, None), value


def resume_config(saved: TrainConfig, given: dict[str, Any], done_epochs: int) -> tuple[TrainConfig, str]:
    """The config a resumed run continues with, and a line saying what changes.

    ``given``: the settings passed on the command line (name -> value); ``done_epochs``: the
    epochs the checkpoint has completed. Only ``RESUMABLE`` settings may differ from ``saved``;
    any other difference is a ConfigError listing all of them, as is an ``epochs`` below
    ``done_epochs``.
    """
    differences = []
    for name, value in given.items():
        field, old, new = _saved_value(saved, name, value)
        if name not in RESUMABLE and old != new:
            differences.append(f"{field} {old} -> {new}")
    if differences:
        raise ConfigError(
            f"--resume cannot change {', '.join(differences)} (the run was made with the old values; "
            "start a new --out to change them)"
        )
    epochs = given.get("epochs", saved.epochs)
    if "steps" in given and isinstance(saved, LMConfig):
        epochs = math.ceil(given["steps"] / saved.steps_per_epoch)
    if epochs < done_epochs:
        raise ConfigError(
            f"the run has completed {done_epochs} epochs; a resumed run cannot be shortened to {epochs}"
        )
    changes = {k: given[k] for k in RESUMABLE[2:] if k in given}
    config = validate(dataclasses.replace(saved, epochs=epochs, **changes))
    changed = [f"{k} {getattr(saved, k)} -> {v}" for k, v in changes.items() if getattr(saved, k) != v]
    if epochs != saved.epochs:
        changed.insert(0, f"{saved.epochs} -> {epochs} epochs (the learning-rate schedule is stretched)")
    if done_epochs >= epochs:
        return config, f"the run has finished its {epochs} epochs; nothing to do (pass --epochs to extend it)"
    return config, f"continuing after epoch {done_epochs} of {epochs}" + (
        f" with {', '.join(changed)}" if changed else ""
    )


def build_optimizer(config: TrainConfig, model: Module) -> AdamW | Lion:
    """The optimizer ``config`` names, over ``model``'s parameters, at the peak learning rate."""
    cls = OPTIMIZERS[config.optimizer]
    return cls(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
