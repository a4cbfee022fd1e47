"""The training loop: files it writes, and exact resumption after an interruption."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import whitebox.functional as F
from whitebox import backend
from whitebox.nn import Dropout, Linear, Module
from whitebox.optim import AdamW
from whitebox.tensor import Tensor
from whitebox.train import fit, load_checkpoint, read_metrics

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
