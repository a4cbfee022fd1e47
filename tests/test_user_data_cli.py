"""``--data PATH`` through the command line: a few training steps on each kind of file, the run
read back by eval / measure / attention / sample, and each bad input one line, exit 2, nothing written.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from whitebox.cli import main
from whitebox.data.user_images import load_image_data

TINY = ["--patch-size", "4", "--dim", "16", "--depth", "2", "--heads", "2", "--epochs", "1", "--quiet"]
LM = ["--preset", "tiny", "--steps", "2", "--batch-size", "4", "--block-size", "16", "--quiet"]
TEXT = "It was the best of times, it was the worst of times; it was the age of wisdom. " * 30


@pytest.fixture(autouse=True)
def data_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The data cache (encoded text ids) inside the test's folder."""
    monkeypatch.setenv("WHITEBOX_DATA", str(tmp_path / "cache"))
    return tmp_path / "cache"


def arrays(n: int = 60, classes: int = 3, size: int = 8) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    labels = np.arange(n) % classes
    return (labels[:, None, None] * 80 + rng.integers(0, 40, (n, size, size))).astype(np.uint8), labels


def image_folder(root: Path, sizes: tuple[int, ...] = (8,), per_class: int = 6) -> Path:
    rng = np.random.default_rng(1)
    for c in ("cats", "dogs"):
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            s = sizes[i % len(sizes)]
            Image.fromarray(rng.integers(0, 255, (s, s, 3), dtype=np.uint8)).save(root / c / f"{i}.png")
    return root


def test_npz_run_eval_measure_attention_resume(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    images, labels = arrays()
    np.savez(tmp_path / "d.npz", images=images, labels=labels, class_names=np.array(["lo", "mid", "hi"]))
    run = tmp_path / "run"
    assert (
        main(["train", "--data", str(tmp_path / "d.npz"), *TINY, "--val-fraction", "0.2", "--out", str(run)])
        == 0
    )
    config = json.loads((run / "config.json").read_text())
    assert config["data"] == str(tmp_path / "d.npz") and config["val_fraction"] == 0.2
    assert config["model_args"]["num_classes"] == 3 and config["model_args"]["image_size"] == 8
    record = json.loads((run / "data.json").read_text())
    expected = load_image_data(tmp_path / "d.npz", val_fraction=0.2)
    assert record["class_names"] == ["lo", "mid", "hi"] and record["mean"] == list(expected.train.mean)
    assert main(["eval", str(run)]) == 0
    assert "on 12 " in capsys.readouterr().out  # 20% of 60 held out
    assert main(["measure", str(run), "--n", "6"]) == 0
    assert main(["attention", str(run), "--n", "2", "--layers", "1"]) == 0
    assert (run / "attention_layer2.png").stat().st_size > 0
    assert main(["train", "--out", str(run), "--resume"]) == 0
    # the file changes: the trained run refuses to read it as its data
    np.savez(tmp_path / "d.npz", images=images[::-1], labels=labels[::-1])
    capsys.readouterr()
    assert main(["eval", str(run)]) == 2
    assert "has changed since" in capsys.readouterr().err


def test_image_folder_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = image_folder(tmp_path / "pets", sizes=(8, 12))
    run = tmp_path / "run"
    argv = ["train", "--data", str(root), *TINY, "--val-fraction", "0.34", "--out", str(run)]
    assert main(argv) == 2
    assert "images of different sizes" in capsys.readouterr().err and not run.exists()
    assert main([*argv, "--image-size", "8", "--model", "vit"]) == 0
    record = json.loads((run / "data.json").read_text())
    assert record["class_names"] == ["cats", "dogs"] and record["image_shape"] == [3, 8, 8]
    assert record["image_size"] == 8
    assert main(["eval", str(run)]) == 0
    assert "on 4 " in capsys.readouterr().out  # round(0.34 * 6) = 2 of each class


def test_text_file_run_uses_the_cache(tmp_path: Path, data_cache: Path, capsys) -> None:
    (tmp_path / "book.txt").write_text(TEXT)
    assert (
        main(
            ["train", "--task", "lm", "--data", str(tmp_path / "book.txt"), *LM, "--out", str(tmp_path / "a")]
        )
        == 0
    )
    cached = list((data_cache / "text-ids").iterdir())
    assert len(cached) == 1
    stamp = cached[0].stat().st_mtime_ns
    record = json.loads((tmp_path / "a" / "data.json").read_text())
    assert record["characters"] == len(TEXT) and record["files"] == ["book.txt"]
    assert (
        main(
            ["train", "--task", "lm", "--data", str(tmp_path / "book.txt"), *LM, "--out", str(tmp_path / "b")]
        )
        == 0
    )
    assert [p.stat().st_mtime_ns for p in (data_cache / "text-ids").iterdir()] == [
        stamp
    ]  # read, not rewritten
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "a")]) == 0
    assert "bpc" in capsys.readouterr().out
    assert main(["sample", str(tmp_path / "a"), "--prompt", "It was", "--max-new-tokens", "5"]) == 0
    assert capsys.readouterr().out.startswith("It was")


def test_text_folder_mlm_bpe_run(tmp_path: Path) -> None:
    (tmp_path / "texts").mkdir()
    for i in range(3):
        (tmp_path / "texts" / f"part{i}.txt").write_text(TEXT)
    run = tmp_path / "run"
    argv = ["train", "--task", "mlm", "--tokenizer", "bpe", "--data", str(tmp_path / "texts"), *LM]
    assert main([*argv, "--val-fraction", "0.2", "--out", str(run)]) == 0
    assert json.loads((run / "config.json").read_text())["val_fraction"] == 0.2
    tokenizer = json.loads((run / "tokenizer.json").read_text())
    assert tokenizer["type"] == "bpe" and tokenizer["merges"]
    assert json.loads((run / "data.json").read_text())["files"] == ["part0.txt", "part1.txt", "part2.txt"]


def _object_npz(path: Path) -> None:
    labels = np.empty(60, dtype=object)
    labels[:] = ["x"] * 60
    np.savez(path, images=arrays()[0], labels=labels)


def _write(case: str, path: Path) -> None:
    """Write the bad input ``case`` at ``path``."""
    images, labels = arrays()
    if case == "empty.txt":
        path.write_bytes(b"")
    elif case == "binary.txt":
        path.write_bytes(bytes(range(256)))
    elif case == "latin1.txt":
        path.write_bytes("naïve text, ".encode("latin-1") * 100)
    elif case == "short.txt":
        path.write_text("too short for sixteen")
    elif case == "objects.npz":
        _object_npz(path)
    elif case == "range.npz":
        np.savez(path, images=images, labels=labels, class_names=np.array(["a", "b"]))
    elif case == "length.npz":
        np.savez(path, images=images, labels=labels[:-1])
    elif case == "masks.npz":
        np.savez(path, images=images, labels=labels, masks=np.zeros((60, 4, 4), np.uint8))
    elif case == "noimages":
        (path / "a").mkdir(parents=True)
        (path / "a" / "readme.md").write_text("no images")
    elif case == "oneclass":
        image_folder(path)
        for p in (path / "dogs").iterdir():
            p.unlink()
        (path / "dogs").rmdir()
    elif case == "unreadable":
        image_folder(path)
        (path / "dogs" / "broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    elif case == "mixed":
        image_folder(path, sizes=(8, 10))


BAD = {  # case: (task, the message expected)
    "empty.txt": ("lm", "empty.txt: the file is empty"),
    "binary.txt": ("lm", "binary.txt: looks binary (a NUL byte at offset 0)"),
    "latin1.txt": ("lm", "latin1.txt: not UTF-8: byte(s) ef at offset 2 (line 1)"),
    "short.txt": ("lm", "short.txt: text too short for block_size 16"),
    "objects.npz": ("image", "objects.npz: array 'labels' holds Python objects"),
    "range.npz": ("image", "range.npz: labels: 20 labels out of range 0..1"),
    "length.npz": ("image", "length.npz: labels has shape (59,); expected (60,)"),
    "masks.npz": ("image", "masks.npz: masks has shape (60, 4, 4); expected (60, 8, 8)"),
    "noimages": ("image", "noimages: no PNG or JPEG images in class folders"),
    "oneclass": ("image", "oneclass: only one class ('cats')"),
    "unreadable": ("image", "dogs/broken.jpg: not a readable image"),
    "mixed": ("image", "mixed: images of different sizes"),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_data_one_line_exit_2_nothing_written(case, tmp_path, data_cache, capsys) -> None:
    task, needle = BAD[case]
    (tmp_path / "in").mkdir()
    _write(case, tmp_path / "in" / case)
    before = sorted(p for p in tmp_path.rglob("*"))
    argv = ["train", "--data", str(tmp_path / "in" / case), "--out", str(tmp_path / "run")]
    argv += ["--task", "lm", *LM] if task == "lm" else TINY
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: ") and "Traceback" not in err
    assert needle in err, err
    assert sorted(p for p in tmp_path.rglob("*")) == before  # no run directory, no cache file


def test_data_flags_refused_where_they_do_not_apply(tmp_path: Path, capsys) -> None:
    assert main(["train", "--data", "digits", "--image-size", "8", "--out", str(tmp_path / "r")]) == 2
    assert "--image-size: for your own images" in capsys.readouterr().err
    assert main(["train", "--task", "lm", "--image-size", "8", "--out", str(tmp_path / "r")]) == 2
    assert "--image-size is for image data" in capsys.readouterr().err
    assert main(["train", "--val-fraction", "1", "--out", str(tmp_path / "r")]) == 2
    assert "--val-fraction" in capsys.readouterr().err
    assert main(["train", "--data", str(tmp_path / "nothing.npz"), "--out", str(tmp_path / "r")]) == 2
    assert "no file or folder of that name exists" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
