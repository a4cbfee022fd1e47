"""The command line: an end-to-end smoke run on ``digits``, and one-line errors for bad arguments."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from whitebox import backend
from whitebox.cli import main

TINY = ["--data", "digits", "--patch-size", "4", "--dim", "16", "--depth", "2", "--heads", "2"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-epoch CRATE run on digits, trained through the CLI."""
    run = tmp_path_factory.mktemp("runs") / "demo"
    argv = [
        "train",
        "--model",
        "crate",
        "--preset",
        "mnist_tiny",
        *TINY,
        "--epochs",
        "2",
        "--batch-size",
        "128",
    ]
    assert main([*argv, "--lr", "3e-3", "--quiet", "--out", str(run)]) == 0
    return run


def test_train_eval_measure_attention(tiny_run: Path, capsys: pytest.CaptureFixture[str]):
    run = tiny_run
    config = json.loads((run / "config.json").read_text())
    assert config["model_args"]["image_size"] == 8 and config["model_args"]["channels"] == 1
    assert config["version"] == 2 and config["warmup_steps"] == 12  # one epoch: ceil(1438 / 128)
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2

    assert main(["eval", str(run)]) == 0
    assert "test accuracy" in capsys.readouterr().out

    assert main(["measure", str(run), "--n", "50"]) == 0
    out = capsys.readouterr().out
    rows = json.loads((run / "measure.json").read_text())
    assert [r["layer"] for r in rows] == [0, 1] and "R^c" in out
    assert all(0 <= r["sparsity"] <= 1 and r["compression"] > 0 for r in rows)
    assert (run / "measure.png").stat().st_size > 0

    assert main(["attention", str(run), "--n", "2", "--layers", "1"]) == 0
    assert (run / "attention_layer2.png").stat().st_size > 0

    # resuming the finished run: nothing to do, same checkpoint
    before = (run / "checkpoint.npz").read_bytes()
    assert main(["train", *TINY, "--out", str(run), "--resume", "--quiet"]) == 0
    assert (run / "checkpoint.npz").read_bytes() == before


def test_figures_reads_the_runs_it_finds(tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    assert main(["figures", "--runs", str(tiny_run.parent), "--figures", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "skipping fashion_crate" in out and "skipping fashion_vit" in out
    made = sorted(p.name for p in tmp_path.iterdir())
    assert made == [
        "demo_attention_layer1.png",
        "demo_attention_layer2.png",
        "demo_layerwise.png",
        "demo_training.png",
    ]


@pytest.mark.slow
def test_demo_one_epoch(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    """The `make demo` path, cut to one epoch."""
    assert (
        main(["demo", "--epochs", "1", "--out", str(tmp_path / "run"), "--figures", str(tmp_path), "--quiet"])
        == 0
    )
    out = capsys.readouterr().out
    assert "held-out accuracy" in out and "sparsity" in out
    assert (tmp_path / "demo_layerwise.png").exists() and (tmp_path / "demo_attention_layer4.png").exists()
    # `make demo` twice: the second run replaces the first demo (never a run made by `train`)
    assert (
        main(["demo", "--epochs", "1", "--out", str(tmp_path / "run"), "--figures", str(tmp_path), "--quiet"])
        == 0
    )
    assert "replacing the previous demo run" in capsys.readouterr().out


def test_language_runs_dispatch_to_the_text_task(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    run = tmp_path / "lm"
    argv = ["train", "--task", "lm", "--preset", "tiny", "--steps", "2", "--batch-size", "4", "--quiet"]
    assert main([*argv, "--out", str(run)]) == 0
    assert main(["eval", str(run)]) == 0
    assert "ppl" in capsys.readouterr().out
    assert main(["sample", str(run), "--prompt", "def ", "--max-new-tokens", "5"]) == 0
    assert capsys.readouterr().out.startswith("def ")
    assert main(["measure", str(run), "--n", "4"]) == 0
    assert [r["block"] for r in json.loads((run / "measure.json").read_text())] == ["crate", "crate"]
    assert main(["attention", str(run)]) == 2


def test_vit_run_measures_its_mlp(tmp_path: Path):
    run = tmp_path / "vit"
    assert main(["train", "--model", "vit", "--preset", "mnist_tiny", *TINY, "--epochs", "1", "--quiet",
                 "--warmup-steps", "5", "--out", str(run)]) == 0  # fmt: skip
    assert json.loads((run / "config.json").read_text())["warmup_steps"] == 5
    assert main(["measure", str(run), "--n", "20"]) == 0
    rows = json.loads((run / "measure.json").read_text())
    assert [r["block"] for r in rows] == ["vit", "vit"]


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["train", "--preset", "nope", "--data", "digits", "--out", "{tmp}/x"], "mnist_tiny"),
        (["train", "--data", "nope", "--out", "{tmp}/x"], "mnist5k"),
        (["train", "--data", "digits", "--batch-size", "0", "--out", "{tmp}/x"], "batch-size"),
        (["train", "--data", "digits", "--patch-size", "3", "--out", "{tmp}/x"], "not divisible"),
        (
            ["train", "--model", "gpt", "--data", "digits", "--out", "{tmp}/x"],
            "--model crate | vit | crate-alpha | tost",
        ),
        (["train", "--data", "digits", "--out", "{tmp}/x", "--resume"], "no checkpoint.npz"),
        (["train", "--task", "lm", "--data", "digits", "--out", "{tmp}/x"], "pydoc"),
        (["train", "--task", "lm", "--preset", "huge", "--out", "{tmp}/x"], "tiny"),
        (["train", "--data", "digits", "--seed", "-1", "--out", "{tmp}/x"], "--seed"),
        (
            ["train", "--data", "digits", "--warmup", "1", "--out", "{tmp}/x"],
            "unrecognized arguments: --warmup",
        ),
        (["train", "--data", "digits", "--lr", "nan", "--out", "{tmp}/x"], "--lr"),
        (["train", "--task", "mlm", "--model", "gpt", "--out", "{tmp}/x"], "--task mlm --model bert"),
        (["eval", "{tmp}/missing"], "does not exist"),
        pytest.param(
            ["train", "--data", "digits", "--device", "cuda", "--out", "{tmp}/x"],
            "cuda",
            marks=pytest.mark.skipif(backend.cuda_available(), reason="a GPU is present"),
        ),
        (["measure", "{tmp}/missing"], "does not exist"),
        (["attention", "{tmp}"], "not a run directory"),
        (["sample", "{tmp}/missing"], "does not exist"),
        (["download", "nope"], "cifar10"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_bad_arguments_print_one_line_and_exit_2(argv, needle, tmp_path, capsys):
    assert main([a.replace("{tmp}", str(tmp_path)) for a in argv]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert needle in lines[0] and "Traceback" not in captured.err
    assert not (tmp_path / "x").exists()


def test_python_dash_m_entry_point(tmp_path: Path):
    """`python -m whitebox` runs main and exits 2, without a traceback, on a bad preset."""
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "whitebox", "train", "--preset", "nope", "--out", str(tmp_path / "x")],
        capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
