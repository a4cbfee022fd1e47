"""The training loop: files it writes, and exact resumption after an interruption."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

import whitebox.functional as F
from whitebox import backend
from whitebox.nn import Dropout, Linear, Module
from whitebox.optim import AdamW
from whitebox.tensor import Tensor
from whitebox.train import (
    ConfigError,
    ImageConfig,
    LMConfig,
    MLMConfig,
    Task,
    TrainConfig,
    fit,
    from_dict,
    load_checkpoint,
    open_run,
    read_config,
    read_metrics,
    to_dict,
    train,
    validate,
    write_config,
)
from whitebox.train import config as config_module
from whitebox.train import task as task_module
from whitebox.train.config import CONFIG_VERSION, register, spec

X = np.random.default_rng(0).normal(size=(96, 6)).astype(np.float32)
Y = (X[:, 0] + X[:, 1] > 0).astype(np.int64)


class Net(Module):
    """A two-layer net with dropout, so that the device RNG matters."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.drop, self.fc2 = Linear(6, 16), Dropout(0.3), Linear(16, 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.drop(self.fc1(x).relu()))


class SimulatedCrashError(Exception):
    """Raised by the batch source to simulate a crash at the start of an epoch."""


def batches(seed: int, stop_at: int | None = None):
    """Shuffled batches of 16, the order a function of (seed, epoch) only."""

    def for_epoch(epoch: int) -> list[tuple[Tensor, np.ndarray]]:
        if epoch == stop_at:
            raise SimulatedCrashError
        order = np.random.default_rng([seed, epoch]).permutation(len(X))
        return [(Tensor(X[i]), Y[i]) for i in np.split(order, len(X) // 16)]

    return for_epoch


def loss_fn(model: Module, batch: tuple[Tensor, np.ndarray]) -> tuple[Tensor, dict[str, float]]:
    x, y = batch
    logits = model(x)
    return F.cross_entropy(logits, y), {"acc": float((logits.data.argmax(-1) == y).mean())}


def run(run_dir: Path, epochs: int, resume: bool = False, stop_at: int | None = None) -> Net:
    backend.manual_seed(0)
    model = Net()
    opt = AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    fit(
        model,
        opt,
        batches(0, stop_at),
        loss_fn,
        epochs=epochs,
        run_dir=run_dir,
        config={"task": "toy", "epochs": epochs},
        base_lr=1e-2,
        warmup_steps=3,
        clip_norm=1.0,
        steps_per_epoch=len(X) // 16,
        evaluate=lambda m: {"acc": float((m(Tensor(X)).data.argmax(-1) == Y).mean())},
        resume=resume,
        progress=False,
    )
    return model


def test_fit_writes_config_metrics_and_checkpoint(tmp_path: Path):
    model = run(tmp_path, epochs=2)
    assert json.loads((tmp_path / "config.json").read_text()) == {"task": "toy", "epochs": 2}
    records = read_metrics(tmp_path)
    assert [r["epoch"] for r in records] == [0, 1]
    assert [r["step"] for r in records] == [6, 12]
    for r in records:
        assert {"lr", "train_loss", "train_acc", "eval_acc", "seconds", "samples_per_s"} <= set(r)
    state = load_checkpoint(tmp_path)
    assert (state["epoch"], state["step"], state["seed"]) == (1, 12, 0)
    assert state["config"] == {"task": "toy", "epochs": 2}
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(state["model"][name], value)
    assert model.training is False


def test_interrupted_and_resumed_run_matches_uninterrupted(tmp_path: Path):
    straight = run(tmp_path / "straight", epochs=3)
    with pytest.raises(SimulatedCrashError):
        run(tmp_path / "resumed", epochs=3, stop_at=1)  # dies at the start of epoch 1
    assert [r["epoch"] for r in read_metrics(tmp_path / "resumed")] == [0]
    resumed = run(tmp_path / "resumed", epochs=3, resume=True)
    for name, value in straight.state_dict().items():
        np.testing.assert_array_equal(resumed.state_dict()[name], value, err_msg=name)
    assert [r["epoch"] for r in read_metrics(tmp_path / "resumed")] == [0, 1, 2]
    a, b = read_metrics(tmp_path / "straight"), read_metrics(tmp_path / "resumed")
    assert [r["train_loss"] for r in a] == [r["train_loss"] for r in b]


def test_resume_of_a_finished_run_changes_nothing(tmp_path: Path):
    first = run(tmp_path, epochs=2)
    again = run(tmp_path, epochs=2, resume=True)
    for name, value in first.state_dict().items():
        np.testing.assert_array_equal(again.state_dict()[name], value)
    assert len(read_metrics(tmp_path)) == 2


# ---- configs and the task interface -----------------------------------------------------------


def test_configs_round_trip_through_json(tmp_path: Path):
    for config in (ImageConfig(model_args={"dim": 8}), LMConfig(dim_head=16), MLMConfig(mask_prob=0.3)):
        write_config(tmp_path, config)
        raw = json.loads((tmp_path / "config.json").read_text())
        assert raw["version"] == CONFIG_VERSION and raw["task"] == config.task
        assert read_config(tmp_path) == config


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"lr": float("nan")}, "lr must be a finite number"),
        ({"lr": float("inf")}, "lr must be a finite number"),
        ({"min_lr": -1e-3}, "min_lr must be >= 0"),
        ({"epochs": 0}, "epochs must be >= 1"),
        ({"epochs": 2.5}, "epochs must be int"),
        ({"batch_size": True}, "batch_size must be int"),
        ({"optimizer": "sgd"}, "optimizer must be one of adamw, lion"),
        ({"device": "tpu"}, "device must be one of cpu, cuda"),
        ({"label_smoothing": 1.5}, r"label_smoothing must be in \[0, 1\], got 1.5"),
        ({"lr": 1e-3, "min_lr": 1e-2}, r"min_lr 0.01 is above lr 0.001: min_lr must be in \[0, lr\]"),
        ({"warmup_steps": -1}, "warmup_steps must be >= 0"),
        ({"model": "gpt"}, "model must be one of crate, vit"),
    ],
)
def test_validation_names_the_bad_field(changes: dict, message: str):
    with pytest.raises(ConfigError, match=message):
        validate(ImageConfig(**changes))


def test_validation_makes_int_floats_floats():
    config = validate(ImageConfig(lr=1, label_smoothing=0))
    assert isinstance(config.lr, float) and isinstance(config.label_smoothing, float)


@pytest.mark.parametrize(
    "factory",
    [
        "whitebox.train.classify.image_config",
        "whitebox.train.autoencode.mae_config",
        "whitebox.train.dino.dino_config",
    ],
)
def test_config_factories_drop_none_and_name_unknown_settings(factory: str):
    import importlib

    module, name = factory.rsplit(".", 1)
    make = getattr(importlib.import_module(module), name)
    with pytest.raises(ConfigError, match=f"{name}: unknown settings model_args, typo"):
        make("crate", "mnist_tiny", "digits", typo=1, model_args={}, epochs=None)
    config = make("crate", "mnist_tiny", "digits", {"patch_size": 4}, epochs=2, seed=None)
    assert config.epochs == 2 and config.seed == type(config)().seed


def test_reading_names_unknown_keys_and_versions():
    good = to_dict(LMConfig())
    with pytest.raises(ConfigError, match="unknown keys mask_prob, typo"):
        from_dict({**good, "typo": 1, "mask_prob": 0.2})
    with pytest.raises(ConfigError, match="config version 99"):
        from_dict({**good, "version": 99})
    with pytest.raises(ConfigError, match="unknown task 'segment'"):
        from_dict({**good, "task": "segment"})


def test_version_1_configs_are_upgraded():
    """The configs written before the version key: warmup in epochs (image) or steps (text)."""
    image = {"task": "image", "model": "crate", "preset": "crate_mnist_tiny", "data": "digits",
             "model_args": {"dim": 8}, "epochs": 2, "batch_size": 128, "lr": 1e-3, "min_lr": 1e-5,
             "optimizer": "adamw", "weight_decay": 0.05, "warmup": 1.5, "label_smoothing": 0.1,
             "clip_norm": 1.0, "augment": True, "seed": 0, "device": "cpu"}  # fmt: skip
    config = from_dict(image)
    # digits: 1,438 training images, so one epoch is ceil(1438 / 128) = 12 steps
    assert isinstance(config, ImageConfig) and config.warmup_steps == 18
    text = {**to_dict(LMConfig()), "warmup": 7, "vocab": 100, "params": 1234, "progress": False,
            "steps": None, "mask_prob": 0.15}  # fmt: skip
    del text["version"], text["warmup_steps"]
    assert from_dict(text) == LMConfig(warmup_steps=7)


class ToyConfig(TrainConfig):
    """A new task's config: one extra field."""

    width: int = spec(16, low=1)


class ToyTask(Task):
    """A new task in a few lines: the two-class problem of ``X``, ``Y`` above."""

    steps_per_epoch = len(X) // 16

    def build_model(self) -> Module:
        return Net()

    def batches(self, epoch: int) -> list[tuple[Tensor, np.ndarray]]:
        return batches(self.config.seed)(epoch)

    def loss(self, model: Module, batch: tuple[Tensor, np.ndarray]) -> tuple[Tensor, dict[str, float]]:
        return loss_fn(model, batch)

    def evaluate(self, model: Module, limit: int | None = None) -> dict[str, float]:
        return {"acc": float((model(Tensor(X)).data.argmax(-1) == Y).mean())}

    def heldout_inputs(self, n: int) -> Tensor:
        return Tensor(X[:n])


def test_a_new_task_is_a_config_and_a_task_class(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(config_module, "_TASKS", dict(config_module._TASKS))
    monkeypatch.setitem(task_module.TASKS, "toy", f"{__name__}:ToyTask")
    toy = register("toy")(dataclasses.dataclass(kw_only=True)(ToyConfig))
    config = toy(epochs=2, batch_size=16, lr=1e-2, weight_decay=0.1, warmup_steps=3)
    result = train(config, tmp_path, progress=False)
    assert len(result["history"]) == 2 and 0 <= result["eval_acc"] <= 1
    assert read_config(tmp_path) == config
    # the same weights as the loop driven by hand (same seed, optimizer, schedule and batches)
    reference = run(tmp_path / "by_hand", epochs=2)
    task, model = open_run(tmp_path)
    assert isinstance(task, ToyTask) and not model.training
    for name, value in reference.state_dict().items():
        np.testing.assert_array_equal(backend.to_numpy(model.state_dict()[name]), backend.to_numpy(value))


def test_opening_a_run_leaves_the_rng_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(config_module, "_TASKS", dict(config_module._TASKS))
    monkeypatch.setitem(task_module.TASKS, "toy", f"{__name__}:ToyTask")
    toy = register("toy")(dataclasses.dataclass(kw_only=True)(ToyConfig))
    train(toy(epochs=1, batch_size=16), tmp_path, progress=False)
    backend.manual_seed(5)
    expected = backend.host_rng().random(3)
    backend.manual_seed(5)
    open_run(tmp_path)
    np.testing.assert_array_equal(backend.host_rng().random(3), expected)
