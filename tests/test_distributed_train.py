"""Data-parallel training through the real loop and command line: ``mpiexec -n 2 ... train --distributed``.

The 2-rank runs train a tiny CRATE on a small .npz of images (no augmentation, no dropout, a
constant learning rate) and are compared with the same run on one process: the same weights
within float32 tolerance, the same evaluation, and a 2-rank checkpoint that resumes on 1 rank and
on 2; a language model on 2 ranks matches one too (its batches' rows and validation windows split
between the ranks). They skip, with the install hint, where mpi4py or mpiexec is missing. The
sharding of the data loader and the language batches is checked in one process.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from whitebox import backend, distributed
from whitebox.cli import main
from whitebox.data import DataLoader
from whitebox.data.datasets import ImageDataset
from whitebox.distributed import Communicator
from whitebox.serialization import load
from whitebox.train import classify, language, task
from whitebox.train.config import read_config

ROOT = Path(__file__).resolve().parents[1]
N_TRAIN, N_TEST, BATCH = 64, 21, 16  # 4 full global batches an epoch; an odd test split to shard
RUN = [
    *("--patch-size", "4", "--dim", "16", "--depth", "1", "--heads", "2", "--dropout", "0"),
    *("--batch-size", str(BATCH), "--lr", "0.02", "--min-lr", "0.02", "--warmup-steps", "0"),
    *("--no-augment", "--quiet"),
]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An .npz of 8x8 images of 4 classes whose brightness tells the class, with a test split."""
    rng = np.random.default_rng(0)
    labels = np.arange(N_TRAIN + N_TEST) % 4
    images = (labels[:, None, None] * 60 + rng.integers(0, 40, (len(labels), 8, 8))).astype(np.uint8)
    path = tmp_path_factory.mktemp("data") / "d.npz"
    np.savez(
        path,
        images=images[:N_TRAIN],
        labels=labels[:N_TRAIN],
        test_images=images[N_TRAIN:],
        test_labels=labels[N_TRAIN:],
    )
    return path


def _mpiexec() -> str:
    pytest.importorskip("mpi4py", reason=f"mpi4py is not installed: {distributed.INSTALL_HINT}")
    exe = shutil.which(
        "mpiexec", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    )
    if exe is None:
        pytest.skip(f"mpiexec is not on the PATH: {distributed.INSTALL_HINT}")
    return exe


def _env() -> dict[str, str]:
    return os.environ | {"PYTHONPATH": str(ROOT), "OPENBLAS_NUM_THREADS": "1"}


def _two_ranks(*args: str) -> str:
    """Run ``python -m whitebox ARGS --distributed`` on 2 ranks; its output (it must succeed)."""
    cmd = [
        _mpiexec(),
        "-n",
        "2",
        sys.executable,
        "-m",
        "whitebox",
        *args,
        "--distributed",
        "--rank-timeout",
        "30",
    ]
    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def _weights(run: Path) -> dict[str, np.ndarray]:
    return load(run / "checkpoint.npz")["model"]


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _assert_same_run(run: Path, reference: Path) -> None:
    """Weights within float32 tolerance, and the same steps and evaluation, as ``reference``."""
    mine, ref = _weights(run), _weights(reference)
    assert mine.keys() == ref.keys()
    for name in ref:
        np.testing.assert_allclose(mine[name], ref[name], rtol=1e-4, atol=1e-6, err_msg=name)
    for a, b in zip(_metrics(run), _metrics(reference), strict=True):
        assert a["step"] == b["step"] and a["eval_acc"] == b["eval_acc"]
        for key in ("train_loss", "train_acc", "eval_loss"):
            assert a[key] == pytest.approx(b[key], rel=1e-5), key


@pytest.fixture(scope="module")
def runs(data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One epoch on 2 ranks (batch 8 each); one and two epochs on 1 rank (batch 16)."""
    root = tmp_path_factory.mktemp("runs")
    out = {name: root / name for name in ("two", "one", "one_long")}
    _two_ranks("train", "--data", str(data), *RUN, "--epochs", "1", "--out", str(out["two"]))
    assert main(["train", "--data", str(data), *RUN, "--epochs", "1", "--out", str(out["one"])]) == 0
    assert main(["train", "--data", str(data), *RUN, "--epochs", "2", "--out", str(out["one_long"])]) == 0
    return out


def test_two_ranks_with_half_batches_give_the_weights_of_one_rank(runs: dict[str, Path]) -> None:
    config = read_config(runs["one"])
    backend.manual_seed(config.seed)
    start = task.make_task(config, runs["one"]).build_model().state_dict()
    assert all(not np.allclose(start[k], v, atol=1e-3) for k, v in _weights(runs["one"]).items()), (
        "no step taken"
    )
    _assert_same_run(runs["two"], runs["one"])
    assert sorted(p.name for p in runs["two"].iterdir()) == sorted(p.name for p in runs["one"].iterdir())


def _extended(run: Path, to: Path) -> Path:
    """A copy of ``run`` whose config asks for 2 epochs (the rate is constant: same schedule)."""
    shutil.copytree(run, to)
    config = json.loads((to / "config.json").read_text())
    (to / "config.json").write_text(json.dumps({**config, "epochs": 2}))
    return to


def test_a_two_rank_checkpoint_resumes_on_one_rank_and_on_two(runs: dict[str, Path], tmp_path: Path) -> None:
    on_one = _extended(runs["two"], tmp_path / "on_one")
    assert main(["train", "--out", str(on_one), "--resume", "--quiet"]) == 0
    _assert_same_run(on_one, runs["one_long"])
    on_two = _extended(runs["two"], tmp_path / "on_two")
    launcher = [sys.executable, "-m", "whitebox", "launch", "-n", "2", "train", "--out", str(on_two)]
    _mpiexec()
    done = subprocess.run(
        [*launcher, "--resume", "--quiet", "--rank-timeout", "30"],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "resuming" in done.stdout and done.stdout.count("resuming") == 1  # rank 0 alone prints
    _assert_same_run(on_two, runs["one_long"])


def test_a_killed_rank_ends_the_run_and_is_named(data: Path, tmp_path: Path) -> None:
    cmd = [_mpiexec(), "-n", "2", sys.executable, "-m", "whitebox", "train", "--data", str(data), *RUN]
    cmd += ["--epochs", "500", "--out", str(tmp_path / "run"), "--distributed", "--rank-timeout", "5"]
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    first = proc.stdout.readline()  # rank 0's "data parallel over mpi, 2 ranks: rank 0 pid ..."
    pid = re.search(r"rank 1 pid (\d+)", first)
    assert pid is not None, first
    os.kill(int(pid.group(1)), signal.SIGKILL)
    try:
        output = first + proc.communicate(timeout=60)[0]
    finally:
        proc.kill()
    assert proc.returncode != 0, output
    # the launcher reports the dead pid (which rank 0 printed as rank 1), or rank 0 names rank 1
    assert re.search(rf"PID {pid.group(1)}\b|rank\(s\) 1 never reached", output), output


def test_a_language_model_on_two_ranks_matches_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each rank keeps half the rows of every batch and scores half the validation windows."""
    monkeypatch.setenv("WHITEBOX_DATA", str(tmp_path / "cache"))  # the ranks inherit it through _env()
    text = tmp_path / "t.txt"
    text.write_text("It was the best of times, it was the worst of times; it was the age of wisdom. " * 30)
    lm = [
        "train",
        "--task",
        "lm",
        "--data",
        str(text),
        "--preset",
        "tiny",
        "--steps",
        "4",
        "--batch-size",
        "8",
    ]
    lm += ["--block-size", "16", "--lr", "0.01", "--warmup-steps", "0", "--quiet"]
    _two_ranks(*lm, "--out", str(tmp_path / "two"))
    assert main([*lm, "--out", str(tmp_path / "one")]) == 0
    for name, value in _weights(tmp_path / "one").items():
        np.testing.assert_allclose(
            _weights(tmp_path / "two")[name], value, rtol=1e-4, atol=1e-6, err_msg=name
        )
    one, two = _metrics(tmp_path / "one")[-1], _metrics(tmp_path / "two")[-1]
    for key in ("train_loss", "eval_loss", "eval_ppl", "eval_bpc"):
        assert two[key] == pytest.approx(one[key], rel=1e-5), key


# ---- sharding, in one process -------------------------------------------------------------------
class Rank(Communicator):
    """Rank ``rank`` of ``world_size`` for building a task's data in one process (no collectives)."""

    def __init__(self, rank: int, world_size: int) -> None:
        super().__init__(rank, world_size, "cpu")


def test_rank_loaders_split_each_global_batch_and_draw_their_own_crops() -> None:
    images = np.arange(40, dtype=np.uint8).repeat(16).reshape(40, 1, 4, 4)
    labels = np.arange(40)
    data = ImageDataset(images, labels, 40, "ids", [str(i) for i in labels], (0.0,), (1.0,), flip_ok=False)
    one = DataLoader(data, 8, seed=3, normalize=False)
    ranks = [DataLoader(data, 4, seed=3, normalize=False, rank=r, world_size=2) for r in range(2)]
    for epoch in (0, 1):
        for loader in (one, *ranks):
            loader.set_epoch(epoch)
        assert len(ranks[0]) == len(ranks[1]) == len(one) == 5
        for (_, full), *shards in zip(one, *ranks, strict=True):
            assert sorted(np.concatenate([labels for _, labels in shards])) == sorted(full)
    with pytest.raises(ValueError, match="rank must be in"):
        DataLoader(data, 4, rank=2, world_size=2)


def test_a_global_batch_the_ranks_do_not_divide_is_refused(data: Path, tmp_path: Path) -> None:
    config = classify.image_config("crate", "mnist_tiny", str(data), {"patch_size": 4}, batch_size=15)
    with pytest.raises(
        ValueError, match="global batch size 15 must be a positive multiple of the world size 2"
    ):
        task.make_task(config, tmp_path / "run", Rank(0, 2))


def test_language_ranks_take_the_rows_of_the_one_process_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WHITEBOX_DATA", str(tmp_path / "cache"))
    text = tmp_path / "t.txt"
    text.write_text("the quick brown fox jumps over the lazy dog; " * 40)
    config = language.language_config("mlm", "crate", "tiny", data=str(text), batch_size=6, block_size=8)
    one = task.make_task(config, tmp_path / "run")
    one.prepare(resume=False)
    ranks = [task.make_task(config, tmp_path / "run", Rank(r, 3)) for r in range(3)]
    for full, *shards in zip(one.batches(1), *(t.batches(1) for t in ranks), strict=True):
        for part in (0, 1):  # inputs (masked), targets
            rows = np.empty_like(full[part])
            for r, shard in enumerate(shards):
                rows[r::3] = shard[part]
            np.testing.assert_array_equal(rows, full[part])


def test_launch_runs_train_only(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["launch", "-n", "2", "eval", "runs/x"]) == 2
    assert "launch runs `train ...` on several processes" in capsys.readouterr().err
