"""Image data layer: file readers, verified downloads, datasets, loader and augmentations.

Everything runs offline on small files written into ``tmp_path``; the real
downloads are stood in for by ``file://`` mirrors.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest

from whitebox import backend
from whitebox.data import (
    ChecksumError,
    Compose,
    DataLoader,
    ImageDataset,
    RandomCrop,
    RandomHorizontalFlip,
    available_datasets,
    cache_dir,
    fetch,
    load_dataset,
    read_batch,
    read_cifar10,
    read_idx,
    read_meta,
)
from whitebox.data import datasets as ds
from whitebox.data.cifar import ForbiddenGlobalError
from whitebox.data.download import RemoteFile
from whitebox.tensor import Tensor

# ---- helpers -----------------------------------------------------------------


def idx_bytes(arr: np.ndarray) -> bytes:
    """Encode an array in the IDX format (big-endian)."""
    code = {np.uint8: 0x08, np.int8: 0x09, np.int16: 0x0B, np.int32: 0x0C, np.float32: 0x0D, np.float64: 0x0E}
    header = bytes([0, 0, code[arr.dtype.type], arr.ndim]) + np.asarray(arr.shape, ">u4").tobytes()
    return header + arr.astype(arr.dtype.newbyteorder(">")).tobytes()


def write_idx(path: Path, arr: np.ndarray) -> Path:
    data = idx_bytes(arr)
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def rows(images: np.ndarray) -> set[bytes]:
    return {im.tobytes() for im in images}


def synthetic(n: int = 50, shape: tuple[int, int, int] = (3, 6, 5), seed: int = 0) -> ImageDataset:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, *shape), dtype=np.uint8)
    mean, std = ds.channel_stats(images)
    return ImageDataset(
        images, np.arange(n, dtype=np.int64) % 10, 10, "synthetic", list("abcdefghij"), mean, std, True
    )


def cifar_batch(rng: np.random.Generator, n: int) -> dict[bytes, object]:
    return {
        b"batch_label": b"testing batch",
        b"labels": rng.integers(0, 10, size=n).tolist(),
        b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
        b"filenames": [b"x.png"] * n,
    }


CIFAR_META = {b"label_names": [b"airplane", b"automobile", b"bird", b"cat", b"deer"] + [b"x"] * 5}


def cifar_archive(path: Path, seed: int = 0) -> dict[str, dict[bytes, object]]:
    """A tiny cifar-10-python.tar.gz (2 images per train batch, 3 test) laid out like the real one."""
    rng = np.random.default_rng(seed)
    batches = {f"data_batch_{i}": cifar_batch(rng, 2) for i in range(1, 6)} | {
        "test_batch": cifar_batch(rng, 3)
    }
    with tarfile.open(path, "w:gz") as tar:
        for name, obj in [*batches.items(), ("batches.meta", CIFAR_META)]:
            blob = pickle.dumps(obj, protocol=2)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return batches


# ---- IDX -----------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".gz", ""])
@pytest.mark.parametrize(
    "arr",
    [
        np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4),
        np.array([1, -2, 70000], dtype=np.int32),
        np.linspace(-1, 1, 6, dtype=np.float32).reshape(3, 2),
    ],
)
def test_read_idx_roundtrip(tmp_path: Path, suffix: str, arr: np.ndarray) -> None:
    path = write_idx(tmp_path / f"a-idx{suffix}", arr)
    for source in (path, str(path), path.read_bytes()):
        out = read_idx(source)
        assert out.shape == arr.shape and out.dtype == arr.dtype and out.dtype.isnative
        np.testing.assert_array_equal(out, arr)
        assert out.flags.writeable


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (idx_bytes(np.zeros((4, 5), np.uint8))[:-3], "truncated"),
        (idx_bytes(np.zeros((4, 5), np.uint8)) + b"\0", "trailing"),
        (b"\x01\x00\x08\x01" + bytes(8), "not an IDX file"),
        (b"\x00\x00\x07\x01" + bytes(8), "type code"),
        (b"\x00\x00\x08\x03\x00\x00", "header"),
        (b"", "not an IDX file"),
    ],
)
def test_read_idx_rejects_bad_files(tmp_path: Path, raw: bytes, message: str) -> None:
    path = tmp_path / "bad-idx1-ubyte"
    path.write_bytes(raw)
    with pytest.raises(ValueError, match=message) as err:
        read_idx(path)
    assert str(path) in str(err.value)


def test_read_idx_rejects_truncated_gzip(tmp_path: Path) -> None:
    path = tmp_path / "labels.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.arange(100, dtype=np.uint8)))[:-10])
    with pytest.raises(ValueError, match="gzip") as err:
        read_idx(path)
    assert "labels.gz" in str(err.value)


# ---- CIFAR-10 python batches ---------------------------------------------------


@pytest.mark.parametrize("protocol", [2, 4])
def test_read_cifar_batch_and_meta(tmp_path: Path, protocol: int) -> None:
    batch = cifar_batch(np.random.default_rng(1), 4)
    (tmp_path / "data_batch_1").write_bytes(pickle.dumps(batch, protocol=protocol))
    (tmp_path / "batches.meta").write_bytes(pickle.dumps(CIFAR_META, protocol=protocol))
    images, labels = read_batch(tmp_path / "data_batch_1")
    assert images.shape == (4, 3, 32, 32) and images.dtype == np.uint8
    assert labels.dtype == np.int64 and labels.tolist() == batch[b"labels"]
    data = batch[b"data"]
    # rows are channel-major: 1024 red values, then green, then blue
    np.testing.assert_array_equal(images[2, 1], data[2, 1024:2048].reshape(32, 32))
    assert read_meta(tmp_path / "batches.meta")[:3] == ["airplane", "automobile", "bird"]


class _Exploit:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, ("echo pwned",)


def test_cifar_pickle_with_foreign_global_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({b"data": _Exploit(), b"labels": [0]}, protocol=2))
    with pytest.raises(ForbiddenGlobalError, match="system") as err:
        read_batch(path)
    assert str(path) in str(err.value)


def test_cifar_batch_with_wrong_layout_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}))
    with pytest.raises(ValueError, match="3072"):
        read_batch(path)
    path.write_bytes(pickle.dumps({b"data": np.zeros((2, 3072), np.uint8)})[:-5])
    with pytest.raises(ValueError, match="truncated"):
        read_batch(path)


def test_read_cifar10_archive(tmp_path: Path) -> None:
    archive = tmp_path / "cifar-10-python.tar.gz"
    batches = cifar_archive(archive)
    images, labels, names = read_cifar10(archive, "train")
    assert images.shape == (10, 3, 32, 32) and labels.shape == (10,) and len(names) == 10
    assert labels[8:].tolist() == batches["data_batch_5"][b"labels"]
    images, labels, _ = read_cifar10(archive, "test")
    np.testing.assert_array_equal(images.reshape(3, -1), batches["test_batch"][b"data"])


def test_load_cifar10_verifies_the_archive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = tmp_path / "cifar10" / "cifar-10-python.tar.gz"
    archive.parent.mkdir()
    cifar_archive(archive)
    with pytest.raises(ChecksumError, match=ds.CIFAR10_ARCHIVE.sha256) as err:
        load_dataset("cifar10", root=str(tmp_path))
    assert str(archive) in str(err.value) and "download cifar10" in str(err.value)
    monkeypatch.setattr(ds, "CIFAR10_ARCHIVE", RemoteFile(archive.name, (), sha256=sha256_of(archive)))
    test = load_dataset("cifar10", "test", root=str(tmp_path))
    assert test.image_shape == (3, 32, 32) and len(test) == 3 and test.flip_ok
    assert len(test.mean) == len(test.std) == 3 and test.class_names[0] == "airplane"


# ---- downloads -----------------------------------------------------------------


def test_cache_dir_follows_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WHITEBOX_DATA", str(tmp_path / "data"))
    assert cache_dir() == tmp_path / "data"
    monkeypatch.delenv("WHITEBOX_DATA")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cache_dir() == tmp_path / ".cache" / "whitebox"


def test_fetch_verifies_and_writes_atomically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = tmp_path / "remote.bin"
    source.write_bytes(os.urandom(3000))
    url, good = source.as_uri(), sha256_of(source)
    dest = tmp_path / "cache" / "file.bin"

    with pytest.raises(ChecksumError, match="0" * 64) as err:
        fetch(url, dest, sha256="0" * 64)
    assert str(err.value).count(good) == 1 and url in str(err.value) and str(dest) in str(err.value)
    assert not dest.parent.exists() or list(dest.parent.iterdir()) == []

    assert fetch(url, dest, sha256=good) == dest
    assert dest.read_bytes() == source.read_bytes()
    assert fetch(url, dest, md5=hashlib.md5(source.read_bytes()).hexdigest()) == dest

    def offline(*args: object, **kwargs: object) -> None:
        raise AssertionError("a verified file must not be downloaded again")

    monkeypatch.setattr("urllib.request.urlopen", offline)
    assert fetch(url, dest, sha256=good) == dest
    with pytest.raises(ValueError, match="at least one"):
        fetch(url, dest)


def test_mnist_download_then_verified_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(0)
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    files = {}
    for prefix, n in [("train", 12), ("t10k", 4)]:
        write_idx(
            mirror / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        )
        write_idx(mirror / f"{prefix}-labels-idx1-ubyte.gz", rng.integers(0, 10, n, dtype=np.uint8))
    bogus = tmp_path / "bogus.gz"
    bogus.write_bytes(b"not mnist")
    for path in mirror.iterdir():
        # the first mirror is down, the second serves other bytes, the third is good
        urls = ((tmp_path / "down" / path.name).as_uri(), bogus.as_uri(), path.as_uri())
        files[path.name] = RemoteFile(path.name, urls, sha256=sha256_of(path))
    monkeypatch.setattr(ds, "MNIST_FILES", files)
    root = tmp_path / "cache"

    with pytest.raises(FileNotFoundError, match="download mnist") as err:
        load_dataset("mnist", "test", root=str(root))
    assert files["t10k-images-idx3-ubyte.gz"].sha256 in str(err.value)

    train = load_dataset("mnist", "train", root=str(root), download=True)
    assert train.images.shape == (12, 1, 28, 28) and train.labels.dtype == np.int64
    assert not train.flip_ok and train.num_classes == 10
    assert load_dataset("mnist", "test", root=str(root), download=True).images.shape == (4, 1, 28, 28)
    test = load_dataset("mnist", "test", root=str(root))
    assert test.mean == train.mean

    cached = root / "mnist" / "t10k-labels-idx1-ubyte.gz"
    cached.write_bytes(cached.read_bytes()[:-1])
    with pytest.raises(ChecksumError, match="download mnist") as err:
        load_dataset("mnist", "test", root=str(root))
    assert str(cached) in str(err.value)


def test_fashion_mnist_prefers_system_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    system = tmp_path / "usr-share"
    system.mkdir()
    monkeypatch.setattr(ds, "FASHION_SYSTEM_DIR", system)
    with pytest.raises(FileNotFoundError, match=ds.FASHION_FILES["t10k-images-idx3-ubyte.gz"].md5):
        load_dataset("fashion-mnist", "test", root=str(tmp_path / "cache"))
    for prefix, n in [("train", 6), ("t10k", 3)]:
        write_idx(system / f"{prefix}-images-idx3-ubyte.gz", np.full((n, 28, 28), 7, np.uint8))
        write_idx(system / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n, dtype=np.uint8))
    test = load_dataset("fashion-mnist", "test", root=str(tmp_path / "cache"))
    assert test.images.shape == (3, 1, 28, 28) and test.class_names[-1] == "Ankle boot"
    assert test.mean == pytest.approx((7 / 255,)) and not test.flip_ok


@pytest.mark.skipif(
    not (ds.FASHION_SYSTEM_DIR / "t10k-images-idx3-ubyte.gz").is_file(),
    reason="Debian package dataset-fashion-mnist is not installed",
)
def test_fashion_mnist_from_debian_package() -> None:
    test = load_dataset("fashion-mnist", "test")
    assert test.images.shape == (10000, 1, 28, 28)
    np.testing.assert_array_equal(np.bincount(test.labels), np.full(10, 1000))


# ---- bundled datasets ----------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "shape", "sizes"),
    [("digits", (1, 8, 8), (1438, 359)), ("mnist5k", (1, 28, 28), (4000, 1000))],
)
def test_bundled_datasets(name: str, shape: tuple[int, ...], sizes: tuple[int, int]) -> None:
    train, test = load_dataset(name, "train"), load_dataset(name, "test")
    assert (len(train), len(test)) == sizes
    for d in (train, test):
        assert d.image_shape == shape and d.images.dtype == np.uint8 and d.labels.dtype == np.int64
        assert d.num_classes == 10 and d.class_names == [str(i) for i in range(10)] and not d.flip_ok
        assert d.images.max() == 255 and set(np.unique(d.labels)) == set(range(10))
    assert not rows(train.images) & rows(test.images)  # disjoint (the images are all distinct)
    assert test.mean == train.mean and 0 < train.mean[0] < train.std[0] < 0.5
    again = load_dataset(name, "test")
    np.testing.assert_array_equal(again.images, test.images)
    np.testing.assert_array_equal(again.labels, test.labels)
    if name == "mnist5k":  # exactly stratified: 100 test images per class
        np.testing.assert_array_equal(np.bincount(test.labels), np.full(10, 100))


def test_stratified_split_partitions() -> None:
    labels = np.repeat(np.arange(4), [10, 20, 30, 40])
    train, test = ds.stratified_split(labels, 0.2, seed=3)
    assert sorted(np.concatenate([train, test]).tolist()) == list(range(100))
    np.testing.assert_array_equal(np.bincount(labels[test]), [2, 4, 6, 8])
    np.testing.assert_array_equal(ds.stratified_split(labels, 0.2, seed=3)[1], test)


def test_channel_stats_match_numpy() -> None:
    images = np.random.default_rng(0).integers(0, 256, size=(20, 3, 4, 4), dtype=np.uint8)
    mean, std = ds.channel_stats(images)
    np.testing.assert_allclose(mean, (images / 255).mean(axis=(0, 2, 3)), rtol=1e-12)
    np.testing.assert_allclose(std, (images / 255).std(axis=(0, 2, 3)), rtol=1e-12)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="available: cifar10, digits, fashion-mnist, mnist, mnist5k"):
        load_dataset("imagenet")
    with pytest.raises(ValueError, match="unknown split 'val'"):
        load_dataset("digits", "val")
    with pytest.raises(ValueError, match=r"^batch_size must be >= 1, got 0$"):
        DataLoader(synthetic(), batch_size=0)
    assert available_datasets() == [
        "cifar10",
        "digits",
        "fashion-mnist",
        "mnist",
        "mnist5k",
        "scenes-fashion",
        "scenes-mnist",
    ]


# ---- loader --------------------------------------------------------------------


def batches(loader: DataLoader) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(backend.to_numpy(x.data), backend.to_numpy(y)) for x, y in loader]


def test_loader_is_a_function_of_seed_and_epoch() -> None:
    data = synthetic()
    aug = Compose([RandomCrop((6, 5), padding=1), RandomHorizontalFlip()])
    a, b = DataLoader(data, 8, seed=5, augment=aug), DataLoader(data, 8, seed=5, augment=aug)
    a.set_epoch(3)
    list(b)  # what b did before must not matter
    b.set_epoch(3)
    for (xa, ya), (xb, yb) in zip(batches(a), batches(b), strict=True):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    b.set_epoch(4)
    assert not np.array_equal(batches(a)[0][1], batches(b)[0][1])
    c = DataLoader(data, 8, seed=6)
    c.set_epoch(3)
    assert not np.array_equal(batches(a)[0][1], batches(c)[0][1])


@pytest.mark.parametrize(("drop_last", "n_batches", "seen"), [(False, 7, 50), (True, 6, 48)])
def test_loader_covers_each_sample_once(drop_last: bool, n_batches: int, seen: int) -> None:
    data = synthetic()
    loader = DataLoader(data, 8, drop_last=drop_last)
    out = batches(loader)
    assert len(loader) == len(out) == n_batches
    labels = np.concatenate([y for _, y in out])
    assert len(labels) == seen and all(len(y) == 8 for _, y in out[:6])
    images = np.concatenate([x for x, _ in out])
    scale = np.asarray(data.std, np.float32)[:, None, None] * 255
    raw = np.rint(images * scale + np.asarray(data.mean, np.float32)[:, None, None] * 255)
    assert rows(raw.astype(np.uint8)) <= rows(data.images)
    if not drop_last:
        assert rows(raw.astype(np.uint8)) == rows(data.images)


def test_loader_normalizes_on_device(device: str) -> None:
    data = synthetic(n=200)
    x, y = next(iter(DataLoader(data, 200, shuffle=False, device=device)))
    assert isinstance(x, Tensor) and x.dtype == np.float32 and x.shape == (200, 3, 6, 5)
    assert backend.device_of(x.data) == device and backend.device_of(y) == device and y.dtype == np.int64
    xs = backend.to_numpy(x.data)
    np.testing.assert_allclose(xs.mean(axis=(0, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(xs.std(axis=(0, 2, 3)), 1, atol=1e-4)
    np.testing.assert_array_equal(backend.to_numpy(y), data.labels)
    raw, _ = next(iter(DataLoader(data, 200, shuffle=False, normalize=False, device=device)))
    np.testing.assert_allclose(backend.to_numpy(raw.data), data.images / 255, rtol=1e-6)


# ---- augmentations -------------------------------------------------------------


def test_random_crop() -> None:
    rng = np.random.default_rng(0)
    batch = rng.integers(1, 256, size=(16, 2, 7, 9), dtype=np.uint8)
    np.testing.assert_array_equal(RandomCrop((7, 9), padding=0)(batch, rng), batch)
    out = RandomCrop((7, 9), padding=3)(batch, np.random.default_rng(1))
    assert out.shape == batch.shape and out.dtype == np.uint8
    padded = np.pad(batch, ((0, 0), (0, 0), (3, 3), (3, 3)))
    for i in range(len(batch)):  # each output is some window of its own padded image
        windows = np.lib.stride_tricks.sliding_window_view(padded[i], (2, 7, 9))[0]
        assert (windows == out[i]).all(axis=(-3, -2, -1)).any()
    assert (out == 0).any()  # some offsets reach into the zero padding
    assert RandomCrop(4, padding=1)(batch.astype(np.float32), rng).shape == (16, 2, 4, 4)


def test_random_horizontal_flip() -> None:
    rng = np.random.default_rng(0)
    batch = rng.random((6, 3, 4, 5)).astype(np.float32)
    flip = RandomHorizontalFlip(p=1.0)
    np.testing.assert_array_equal(flip(batch, rng), batch[..., ::-1])
    np.testing.assert_array_equal(flip(flip(batch, rng), rng), batch)
    np.testing.assert_array_equal(RandomHorizontalFlip(p=0.0)(batch, rng), batch)
    half = RandomHorizontalFlip()(batch, np.random.default_rng(2))
    flipped = [np.array_equal(h, b[..., ::-1]) for h, b in zip(half, batch, strict=True)]
    kept = [np.array_equal(h, b) for h, b in zip(half, batch, strict=True)]
    assert all(f != k for f, k in zip(flipped, kept, strict=True)) and any(flipped) and any(kept)
    with pytest.raises(ValueError, match="p must be"):
        RandomHorizontalFlip(p=2)
