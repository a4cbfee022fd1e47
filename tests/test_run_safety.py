"""Nothing silent, nothing lost: divergence, resume, history, ranges and one-line errors of runs."""

from __future__ import annotations

import builtins
import errno
import json
import math
import os
import pathlib
import shutil
import urllib.error
import warnings
from pathlib import Path

import numpy as np
import pytest

import whitebox.functional as F
from whitebox import backend
from whitebox.cli import main
from whitebox.nn import Linear, Module
from whitebox.optim import AdamW
from whitebox.tensor import Tensor
from whitebox.train import fit, load_checkpoint, read_metrics
from whitebox.train.run_files import DivergedError

IMAGE = ["train", "--data", "digits", "--patch-size", "4", "--dim", "16", "--depth", "1", "--heads", "2",
         "--batch-size", "256", "--quiet"]  # fmt: skip
LM = ["train", "--task", "lm", "--preset", "tiny", "--batch-size", "4", "--quiet"]
RUN_FILES = {"config.json", "metrics.jsonl", "checkpoint.npz", "tokenizer.json"}

X = np.random.default_rng(0).normal(size=(64, 4)).astype(np.float32)
Y = (X[:, 0] > 0).astype(np.int64)


def _one_line_error(capsys: pytest.CaptureFixture[str], *needles: str) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("error: ")
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def _toy_fit(run_dir: Path, loss_scale=lambda step: 1.0, epochs: int = 3, resume: bool = False, **kw):
    backend.manual_seed(0)
    model = Linear(4, 2)
    counter = {"step": 0}

    def loss_fn(m: Module, batch):
        x, y = batch
        loss = F.cross_entropy(m(Tensor(x)), y) * loss_scale(counter["step"])
        counter["step"] += 1
        return loss, {}

    def batches(epoch: int):
        return [(X[i : i + 16], Y[i : i + 16]) for i in range(0, 64, 16)]

    return fit(model, AdamW(model.parameters(), lr=1e-2), batches, loss_fn, epochs=epochs, run_dir=run_dir,
               config={"task": "toy"}, base_lr=1e-2, steps_per_epoch=4, resume=resume, progress=False,
               **kw)  # fmt: skip


def _strict_json_lines(path: Path) -> list[dict]:
    def refuse(name: str):
        raise AssertionError(f"{path} holds {name}, which is not JSON")

    return [json.loads(line, parse_constant=refuse) for line in path.read_text().splitlines()]


# ---------------------------------------------------------------- divergence


def test_a_non_finite_loss_stops_the_run_naming_step_and_last_loss(tmp_path: Path):
    _toy_fit(tmp_path, epochs=1)
    saved = (tmp_path / "checkpoint.npz").read_bytes()
    # epoch 2 (steps 4..7): step 6 gives NaN
    with pytest.raises(DivergedError) as info:
        _toy_fit(tmp_path, lambda s: math.nan if s == 2 else 1.0, epochs=3, resume=True)
    message = str(info.value)
    assert "step 7" in message and "last finite loss" in message and "lr" in message
    assert (tmp_path / "checkpoint.npz").read_bytes() == saved  # no NaN checkpoint saved
    assert [r["epoch"] for r in read_metrics(tmp_path)] == [0]


def test_non_finite_weights_are_never_saved(tmp_path: Path):
    class Poison:  # an optimizer that turns the weights to inf on its last step, with a finite loss
        def __init__(self, model):
            self.inner, self.model, self.lr = AdamW(model.parameters(), lr=1e-2), model, 0.0

        def zero_grad(self):
            self.inner.zero_grad()

        def step(self):
            self.inner.step()
            self.model.weight.data[...] = np.inf

        def state_dict(self):
            return self.inner.state_dict()

    backend.manual_seed(0)
    model = Linear(4, 2)
    with pytest.raises(DivergedError, match="not finite"):
        fit(model, Poison(model), lambda e: [(X, Y)],
            lambda m, b: (F.cross_entropy(m(Tensor(b[0])), b[1]), {}), epochs=1, run_dir=tmp_path,
            config={}, base_lr=1e-2, steps_per_epoch=1, progress=False, clip_norm=None)  # fmt: skip
    assert not (tmp_path / "checkpoint.npz").exists()


def test_metrics_are_strict_json(tmp_path: Path):
    _toy_fit(tmp_path, epochs=1, evaluate=lambda m: {"loss": math.inf, "x": math.nan})
    (record,) = _strict_json_lines(tmp_path / "metrics.jsonl")
    assert record["eval_loss"] is None and record["eval_x"] is None


def test_a_loss_growing_far_above_its_start_is_warned_about(tmp_path: Path, capsys):
    _toy_fit(tmp_path, lambda s: 1.0 + 10.0 * s, epochs=2)
    err = capsys.readouterr().err
    assert err.count("warning:") == 1 and "lower --lr" in err


def test_a_steady_run_is_not_warned_about(tmp_path: Path, capsys):
    _toy_fit(tmp_path, epochs=2)
    assert "warning" not in capsys.readouterr().err


def test_cli_divergence_is_one_line_and_exit_2(tmp_path: Path, capsys):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # NumPy's overflow warnings would be more lines on stderr
        assert main([*IMAGE, "--epochs", "2", "--lr", "1e30", "--out", str(tmp_path / "r")]) == 2
    _one_line_error(capsys, "diverged", "step", "--lr", "--clip-norm")
    assert not (tmp_path / "r" / "checkpoint.npz").exists()


def test_clip_norm_is_a_flag(tmp_path: Path):
    assert main([*IMAGE, "--epochs", "1", "--clip-norm", "0.5", "--out", str(tmp_path / "r")]) == 0
    assert json.loads((tmp_path / "r" / "config.json").read_text())["clip_norm"] == 0.5


# ---------------------------------------------------------------- resume


def test_resume_extends_epochs_and_says_so(tmp_path: Path, capsys):
    run = tmp_path / "r"
    assert main([*IMAGE, "--epochs", "1", "--out", str(run)]) == 0
    capsys.readouterr()
    assert main([*IMAGE, "--epochs", "2", "--out", str(run), "--resume"]) == 0
    out = capsys.readouterr().out
    assert "1 -> 2 epochs" in out
    assert [r["epoch"] for r in read_metrics(run)] == [0, 1]
    assert json.loads((run / "config.json").read_text())["epochs"] == 2
    assert load_checkpoint(run)["epoch"] == 1


def test_resume_may_lower_the_learning_rate(tmp_path: Path, capsys):
    run = tmp_path / "r"
    assert main([*IMAGE, "--epochs", "1", "--lr", "1e-3", "--out", str(run)]) == 0
    capsys.readouterr()
    assert main([*IMAGE, "--epochs", "2", "--lr", "1e-4", "--out", str(run), "--resume"]) == 0
    assert "lr 0.001 -> 0.0001" in capsys.readouterr().out
    assert json.loads((run / "config.json").read_text())["lr"] == 1e-4
    assert main([*IMAGE, "--epochs", "3", "--weight-decay", "0.5", "--out", str(run), "--resume"]) == 2
    _one_line_error(capsys, "weight_decay 0.05 -> 0.5")


def test_resume_extends_a_language_run_and_says_so(tmp_path: Path, capsys):
    run = tmp_path / "lm"
    assert main([*LM, "--steps", "2", "--out", str(run)]) == 0
    capsys.readouterr()
    assert main([*LM, "--steps", "4", "--out", str(run), "--resume"]) == 0
    assert "resuming" in capsys.readouterr().out
    assert load_checkpoint(run)["step"] == 4


def test_resume_refuses_flags_that_cannot_change(tmp_path: Path, capsys):
    run = tmp_path / "r"
    assert main([*IMAGE, "--epochs", "1", "--out", str(run)]) == 0
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    argv = [*IMAGE, "--epochs", "2", "--out", str(run), "--resume"]
    argv[argv.index("--dim") + 1] = "32"
    assert main([*argv, "--no-augment"]) == 2
    _one_line_error(capsys, "dim 16 -> 32", "augment")
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before


def test_resume_refuses_fewer_epochs_than_done(tmp_path: Path, capsys):
    run = tmp_path / "r"
    assert main([*IMAGE, "--epochs", "2", "--out", str(run)]) == 0
    assert main([*IMAGE, "--epochs", "1", "--out", str(run), "--resume"]) == 2
    _one_line_error(capsys, "2 epochs")


def test_the_tokenizer_travels_in_the_checkpoint(tmp_path: Path, capsys):
    run = tmp_path / "lm"
    assert main([*LM, "--steps", "2", "--out", str(run)]) == 0
    tokenizer = (run / "tokenizer.json").read_bytes()
    first = read_metrics(run)[0]
    (run / "tokenizer.json").unlink()
    assert main(["eval", str(run)]) == 0
    assert main([*LM, "--steps", "4", "--out", str(run), "--resume"]) == 0
    assert (run / "tokenizer.json").read_bytes() == tokenizer
    assert load_checkpoint(run)["step"] == 4 and read_metrics(run)[0] == first  # continued, not redone


def test_resume_without_any_tokenizer_refuses_and_overwrites_nothing(tmp_path: Path, capsys):
    run = tmp_path / "lm"
    assert main([*LM, "--steps", "2", "--out", str(run)]) == 0
    state = load_checkpoint(run)
    state.pop("tokenizer")  # a checkpoint written before the tokenizer travelled in it
    from whitebox.serialization import save

    save(run / "checkpoint.npz", state)
    (run / "tokenizer.json").unlink()
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    assert main([*LM, "--steps", "4", "--out", str(run), "--resume"]) == 2
    _one_line_error(capsys, "tokenizer")
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before


# ---------------------------------------------------------------- history


def test_history_lives_in_the_checkpoint_and_repairs_metrics(tmp_path: Path):
    _toy_fit(tmp_path, epochs=2)
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    # a kill between the checkpoint's rename and the metrics write, with a torn last line
    (tmp_path / "metrics.jsonl").write_text(lines[0] + "\n" + lines[1][:10])
    _toy_fit(tmp_path, epochs=3, resume=True)
    records = _strict_json_lines(tmp_path / "metrics.jsonl")
    assert [r["epoch"] for r in records] == [0, 1, 2]
    assert json.dumps(records[1]) == lines[1]


def test_a_torn_metrics_line_does_not_break_reading(tmp_path: Path):
    _toy_fit(tmp_path, epochs=2)
    text = (tmp_path / "metrics.jsonl").read_text()
    (tmp_path / "metrics.jsonl").write_text(text[:-15])
    assert [r["epoch"] for r in read_metrics(tmp_path)] == [0]


@pytest.fixture
def no_in_place_writes(monkeypatch: pytest.MonkeyPatch):
    """Fail any write that opens a run file itself (rather than a temporary file renamed over it)."""

    def guard(name: str, mode: str) -> None:
        if Path(name).name in RUN_FILES and any(c in mode for c in "wax+"):
            raise AssertionError(f"{name} written in place")

    real_open, real_write_text = builtins.open, pathlib.Path.write_text

    def open_(file, mode="r", *args, **kwargs):
        if isinstance(file, str | os.PathLike):
            guard(os.fspath(file), mode)
        return real_open(file, mode, *args, **kwargs)

    def write_text(self, *args, **kwargs):
        guard(str(self), "w")
        return real_write_text(self, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", open_)
    monkeypatch.setattr(pathlib.Path, "write_text", write_text)
    monkeypatch.setattr(pathlib.Path, "open", lambda self, mode="r", *a, **k: open_(self, mode, *a, **k))


def test_every_file_of_a_run_is_written_atomically(tmp_path: Path, no_in_place_writes):
    assert main([*LM, "--steps", "2", "--out", str(tmp_path / "lm")]) == 0
    assert main([*LM, "--steps", "4", "--out", str(tmp_path / "lm"), "--resume"]) == 0
    assert {p.name for p in (tmp_path / "lm").iterdir()} == RUN_FILES


def test_a_full_disk_is_one_line_and_leaves_no_temporary_file(tmp_path: Path, capsys, monkeypatch):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(np.lib.format, "write_array", full)
    run = tmp_path / "r"
    assert main([*IMAGE, "--epochs", "1", "--out", str(run)]) == 2
    _one_line_error(capsys, "No space left on device")
    assert not [p for p in run.iterdir() if "tmp" in p.name]


# ---------------------------------------------------------------- explicit values and ranges


def test_lr_zero_is_honoured(tmp_path: Path):
    assert main([*LM, "--steps", "1", "--lr", "0", "--out", str(tmp_path / "lm")]) == 0
    assert json.loads((tmp_path / "lm" / "config.json").read_text())["lr"] == 0.0


@pytest.mark.parametrize(
    ("argv", "needles"),
    [
        ([*LM, "--lr", "inf"], ["lr", "finite"]),
        ([*IMAGE, "--lr", "inf"], ["lr", "finite"]),
        ([*IMAGE, "--label-smoothing", "5"], ["label_smoothing", "[0, 1]"]),
        ([*IMAGE, "--lr", "1e-3", "--min-lr", "1e-2"], ["min_lr", "lr"]),
        ([*IMAGE, "--dropout", "5"], ["dropout", "[0, 1)"]),
        ([*LM, "--dropout", "1"], ["dropout", "[0, 1)"]),
        ([*LM, "--block-size", "100000000"], ["block_size", "4096"]),
        ([*LM, "--lr", "1e-3", "--min-lr", "1e-2"], ["min_lr"]),
        ([*IMAGE, "--steps", "3", "--tokenizer", "char", "--block-size", "8"],
         ["--steps", "--tokenizer", "--block-size", "image"]),
        ([*LM, "--label-smoothing", "0.1", "--patch-size", "4", "--no-augment"],
         ["--label-smoothing", "--patch-size", "--no-augment", "lm"]),
        ([*IMAGE, "--model", "vit", "--lam", "0.2"], ["--lam", "crate"]),
        ([*LM, "--label-smoothing", "0"], ["--label-smoothing"]),  # an explicit 0 is given too
    ],
)  # fmt: skip
def test_bad_settings_are_refused_before_any_file(argv, needles, tmp_path: Path, capsys):
    assert main([*argv, "--out", str(tmp_path / "x")]) == 2
    _one_line_error(capsys, *needles)
    assert not (tmp_path / "x").exists()


def test_demo_refuses_an_existing_run(tmp_path: Path, capsys):
    run = tmp_path / "lm"
    assert main([*LM, "--steps", "1", "--out", str(run)]) == 0
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    assert main(["demo", "--epochs", "1", "--out", str(run), "--figures", str(tmp_path), "--quiet"]) == 2
    _one_line_error(capsys, "already holds a run")
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before


# ---------------------------------------------------------------- one line, never a traceback


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("runs") / "lm"
    assert main([*LM, "--steps", "1", "--out", str(run)]) == 0
    return run


@pytest.fixture(scope="module")
def image_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("runs") / "image"
    assert main([*IMAGE, "--epochs", "1", "--out", str(run)]) == 0
    return run


def _copy(run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run, tmp_path / run.name))


def _damage(data: bytes, how: str) -> bytes:
    if how == "truncated":
        return data[: len(data) // 2]
    if how == "random":
        return np.random.default_rng(0).bytes(len(data))
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0x40
    return bytes(flipped)


@pytest.mark.parametrize("how", ["truncated", "random", "bitflip"])
@pytest.mark.parametrize("command", ["eval", "sample", "resume"])
def test_a_damaged_checkpoint_is_one_line(how, command, lm_run, tmp_path, capsys):
    run = _copy(lm_run, tmp_path)
    ckpt = run / "checkpoint.npz"
    ckpt.write_bytes(_damage(ckpt.read_bytes(), how))
    argv = (
        [*LM, "--steps", "2", "--out", str(run), "--resume"] if command == "resume" else [command, str(run)]
    )
    assert main(argv) == 2
    _one_line_error(capsys, "checkpoint.npz")


def test_a_huge_header_is_one_line(lm_run, tmp_path, capsys):
    import zipfile

    run = _copy(lm_run, tmp_path)
    ckpt = run / "checkpoint.npz"
    with zipfile.ZipFile(ckpt, "a") as zf, zf.open("model/zz.npy", "w") as f:
        header = {"descr": "<f4", "fortran_order": False, "shape": (2**42,)}
        np.lib.format.write_array_header_1_0(f, header)
    assert main(["eval", str(run)]) == 2
    _one_line_error(capsys, "checkpoint.npz")


@pytest.mark.parametrize("command", ["eval", "sample", "resume"])
def test_a_checkpoint_of_another_task_is_one_line(command, lm_run, image_run, tmp_path, capsys):
    run = _copy(lm_run, tmp_path)
    shutil.copy(image_run / "checkpoint.npz", run / "checkpoint.npz")
    argv = (
        [*LM, "--steps", "2", "--out", str(run), "--resume"] if command == "resume" else [command, str(run)]
    )
    assert main(argv) == 2
    _one_line_error(capsys, "checkpoint")


@pytest.mark.parametrize("command", ["eval", "resume"])
def test_a_checkpoint_of_another_architecture_is_one_line(command, image_run, tmp_path, capsys):
    vit = tmp_path / "vit"
    assert main([*IMAGE, "--model", "vit", "--epochs", "1", "--out", str(vit)]) == 0
    shutil.copy(image_run / "checkpoint.npz", vit / "checkpoint.npz")  # a CRATE checkpoint
    argv = (
        [*IMAGE, "--epochs", "2", "--out", str(vit), "--resume"]
        if command == "resume"
        else [command, str(vit)]
    )
    assert main(argv) == 2
    _one_line_error(capsys, "does not fit the model")


@pytest.mark.parametrize("damage", ["torn", "missing"])
@pytest.mark.parametrize("command", ["eval", "resume"])
def test_a_torn_or_missing_config_is_one_line(damage, command, image_run, tmp_path, capsys):
    run = _copy(image_run, tmp_path)
    config = run / "config.json"
    if damage == "torn":
        config.write_text(config.read_text()[:40])
    else:
        config.unlink()
    argv = (
        [*IMAGE, "--epochs", "2", "--out", str(run), "--resume"]
        if command == "resume"
        else [command, str(run)]
    )
    assert main(argv) == 2
    _one_line_error(capsys, "config.json")


def test_an_out_that_cannot_be_created_is_one_line(tmp_path: Path, capsys):
    (tmp_path / "file").write_text("")
    assert main([*IMAGE, "--epochs", "1", "--out", str(tmp_path / "file" / "run")]) == 2
    _one_line_error(capsys, "--out")


def test_a_prompt_outside_the_vocabulary_is_one_line(lm_run, capsys):
    assert main(["sample", str(lm_run), "--prompt", "日本語"]) == 2
    _one_line_error(capsys, "--prompt", "'日'")


# ---------------------------------------------------------------- sampling


def test_max_new_tokens_is_checked(lm_run, capsys):
    assert main(["sample", str(lm_run), "--max-new-tokens", "100000000"]) == 2
    _one_line_error(capsys, "--max-new-tokens", "10000")


def test_sampling_prints_tokens_as_they_come_and_keeps_them_on_interrupt(lm_run, capsys, monkeypatch):
    from whitebox.crate.token_model import TokenModel

    real = TokenModel.stream
    seen = []

    def stream(self, *args, **kwargs):
        for i, token in enumerate(real(self, *args, **kwargs)):
            if i == 3:
                seen.append(capsys.readouterr().out)  # what was printed before the interrupt
                raise KeyboardInterrupt
            yield token

    monkeypatch.setattr(TokenModel, "stream", stream)
    assert main(["sample", str(lm_run), "--prompt", "def ", "--max-new-tokens", "50"]) == 130
    captured = capsys.readouterr()
    assert seen[0].startswith("def ") and len(seen[0]) > len("def ")  # three tokens, before the end
    assert "--resume" not in captured.err and "interrupted" in captured.err


# ---------------------------------------------------------------- data


def test_tinyshakespeare_offline_names_the_download_command(tmp_path: Path, capsys, monkeypatch):
    from whitebox.data import download

    monkeypatch.setenv("WHITEBOX_DATA", str(tmp_path / "cache"))

    def offline(url):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(download, "_urlopen", offline)
    assert main([*LM, "--data", "tinyshakespeare", "--out", str(tmp_path / "x")]) == 2
    _one_line_error(capsys, "python -m whitebox download tinyshakespeare")
    assert not (tmp_path / "x").exists()
    assert main(["download", "tinyshakespeare"]) == 2
    _one_line_error(capsys, "tinyshakespeare", "no network")


def test_download_and_train_know_the_same_names(capsys):
    assert main(["download", "nope"]) == 2
    line = _one_line_error(capsys, "tinyshakespeare", "pydoc", "mnist5k")
    assert "unknown dataset" in line


def _fake_tinyshakespeare() -> bytes:
    from whitebox.data.text import TINYSHAKESPEARE_SIZE

    head = b"First Citizen:\nBefore we proceed any further, hear me speak.\n"
    return head + b"a" * (TINYSHAKESPEARE_SIZE - len(head))


def test_tinyshakespeare_is_verified_on_every_load(tmp_path: Path, monkeypatch):
    import io

    from whitebox.data.download import ChecksumError
    from whitebox.data.text import load_corpus, tinyshakespeare_text

    monkeypatch.setenv("WHITEBOX_DATA", str(tmp_path))
    served = _fake_tinyshakespeare()
    text = tinyshakespeare_text(opener=lambda url: io.BytesIO(served))
    assert text.startswith("First Citizen:") and load_corpus("tinyshakespeare") == text
    cached = tmp_path / "tinyshakespeare.txt"
    damaged = bytearray(cached.read_bytes())
    damaged[1000] = ord("b")  # same size, same first line: only a checksum sees it
    cached.write_bytes(bytes(damaged))
    with pytest.raises(ChecksumError, match="download tinyshakespeare"):
        load_corpus("tinyshakespeare")


def test_fashion_mnist_downloads_over_https():
    from whitebox.data.datasets import FASHION_FILES

    urls = [url for remote in FASHION_FILES.values() for url in remote.urls]
    assert urls and all(url.startswith("https://") for url in urls)
