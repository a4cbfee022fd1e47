"""Your own data: .npz image arrays, image folders and text files, written small into ``tmp_path``.

Each kind is read back and compared with what was written; each bad input of issue 19 raises one
ValueError that names the file and the problem, and leaves the folder as it was.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from whitebox.data.datasets import channel_stats, stratified_split
from whitebox.data.tokenizers import BPETokenizer, CharTokenizer
from whitebox.data.user_images import load_image_data
from whitebox.data.user_text import (
    cache_path,
    check_block_size,
    encode_corpus,
    read_corpus,
)


def listing(root: Path) -> set[tuple[str, int]]:
    """Every file under ``root`` with its size: what 'nothing written' compares."""
    return {(p.relative_to(root).as_posix(), p.stat().st_size) for p in root.rglob("*") if p.is_file()}


def raises_clean(root: Path, match: str, fn, *args, **kwargs) -> str:
    """Call ``fn``; it must raise ValueError matching ``match`` and leave ``root`` unchanged."""
    before = listing(root)
    with pytest.raises(ValueError, match=match) as info:
        fn(*args, **kwargs)
    assert listing(root) == before
    assert "\n" not in str(info.value)  # one line
    return str(info.value)


def make_arrays(n: int = 40, classes: int = 4, size: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (n, size, size) images whose brightness encodes the label, and the labels."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % classes
    images = (labels[:, None, None] * 50 + rng.integers(0, 40, (n, size, size))).astype(np.uint8)
    return images, labels


# ---------------------------------------------------------------- .npz


def test_npz_grayscale_held_out_split(tmp_path: Path) -> None:
    images, labels = make_arrays()
    np.savez(tmp_path / "d.npz", images=images, labels=labels)
    data = load_image_data(tmp_path / "d.npz", val_fraction=0.25, seed=3)
    train_idx, test_idx = stratified_split(labels, 0.25, 3)
    np.testing.assert_array_equal(data.train.images[:, 0], images[train_idx])
    np.testing.assert_array_equal(data.test.images[:, 0], images[test_idx])
    np.testing.assert_array_equal(data.test.labels, labels[test_idx])
    assert data.held_out and len(data.test) == 8 and data.train.num_classes == 4
    assert data.train.class_names == ["0", "1", "2", "3"]
    # normalization from the training split only, shared by both splits
    assert data.train.mean == channel_stats(images[train_idx][:, None])[0]
    assert data.test.mean == data.train.mean and data.test.std == data.train.std
    spec = data.spec()
    assert spec["sha256"] == hashlib.sha256((tmp_path / "d.npz").read_bytes()).hexdigest()
    assert spec["image_shape"] == [1, 8, 8] and spec["seed"] == 3 and spec["mean"] == list(data.train.mean)
    other = load_image_data(tmp_path / "d.npz", val_fraction=0.25, seed=4)
    assert not np.array_equal(other.test.images, data.test.images)


@pytest.mark.parametrize("layout", ["nhwc", "nchw"])
def test_npz_color_layouts_and_float(tmp_path: Path, layout: str) -> None:
    rng = np.random.default_rng(1)
    nchw = rng.random((12, 3, 6, 6))
    labels = np.arange(12) % 2
    stored = nchw.transpose(0, 2, 3, 1) if layout == "nhwc" else nchw
    np.savez(tmp_path / "c.npz", images=stored, labels=labels, test_images=stored[:4], test_labels=labels[:4])
    data = load_image_data(tmp_path / "c.npz")
    assert not data.held_out
    np.testing.assert_array_equal(data.train.images, np.rint(nchw * 255).astype(np.uint8))
    np.testing.assert_array_equal(data.test.labels, labels[:4])
    assert data.train.image_shape == (3, 6, 6) and len(data.train.mean) == 3


def test_npz_masks_follow_their_images_and_resize(tmp_path: Path) -> None:
    images, labels = make_arrays(n=20, classes=2)
    masks = (images > 60).astype(np.uint8) + 1  # ids 1 and 2, tied to each image's pixels
    names = np.array(["dark", "light"])
    np.savez(tmp_path / "m.npz", images=images, labels=labels, masks=masks, class_names=names)
    data = load_image_data(tmp_path / "m.npz", val_fraction=0.2)
    assert data.train.class_names == ["dark", "light"]
    np.testing.assert_array_equal(data.train_masks, (data.train.images[:, 0] > 60) + 1)
    np.testing.assert_array_equal(data.test_masks, (data.test.images[:, 0] > 60) + 1)
    big = load_image_data(tmp_path / "m.npz", image_size=16, val_fraction=0.2)
    assert big.train.images.shape[1:] == (1, 16, 16) and big.test_masks.shape[1:] == (16, 16)
    assert set(np.unique(big.train_masks)) <= {1, 2}  # nearest-neighbour: no blended ids
    np.testing.assert_array_equal(big.train_masks[:, ::2, ::2], data.train_masks)


def object_labels() -> np.ndarray:
    labels = np.empty(12, dtype=object)
    labels[:] = [f"c{i}" for i in range(12)]
    return labels


IMAGES, LABELS = make_arrays(n=12, classes=3)
ABC = np.array(["a", "b", "c"])
NPZ_BAD = {  # name: (arrays, load_image_data keywords, the message expected)
    "object": ({"labels": object_labels()}, {}, r"array 'labels' holds Python objects \(dtype=object\)"),
    "length": ({"labels": LABELS[:11]}, {}, r"labels has shape \(11,\); expected \(12,\)"),
    "range": (
        {"class_names": ABC[:2]},
        {},
        r"labels: 4 labels out of range 0\.\.1 \(the first: index 2, label 2\)",
    ),
    "negative": ({"labels": np.r_[LABELS[:-1], -1]}, {}, r"labels: 1 labels out of range 0\.\.2"),
    "from-one": ({"labels": LABELS + 1}, {}, r"labels use 0\.\.3 but no training image has label 0"),
    "test-range": (
        {"test_images": IMAGES[:2], "test_labels": np.array([0, 3]), "class_names": ABC},
        {},
        r"test_labels: 1 labels out of range 0\.\.2",
    ),
    "masks": (
        {"masks": np.zeros((12, 8, 7), np.uint8)},
        {},
        r"masks has shape \(12, 8, 7\); expected \(12, 8, 8\)",
    ),
    "single": ({"labels": np.zeros(12, int)}, {}, r"only one class"),
    "key": ({"x_train": IMAGES}, {}, r"unknown arrays x_train"),
    "no-labels": ({"labels": None}, {}, r"no array 'labels'"),
    "float": (
        {"images": IMAGES / 100},
        {},
        r"images is float64 with values in \[0, 1\.39\]; float images must",
    ),
    "layout": (
        {"images": np.zeros((12, 3, 5, 3), np.uint8)},
        {},
        r"images has shape \(12, 3, 5, 3\): cannot tell",
    ),
    "split": (
        {},
        {"val_fraction": 0.01},
        r"val_fraction 0\.01 of 12 images leaves 12 for training and 0 held out",
    ),
}


@pytest.mark.parametrize("case", NPZ_BAD)
def test_npz_bad_input(tmp_path: Path, case: str) -> None:
    arrays, kwargs, match = NPZ_BAD[case]
    arrays = {k: v for k, v in {"images": IMAGES, "labels": LABELS, **arrays}.items() if v is not None}
    np.savez(tmp_path / f"{case}.npz", **arrays)
    raises_clean(tmp_path, rf"{case}\.npz: {match}", load_image_data, tmp_path / f"{case}.npz", **kwargs)


def test_npz_unreadable_or_missing(tmp_path: Path) -> None:
    (tmp_path / "junk.npz").write_bytes(b"not a zip file at all")
    raises_clean(tmp_path, r"junk\.npz: not a readable \.npz file", load_image_data, tmp_path / "junk.npz")
    raises_clean(tmp_path, r"nope\.npz: no such file or folder", load_image_data, tmp_path / "nope.npz")


# ---------------------------------------------------------------- folders


def write_folder(root: Path, classes: dict[str, list[np.ndarray]], suffix: str = ".png") -> None:
    for name, arrays in classes.items():
        (root / name).mkdir(parents=True)
        for i, a in enumerate(arrays):
            Image.fromarray(a).save(root / name / f"img{i:02d}{suffix}")


def test_folder_gray_classes_sorted_and_pixels_exact(tmp_path: Path) -> None:
    images, _ = make_arrays(n=20, classes=1)
    write_folder(tmp_path / "f", {"zebra": list(images[:10]), "ant": list(images[10:])})
    (tmp_path / "f" / "ant" / "notes.txt").write_text("ignored: not an image")
    (tmp_path / "f" / ".hidden").mkdir()
    data = load_image_data(tmp_path / "f", val_fraction=0.2)
    assert data.train.class_names == ["ant", "zebra"]
    assert data.train.image_shape == (1, 8, 8) and len(data.train) == 16 and len(data.test) == 4
    # files in sorted order, class by class ("ant" = label 0 first), then the stratified split
    in_order, labels = np.concatenate([images[10:], images[:10]]), np.repeat([0, 1], 10)
    train_idx, test_idx = stratified_split(labels, 0.2, 0)
    np.testing.assert_array_equal(data.train.images[:, 0], in_order[train_idx])  # PNG is lossless
    np.testing.assert_array_equal(data.test.labels, labels[test_idx])
    again = load_image_data(tmp_path / "f", val_fraction=0.2)
    assert again.sha256 == data.sha256
    Image.fromarray(images[0] // 2).save(tmp_path / "f" / "zebra" / "img00.png")
    assert load_image_data(tmp_path / "f", val_fraction=0.2).sha256 != data.sha256


def test_folder_sixteen_bit_gray_is_scaled(tmp_path: Path) -> None:
    wide = [np.full((4, 4), v, dtype=np.uint16) for v in (0, 257 * 100, 65535)]
    write_folder(tmp_path / "f", {"a": wide, "b": wide})
    assert Image.open(tmp_path / "f" / "a" / "img01.png").mode.startswith("I")
    data = load_image_data(tmp_path / "f", val_fraction=0.34)
    both = np.concatenate([data.train.images, data.test.images])
    assert both.shape[1] == 1 and sorted(np.unique(both)) == [0, 100, 255]


def test_folder_mixed_modes_sizes_and_jpeg(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    gray = [rng.integers(0, 255, (10, 10), dtype=np.uint8) for _ in range(3)]
    rgb = [rng.integers(0, 255, (12, 12, 3), dtype=np.uint8) for _ in range(3)]
    write_folder(tmp_path / "f", {"cat": gray, "dog": rgb})
    Image.fromarray(rgb[0]).save(tmp_path / "f" / "dog" / "photo.JPG", format="JPEG")
    sizes = r"images of different sizes \(10x10 in cat/img00\.png, 12x12 in dog/img00\.png\)"
    msg = raises_clean(tmp_path, sizes, load_image_data, tmp_path / "f")
    assert "--image-size" in msg
    data = load_image_data(tmp_path / "f", image_size=8, val_fraction=0.3)
    assert data.train.image_shape == (3, 8, 8) and len(data.train) + len(data.test) == 7
    cats = data.train.images[data.train.labels == 0]  # grayscale, made RGB: R = G = B
    assert len(cats) and (cats == cats[:, :1]).all()
    dogs = data.train.images[data.train.labels == 1]
    assert not (dogs == dogs[:, :1]).all()
    assert data.spec()["image_size"] == 8


def test_folder_bad_inputs(tmp_path: Path) -> None:
    images, _ = make_arrays(n=4, classes=1)
    (tmp_path / "empty").mkdir()
    raises_clean(
        tmp_path, r"empty: no PNG or JPEG images in class folders", load_image_data, tmp_path / "empty"
    )
    write_folder(tmp_path / "single", {"only": list(images)})
    raises_clean(tmp_path, r"single: only one class \('only'\)", load_image_data, tmp_path / "single")
    write_folder(tmp_path / "hollow", {"a": list(images), "b": []})
    raises_clean(
        tmp_path, r"hollow: class folders without PNG or JPEG images: b", load_image_data, tmp_path / "hollow"
    )
    write_folder(tmp_path / "broken", {"a": list(images), "b": list(images)})
    (tmp_path / "broken" / "b" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n but then nothing")
    raises_clean(tmp_path, r"broken/b/bad\.png: not a readable image", load_image_data, tmp_path / "broken")


# ---------------------------------------------------------------- text


def test_text_file_and_folder(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_bytes("\ufeffhello wörld\n".encode())
    corpus = read_corpus(tmp_path / "a.txt")
    assert corpus.text == "hello wörld\n"
    assert corpus.sha256 == hashlib.sha256((tmp_path / "a.txt").read_bytes()).hexdigest()
    (tmp_path / "d" / "sub").mkdir(parents=True)
    (tmp_path / "d" / "b.txt").write_text("second")
    (tmp_path / "d" / "a.txt").write_text("first")
    (tmp_path / "d" / "sub" / "c.txt").write_text("third")
    (tmp_path / "d" / ".git.txt").write_text("hidden")
    (tmp_path / "d" / "x.md").write_text("not text input")
    folder = read_corpus(tmp_path / "d")
    assert folder.text == "first\n\nsecond\n\nthird"
    assert [p.name for p in folder.files] == ["a.txt", "b.txt", "c.txt"]


def test_text_bad_inputs(tmp_path: Path) -> None:
    (tmp_path / "empty.txt").write_bytes(b"")
    raises_clean(tmp_path, r"empty\.txt: the file is empty", read_corpus, tmp_path / "empty.txt")
    (tmp_path / "blank.txt").write_bytes(b" \n\n")
    raises_clean(tmp_path, r"blank\.txt: the file holds only whitespace", read_corpus, tmp_path / "blank.txt")
    (tmp_path / "bin.txt").write_bytes(b"PK\x03\x04\x00\x00abc")
    raises_clean(
        tmp_path, r"bin\.txt: looks binary \(a NUL byte at offset 4\)", read_corpus, tmp_path / "bin.txt"
    )
    (tmp_path / "latin.txt").write_bytes(b"first line\ncaf\xe9 au lait\n")
    raises_clean(
        tmp_path,
        r"latin\.txt: not UTF-8: byte\(s\) e9 at offset 14 \(line 2\)",
        read_corpus,
        tmp_path / "latin.txt",
    )
    (tmp_path / "none").mkdir()
    (tmp_path / "none" / "a.md").write_text("markdown")
    raises_clean(tmp_path, r"none: the folder holds no \.txt files", read_corpus, tmp_path / "none")
    raises_clean(tmp_path, r"missing\.txt: no such file or folder", read_corpus, tmp_path / "missing.txt")


def test_check_block_size_boundary() -> None:
    check_block_size("t.txt", 9, 9, 8)  # 8 inputs + 1 next token: just enough
    with pytest.raises(ValueError, match=r"t\.txt: text too short for block_size 8: .* the validation split"):
        check_block_size("t.txt", 100, 8, 8)
    with pytest.raises(ValueError, match=r"the training split needs at least 9"):
        check_block_size("t.txt", 8, 100, 8)


class CountingTokenizer:
    """A char tokenizer that counts its encode calls."""

    def __init__(self, inner: CharTokenizer) -> None:
        self.inner, self.calls = inner, 0
        self.vocab_size = inner.vocab_size

    def encode(self, text: str) -> np.ndarray:
        self.calls += 1
        return self.inner.encode(text)

    def to_dict(self) -> dict:
        return self.inner.to_dict()


def test_encode_corpus_splits_caches_and_checks(tmp_path: Path) -> None:
    text = "the quick brown fox jumps over the lazy dog. " * 20
    (tmp_path / "t.txt").write_text(text)
    corpus = read_corpus(tmp_path / "t.txt")
    tok = CountingTokenizer(CharTokenizer.train(text))
    cache = tmp_path / "cache"
    train, val = encode_corpus(corpus, tok, 0.1, block_size=16, cache_root=cache)
    cut = len(text) - round(0.1 * len(text))
    np.testing.assert_array_equal(train, tok.inner.encode(text[:cut]))
    np.testing.assert_array_equal(val, tok.inner.encode(text[cut:]))
    assert tok.calls == 2 and cache_path(corpus, tok, 0.1, cache).is_file()
    again = encode_corpus(corpus, tok, 0.1, block_size=16, cache_root=cache)
    assert tok.calls == 2  # read from the cache, not encoded again
    np.testing.assert_array_equal(again[0], train)
    assert again[0].dtype == np.int64
    # another tokenizer or split: another key
    bpe = BPETokenizer.train(text, 270)
    assert cache_path(corpus, bpe, 0.1, cache) != cache_path(corpus, tok, 0.1, cache)
    assert cache_path(corpus, tok, 0.2, cache) != cache_path(corpus, tok, 0.1, cache)
    np.testing.assert_array_equal(
        encode_corpus(corpus, bpe, 0.1, cache_root=cache)[0], bpe.encode(text[:cut])
    )
    # a damaged cache file is encoded again and replaced
    cache_path(corpus, tok, 0.1, cache).write_bytes(b"garbage")
    np.testing.assert_array_equal(encode_corpus(corpus, tok, 0.1, cache_root=cache)[1], val)
    assert tok.calls == 4
    # too short for the block size: an error, and no cache file
    raises_clean(
        tmp_path,
        r"t\.txt: text too short for block_size 200",
        encode_corpus,
        corpus,
        tok,
        0.1,
        block_size=200,
        cache_root=tmp_path / "other",
    )
    assert not (tmp_path / "other").exists()
