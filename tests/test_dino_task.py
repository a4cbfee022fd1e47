"""The "dino" task: its config checks, the command line (train, eval --knn --linear-probe) and
an exact resume (teacher, center and step counter are all in the checkpoint), on tiny models."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from whitebox.cli import main
from whitebox.selfsup import DINO
from whitebox.train import read_metrics, train
from whitebox.train.config import ConfigError, from_dict, to_dict
from whitebox.train.dino import DINOConfig, SelfDistillation, dino_config
from whitebox.train.run_files import load_checkpoint

TINY = ["--data", "digits", "--patch-size", "4", "--dim", "16", "--depth", "1", "--heads", "2"]
SMALL = {"dim": 16, "depth": 1, "heads": 2, "patch_size": 4}


def _config(**settings: object) -> DINOConfig:
    base = {
        "epochs": 2,
        "batch_size": 256,
        "n_local": 1,
        "out_dim": 32,
        "hidden_dim": 32,
        "bottleneck_dim": 8,
    }
    return dino_config("crate", "mnist_tiny", "digits", SMALL, **{**base, **settings})


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"momentum": 1.5}, "momentum must be in [0, 1], got 1.5"),
        ({"momentum": -0.1}, "momentum must be in [0, 1], got -0.1"),
        ({"n_local": -1}, "n_local must be >= 0, got -1"),
        ({"local_scale_min": 0.5, "local_scale_max": 0.2}, "crop scales out of order"),
        ({"global_scale_min": 0.3}, "crop scales out of order"),
        ({"teacher_temp": 0.0}, "teacher_temp must be > 0, got 0.0"),
        ({"warmup_teacher_temp": -1.0}, "warmup_teacher_temp must be > 0"),
    ],
)
def test_bad_settings_get_one_clear_error(changes: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        _config(**changes)


def test_config_round_trips_through_json() -> None:
    config = _config(momentum=0.98)
    again = from_dict(json.loads(json.dumps(to_dict(config))))
    assert again == config and isinstance(again, DINOConfig)


def test_cli_trains_without_labels_and_scores_frozen_features(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "dino"
    argv = ["train", "--task", "dino", "--model", "vit", *TINY, "--epochs", "2", "--batch-size", "256"]
    argv += ["--local-crops", "1", "--out-dim", "32", "--momentum", "0.9", "--quiet", "--out", str(run)]
    assert main(argv) == 0
    assert "k-NN test accuracy" in capsys.readouterr().out
    records = read_metrics(run)
    assert len(records) == 2
    for r in records:
        assert {"train_loss", "train_teacher_entropy", "train_kl_teacher_student", "eval_knn_acc"} <= set(r)
        assert 0 <= r["eval_knn_acc"] <= 1
    assert main(["eval", str(run), "--knn", "--linear-probe"]) == 0
    out = capsys.readouterr().out
    assert (
        "trained backbone: knn_acc" in out and "random init backbone: knn_acc" in out and "probe_acc" in out
    )
    # the feature of a dino run is its config's pool; --pool is for mae runs
    assert main(["eval", str(run), "--knn", "--pool", "cls"]) == 2
    assert "--pool is for mae runs" in capsys.readouterr().err
    assert main(["train", "--task", "dino", *TINY, "--momentum", "2", "--out", str(tmp_path / "x")]) == 2
    assert "momentum must be in [0, 1]" in capsys.readouterr().err


class _CrashError(Exception):
    pass


def test_interrupted_and_resumed_run_matches_uninterrupted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    config = _config()
    train(config, tmp_path / "straight", progress=False)
    original = SelfDistillation.batches

    def crash_in_epoch_1(self: SelfDistillation, epoch: int):
        if epoch == 1:
            raise _CrashError
        return original(self, epoch)

    monkeypatch.setattr(SelfDistillation, "batches", crash_in_epoch_1)
    with pytest.raises(_CrashError):
        train(config, tmp_path / "resumed", progress=False)
    monkeypatch.setattr(SelfDistillation, "batches", original)
    train(config, tmp_path / "resumed", resume=True, progress=False)
    a, b = load_checkpoint(tmp_path / "straight")["model"], load_checkpoint(tmp_path / "resumed")["model"]
    assert a.keys() == b.keys() and "teacher.head.last_layer.weight_v" in a and "loss.center" in a
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    assert (
        int(a["steps"]) == read_metrics(tmp_path / "straight")[-1]["step"]
    )  # one teacher update per optimizer step
    assert not np.array_equal(a["teacher.head.last_layer.weight_v"], a["student.head.last_layer.weight_v"])
    assert isinstance(SelfDistillation(config, tmp_path).build_model(), DINO)
