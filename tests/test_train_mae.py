"""The "mae" task through the command line: train, eval (masked MSE, k-NN, linear probe),
reconstruct, measure in mirrored order; its config; one-line errors for bad arguments."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from whitebox.cli import main
from whitebox.train import MAEConfig, from_dict, to_dict
from whitebox.train.autoencode import heldout_noise, load_run, mae_config
from whitebox.train.config import ConfigError

TINY = [
    "--task",
    "mae",
    "--data",
    "digits",
    "--patch-size",
    "4",
    "--dim",
    "16",
    "--depth",
    "2",
    "--heads",
    "2",
]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A 2-epoch CRATE-MAE and ViT-MAE on digits (8x8 images, 4 patches), trained through the CLI."""
    folder = tmp_path_factory.mktemp("runs")
    out = {}
    for model in ("crate", "vit"):
        out[model] = folder / model
        argv = ["train", *TINY, "--model", model, "--epochs", "2", "--batch-size", "128", "--lr", "3e-3"]
        assert main([*argv, "--quiet", "--out", str(out[model])]) == 0
    return out


def test_train_writes_a_mae_run(runs: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    config = json.loads((runs["crate"] / "config.json").read_text())
    assert config["task"] == "mae" and config["preset"] == "mae_crate_mnist_tiny"
    assert config["model_args"] == {
        "image_size": 8,
        "channels": 1,
        "patch_size": 4,
        "dim": 16,
        "depth": 2,
        "heads": 2,
    }
    assert config["mask_ratio"] == 0.75 and config["warmup_steps"] == 12  # one epoch: ceil(1438 / 128)
    records = [json.loads(line) for line in (runs["crate"] / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 2 and all(np.isfinite(r["eval_masked_mse"]) for r in records)
    assert records[1]["train_loss"] < records[0]["train_loss"]
    task, model = load_run(runs["vit"])
    assert task.config.model == "vit"
    assert type(model).__name__ == "ViTMAE" and model.mask_ratio == 0.75 and not model.training


def test_eval_scores_the_fixed_masks_and_probes(
    runs: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert main(["eval", str(runs["crate"])]) == 0
    out = capsys.readouterr().out
    last = json.loads((runs["crate"] / "metrics.jsonl").read_text().splitlines()[-1])
    # the held-out masks are fixed, so eval reproduces the loop's last held-out score
    assert f"masked_mse {last['eval_masked_mse']:.4f}" in out and "knn" not in out
    assert main(["eval", str(runs["crate"]), "--knn", "--linear-probe", "--pool", "mean"]) == 0
    out = capsys.readouterr().out
    scores = dict(item.split() for item in out.split(": ", 1)[1].split(", "))
    assert set(scores) == {"params", "masked_mse", "knn_mean", "linear_probe_mean"}
    # ten digit classes: frozen features of even a 2-epoch encoder beat chance by far
    assert float(scores["knn_mean"]) > 0.3 and float(scores["linear_probe_mean"]) > 0.3


def test_reconstruct_and_mirrored_measure(runs: dict[str, Path], tmp_path: Path) -> None:
    png = tmp_path / "side_by_side.png"
    assert main(["reconstruct", str(runs["crate"]), str(runs["vit"]), "--n", "3", "--out", str(png)]) == 0
    assert png.stat().st_size > 0
    assert main(["measure", str(runs["crate"]), "--n", "20", "--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "mirrored.json").read_text())
    assert [(r["layer"], r["decoder_layer"]) for r in rows] == [(0, 1), (1, 0)]
    assert (tmp_path / "mirrored.png").stat().st_size > 0


def test_bad_arguments_get_one_line(runs: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    cases = [
        (["train", *TINY, "--mask-ratio", "1", "--out", "x"], "mask_ratio must be < 1"),
        (["train", *TINY, "--model", "gpt", "--out", "x"], "--task mae takes --model crate | vit, not gpt"),
        (["train", *TINY, "--patch-size", "3", "--out", "x"], "not a multiple of the patch size 3"),
        (["train", *TINY, "--preset", "huge", "--out", "x"], "unknown mae_crate preset 'huge'"),
        (["measure", str(runs["vit"])], "mirrored measurements need a CRATE-MAE run"),
        (
            ["train", *TINY, "--label-smoothing", "0.1", "--out", "x"],
            "--label-smoothing apply only to image runs",
        ),
        (["train", "--mask-ratio", "0.5", "--out", "x"], "--mask-ratio apply only to mae runs"),
        (["train", *TINY, "--out", str(runs["crate"]), "--resume", "--mask-ratio", "0.5"], "mask_ratio"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err


def test_config_round_trip_and_fixed_noise() -> None:
    config = mae_config("vit", "mnist_tiny", "digits", {"patch_size": 4}, epochs=3, mask_ratio=0.5)
    assert isinstance(config, MAEConfig) and config.preset == "mae_vit_mnist_tiny"
    assert from_dict(to_dict(config)) == config
    with pytest.raises(ConfigError, match="unknown keys bogus"):
        from_dict({**to_dict(config), "bogus": 1})
    np.testing.assert_array_equal(heldout_noise(5, 4), heldout_noise(5, 4))


def test_resume_extends_a_mae_run(tmp_path: Path) -> None:
    run = tmp_path / "r"
    argv = ["train", *TINY, "--epochs", "1", "--batch-size", "256", "--quiet", "--out", str(run)]
    assert main(argv) == 0
    assert main(["train", "--out", str(run), "--resume", "--epochs", "2", "--quiet"]) == 0
    records = (run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in records] == [0, 1]
